"""Quoting, command building and error detection (plugins/mikrotik/routeros.py)."""

from __future__ import annotations

import pytest

from tests.mikrotik.loaded import routeros
from tests.routeros import Interpreter, RouterState

NASTY = [
    "a;/system reboot",
    'x"; /system reboot; "',
    "x$[/system reboot]",
    "$[/system reboot]$",
    "[/system reboot]",
    "\\$[/system reboot]",
    "$var",
    "back\\slash\\",
    "line\n/system reboot",
    "cr\r\n/system reboot",
    "tab\there",
    "what?",
    "žluťoučký kůň",
    "sp ace",
    "a=b",
    "\x7f\x1b[31m",
    "}{)(",
]


@pytest.mark.parametrize("value", NASTY)
def test_quoted_value_stays_data_on_the_router(value: str) -> None:
    state = RouterState()
    command = routeros.Command(
        "/ppp secret",
        "add",
        {"name": value, "password": value, "comment": value, "service": "pppoe"},
    )
    assert "\n" not in command.text
    assert "\r" not in command.text
    assert command.text.isascii()
    assert Interpreter(state).run(command.text).output == ""
    assert state.executed == [command.text]  # one statement, nothing injected
    assert state.reboots == 0
    assert state.variables_read == []
    secret = state.secrets[0]
    assert (secret.name, secret.password, secret.comment) == (value, value, value)


@pytest.mark.parametrize("value", NASTY)
def test_find_by_a_nasty_name_selects_only_that_item(value: str) -> None:
    state = RouterState()
    state.add_secret(value, password="pw")
    state.add_secret("bystander", password="pw")
    command = routeros.Command("/ppp secret", "disable", target=routeros.Find({"name": value}))
    assert Interpreter(state).run(command.text).output == ""
    assert [s.disabled for s in state.secrets] == [True, False]
    assert state.reboots == 0


def test_quote_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        routeros.quote("a\x00b")


def test_menu_verb_and_argument_names_cannot_come_from_data() -> None:
    with pytest.raises(ValueError, match="menu"):
        routeros.Command("/ppp secret; /system", "add")
    with pytest.raises(ValueError, match="argument"):
        routeros.Command("/ppp secret", "add", {"name=x /system reboot": "v"})


def test_label_and_repr_never_show_values() -> None:
    command = routeros.Command(
        "/ppp secret", "add", {"name": "alice", "password": "hunter2", "comment": "c"}
    )
    assert command.label == "/ppp secret add"
    assert "hunter2" not in repr(command)
    assert "hunter2" in command.text
    assert routeros.Command("/", "export", flags=("show-sensitive",)).text == (
        "/export show-sensitive"
    )


@pytest.mark.parametrize(
    "text",
    [
        "failure: secret with the same name already exists",
        "failure: already have such entry",
        "bad command name frob (line 1 column 13)",
        "expected end of command (line 1 column 9)",
        "syntax error (line 1 column 22)",
        "input does not match any value of profile",
        "invalid value for argument remote-address",
        "no such item",
        "not enough permissions (9)",
    ],
)
def test_every_router_error_text_is_recognised(text: str) -> None:
    assert routeros.router_error(text + "\r\n") == text
    assert routeros.router_error("Columns: NAME\r\n" + text + "\r\n") == text


def test_ordinary_output_is_not_an_error() -> None:
    assert routeros.router_error("Configuration backup saved\r\n") is None
    assert routeros.router_error(" 0   name=alice service=pppoe\r\n") is None
    assert routeros.unexpected_output("") is None
    assert routeros.unexpected_output("\r\n") is None
    assert routeros.unexpected_output("something\r\n") == "something"
    assert routeros.unexpected_output("ok\r\n", allowed=("ok",)) is None


def test_already_exists_is_told_apart_from_other_failures() -> None:
    assert routeros.is_already_exists("failure: secret with the same name already exists")
    assert routeros.is_already_exists("failure: profile with the same name already exists")
    assert not routeros.is_already_exists("failure: already have such entry")
    assert not routeros.is_already_exists("not enough permissions (9)")
