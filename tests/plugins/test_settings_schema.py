"""The host's stand-in for a sandboxed plugin's settings model, built from the schema
its worker reported: it refuses what the real model refuses where a schema can say so,
and a hostile schema is a clear refusal, never a crash."""

from __future__ import annotations

import enum
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, SecretStr, ValidationError

from isp.errors import PluginInvalid
from isp.plugins.settings_schema import model_from_schema, worker_values
from isp.plugins.settings_values import is_secret


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    depth: int = 1


class Real(BaseModel):
    greeting: str = "hello"
    code: str = Field("abc", pattern="^[a-z]+$", max_length=8)
    limit: int = Field(5, ge=1, le=10)
    ratio: float | None = None
    token: SecretStr | None = None
    tags: list[str] = Field(default_factory=list)
    colour: Colour = Colour.RED
    mode: Literal["fast", "safe"] = "safe"
    inner: Inner = Inner()
    needed: int


def stand_in() -> type[BaseModel]:
    return model_from_schema("tuned", Real.model_json_schema())


@pytest.mark.parametrize(
    "values",
    [
        {"needed": 1},
        {"needed": 1, "limit": 10, "code": "xyz", "ratio": 0.5, "tags": ["a"], "colour": "blue"},
        {"needed": 1, "mode": "fast", "inner": {"depth": 2}, "ratio": None, "token": "s"},
    ],
)
def test_what_the_real_model_accepts_the_stand_in_accepts(values: dict[str, Any]) -> None:
    Real.model_validate(values)
    stand_in().model_validate(values)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({}, "needed"),
        ({"needed": 1, "limit": 11}, "limit"),
        ({"needed": 1, "limit": "many"}, "limit"),
        ({"needed": 1, "code": "ABC"}, "code"),
        ({"needed": 1, "code": "abcdefghi"}, "code"),
        ({"needed": 1, "colour": "green"}, "colour"),
        ({"needed": 1, "mode": "slow"}, "mode"),
        ({"needed": 1, "tags": "a"}, "tags"),
    ],
)
def test_what_the_schema_can_say_the_stand_in_refuses_like_the_real_model(
    values: dict[str, Any], field: str
) -> None:
    for model in (Real, stand_in()):
        with pytest.raises(ValidationError) as refused:
            model.model_validate(values)
        assert refused.value.errors()[0]["loc"][0] == field


def test_the_stand_in_shows_the_plugins_schema_and_keeps_secrets_secret() -> None:
    model = stand_in()

    assert model.model_json_schema() == Real.model_json_schema()
    assert is_secret(model.model_fields["token"].annotation)
    assert model.model_validate({"needed": 1}).limit == 5  # the plugin's defaults


def test_a_worker_is_sent_the_values_set_and_secrets_only_when_granted() -> None:
    instance = stand_in().model_validate({"needed": 2, "token": "s3cret", "tags": ["a"]})

    assert worker_values(instance, secrets=False) == {"needed": 2, "tags": ["a"]}
    assert worker_values(instance, secrets=True) == {"needed": 2, "tags": ["a"], "token": "s3cret"}


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        (["not", "an", "object"], "not a JSON schema of an object"),
        ({"properties": []}, "not a JSON schema of an object"),
        ({"properties": {"_private": {}}}, "'_private' is not a valid field name"),
        ({"properties": {"class": {}}}, "'class' is not a valid field name"),
        ({"properties": {"a b": {}}}, "'a b' is not a valid field name"),
        ({"properties": {"x": {}}, "required": "x"}, "bad 'required'"),
        ({"properties": {f"f{i}": {} for i in range(501)}}, "over 500 fields"),
        ({"properties": {"x": {"type": "string", "pattern": "("}}}, "cannot be used"),
    ],
)
def test_a_hostile_schema_is_a_refusal_naming_the_plugin(schema: Any, why: str) -> None:
    with pytest.raises(PluginInvalid) as refused:
        model_from_schema("tuned", schema)

    assert why in refused.value.detail
    assert "'tuned'" in refused.value.detail


def test_a_schema_that_refers_to_itself_ends_in_any() -> None:
    schema = {"properties": {"x": {"$ref": "#/$defs/a"}}, "$defs": {"a": {"$ref": "#/$defs/a"}}}

    assert model_from_schema("tuned", schema).model_validate({"x": object()}).x is not None
