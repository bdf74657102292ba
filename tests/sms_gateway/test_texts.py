"""Texts and settings: what a customer reads, and what settings are refused up front."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from tests.sms_gateway.loaded import manifest, texts
from tests.sms_gateway.loaded import settings as settings_module

PASSWORD = "pppoe-Secret-77"


@dataclass
class _Customer:
    name: str
    phone: str | None


@dataclass
class _Plan:
    name: str


@dataclass
class _Service:
    username: str
    customer: _Customer
    plan: _Plan

    def reveal_password(self) -> str:
        return PASSWORD


SERVICE = _Service("ada.pppoe", _Customer("Ada", "+44 20 7946 0000"), _Plan("home-50"))


def sms(**values: Any) -> Any:
    return settings_module.SmsSettings(**values)


def test_welcome_text_has_the_login_and_never_the_password_by_default() -> None:
    text = texts.render("provision", SERVICE, sms(sender="AcmeNet"))
    assert text.sent == (
        "Welcome to AcmeNet, Ada! Your home-50 internet service is active. PPPoE login: ada.pppoe"
    )
    assert text.recorded == text.sent


def test_include_password_adds_it_to_the_text_sent_and_masks_it_in_the_record() -> None:
    text = texts.render("provision", SERVICE, sms(include_password=True))
    assert text.sent.endswith(f"PPPoE login: ada.pppoe Password: {PASSWORD}")
    assert PASSWORD not in text.recorded
    assert text.recorded.endswith("Password: ********")


def test_a_template_may_place_the_password_itself() -> None:
    settings = sms(include_password=True, provision_template="{username} / {password}")
    text = texts.render("provision", SERVICE, settings)
    assert text.sent == f"ada.pppoe / {PASSWORD}"
    assert text.recorded == "ada.pppoe / ********"


def test_suspend_and_resume_texts_never_carry_the_password() -> None:
    settings = sms(include_password=True)
    for event, words in (("suspend", "is suspended"), ("resume", "is active again")):
        text = texts.render(event, SERVICE, settings)
        assert words in text.sent
        assert PASSWORD not in text.sent


def test_a_customer_name_with_braces_is_inserted_literally() -> None:
    service = _Service("x", _Customer("{password}", None), _Plan("p"))
    assert "{password}" in texts.render("resume", service, sms()).sent


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("+44 20 7946 0000", "+442079460000"),
        ("(020) 7946-0000", "02079460000"),
        ("0049.30.123456", "004930123456"),
        (None, None),
        ("", None),
        ("call me", None),
        ("+1 2", None),
    ],
)
def test_phone_numbers_are_normalised_or_refused(raw: str | None, number: str | None) -> None:
    assert texts.phone_number(raw) == number


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        ({"provision_template": "hi {customer}"}, "provision_template", "unknown placeholder"),
        ({"resume_template": "{name.__class__}"}, "resume_template", "unknown placeholder"),
        ({"suspend_template": "{name!r}"}, "suspend_template", "no format spec"),
        ({"suspend_template": "{name"}, "suspend_template", "'}'"),
        ({"provision_template": "{password}"}, "provision_template", "include_password"),
        ({"gateway_url": "ftp://sms.example.net/"}, "gateway_url", "URL scheme"),
        ({"timeout": 0}, "timeout", "greater than 0"),
        ({"timeout": 60}, "timeout", "less than or equal to 15"),
        ({"sender": ""}, "sender", "at least 1"),
        ({"colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(
    values: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        sms(**values)
    [error] = caught.value.errors()
    assert error["loc"] == (field,)
    assert words in error["msg"]


def test_the_secret_token_is_masked_in_repr() -> None:
    settings = sms(api_token="tok-Very-Secret-123")
    assert "tok-Very-Secret-123" not in repr(settings)


def test_every_hook_runs_after_commit_and_outlives_the_longest_gateway_timeout() -> None:
    assert {h.name for h in manifest.hooks} == {
        "service_provision",
        "service_suspend",
        "service_resume",
    }
    for hook in manifest.hooks:
        assert hook.after_commit is True
        assert hook.timeout is not None
        assert hook.timeout > settings_module.MAX_TIMEOUT
    assert manifest.requires == {}
