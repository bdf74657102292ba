"""Core events as specifications: the README's table, hooks checked when their plugin
loads, named arguments passed to the hooks that take them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from isp.core.events import CORE_EVENTS
from isp.errors import PluginInvalid
from isp.plugins.discovery import describe
from isp.plugins.loader import detach, load
from isp.plugins.registry import PluginRegistry
from isp.plugins.specs import CORE_SPECS, SPECS_BY_NAME
from isp.testing import load_plugin
from tests.plugins.builders import plugin_files, write_plugin

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_event_table_is_the_spec_table() -> None:
    section = README.read_text().split("### Events", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(
        r"^\| `([a-z_]+)` \| `(\([^`]*\))` \| (`\([^`]*\)`|none) \|", section, re.MULTILINE
    )
    assert rows == [
        (
            spec.name,
            spec.signature,
            f"`{spec.after_commit_signature}`" if spec.after_commit_signature else "none",
        )
        for spec in CORE_SPECS
    ]


def test_every_event_the_core_emits_has_a_specification() -> None:
    assert set(CORE_EVENTS) <= set(SPECS_BY_NAME)


def test_new_events_pass_their_changes_by_name() -> None:
    assert SPECS_BY_NAME["customer_updated"].signature == "(customer, changes, db)"
    assert SPECS_BY_NAME["plan_updated"].signature == "(plan, changes, devices, db)"
    assert SPECS_BY_NAME["service_update"].signature == "(service, changes, db)"


def _load(tmp_path: Path, handlers: str, hooks: list[Any]) -> object:
    folder = write_plugin(tmp_path / "plugins", "gate", plugin_files("gate", handlers=handlers,
                                                                    hooks=hooks))  # fmt: skip
    try:
        return load(describe(folder), set(SPECS_BY_NAME))
    finally:
        detach("gate")


def test_hook_asking_for_an_argument_its_event_does_not_pass_fails_the_load(
    tmp_path: Path,
) -> None:
    handlers = (
        "from isp.plugins import registry\n\n"
        "@registry.hook('customer_created')\n"
        "async def welcome(customer, db, changes):\n    return None\n"
    )
    with pytest.raises(PluginInvalid) as caught:
        _load(tmp_path, handlers, ["customer_created"])

    error = caught.value
    assert error.detail == (
        "plugins/gate: hook handlers.welcome for customer_created: handlers.welcome takes "
        "argument 'changes', which customer_created does not pass; it passes customer "
        "(first, by position) and db by name"
    )
    assert (error.extra["plugin"], error.extra["hook"], error.extra["event"]) == (
        "gate", "handlers.welcome", "customer_created",
    )  # fmt: skip


def test_hook_taking_no_argument_at_all_fails_the_load(tmp_path: Path) -> None:
    handlers = (
        "from isp.plugins import registry\n\n"
        "@registry.hook('service_provision')\n"
        "def provision():\n    return None\n"
    )
    with pytest.raises(PluginInvalid, match="takes no argument for 'service'"):
        _load(tmp_path, handlers, ["service_provision"])


async def test_two_handlers_for_one_event_in_one_plugin_both_run(
    tmp_path: Path, plugin_registry: PluginRegistry
) -> None:
    handlers = (
        "from isp.plugins import registry\n\n"
        "@registry.hook('customer_updated')\n"
        "async def gate(customer, changes):\n    return ('gate', sorted(changes))\n\n"
        "@registry.hook('customer_updated')\n"
        "def audit(subject, **extra):\n    return ('audit', sorted(extra))\n"
    )
    folder = write_plugin(tmp_path / "plugins", "gate",
                          plugin_files("gate", handlers=handlers, hooks=["customer_updated"]))
    loaded = load_plugin(plugin_registry, folder)

    assert [e.function for e in loaded.entries] == ["handlers.gate", "handlers.audit"]
    results = await plugin_registry.emit(
        "customer_updated", "ada", changes={"email": ["a", "b"]}, db=None
    )
    assert sorted(r.value for r in results) == [("audit", ["changes", "db"]), ("gate", ["email"])]


AFTER_COMMIT = {"name": "customer_created", "after_commit": True}


def _handlers(decorator: str, event: str, params: str) -> str:
    return (
        "from isp.plugins import registry\n\n"
        f"@registry.{decorator}({event!r})\n"
        f"async def welcome({params}):\n    return None\n"
    )


def test_an_after_commit_hook_loads_apart_from_the_transaction_hooks(tmp_path: Path) -> None:
    handlers = _handlers("after_commit", "customer_created", "customer, delivery, db")
    handlers += _handlers("hook", "customer_created", "customer, db").replace(
        "from isp.plugins import registry\n\n", "\n\n"
    ).replace("welcome", "check")
    loaded: Any = _load(tmp_path, handlers, [AFTER_COMMIT, "customer_created"])
    kinds = {(entry.function, entry.after_commit) for entry in loaded.entries}
    assert kinds == {("handlers.welcome", True), ("handlers.check", False)}


@pytest.mark.parametrize(
    ("handlers", "hooks", "words"),
    [
        (
            _handlers("hook", "customer_created", "customer, db"),
            [AFTER_COMMIT],
            "add @registry.after_commit('customer_created')",
        ),
        (
            _handlers("after_commit", "customer_created", "customer, delivery"),
            ["customer_created"],
            'or set "after_commit": true for it in manifest.json',
        ),
        (
            _handlers("after_commit", "customer_created", "customer, delivery"),
            [],
            'add {"name": \'customer_created\', "after_commit": true} to "hooks"',
        ),
        (
            _handlers("after_commit", "customer_created", "customer, delivery, changes"),
            [AFTER_COMMIT],
            "takes argument 'changes', which customer_created does not pass",
        ),
        (
            _handlers("after_commit", "device_backup", "device, delivery"),
            [{"name": "device_backup", "after_commit": True}],
            "device_backup has no after-commit delivery",
        ),
    ],
)
def test_after_commit_hooks_are_checked_against_manifest_and_event(
    tmp_path: Path, handlers: str, hooks: list[Any], words: str
) -> None:
    with pytest.raises(PluginInvalid) as caught:
        _load(tmp_path, handlers, hooks)
    assert words in caught.value.detail


def test_a_registry_keeps_after_commit_hooks_out_of_emit() -> None:
    registry = PluginRegistry(adhoc_owner="tests")
    registry.declare_events(SPECS_BY_NAME)

    async def later(customer: object, delivery: object) -> None:
        return None

    registry.after_commit("customer_created")(later)
    assert registry.hooks_for("customer_created") == ()
    [entry] = registry.after_commit_hooks("customer_created")
    assert registry.after_commit_entry("customer_created", "tests", entry.function) is entry
    registry.set_enabled("tests", False)
    assert registry.after_commit_hooks("customer_created") == ()
