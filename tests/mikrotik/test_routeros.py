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


@pytest.mark.parametrize("wording", [False, True])
def test_upsert_adds_then_updates_in_one_statement_whatever_the_wording(wording: bool) -> None:
    state = RouterState(item_exists_wording=wording)
    for rate in ("1M/2M", "3M/4M"):
        upsert = routeros.Upsert("/ppp profile", 'p"; /system reboot', {"rate-limit": rate})
        assert "\n" not in upsert.text
        assert Interpreter(state).run(upsert.text).output == ""
    assert [(p.name, p.rate_limit) for p in state.profiles if not p.builtin] == [
        ('p"; /system reboot', "3M/4M")
    ]
    assert [w.split(" ", 3)[:3] for w in state.writes] == [
        ["/ppp", "profile", "add"],
        ["/ppp", "profile", "set"],
    ]
    assert state.reboots == 0
    assert upsert.label == "/ppp profile add/set"


def test_count_and_script_share_one_channel() -> None:
    state = RouterState()
    state.add_secret("alice")
    by_name = routeros.Find({"name": "alice"})
    script = routeros.Script(
        (routeros.Count("/ppp secret", by_name), routeros.Command("/ppp secret", "disable",
                                                                  target=by_name)),
        "/ppp secret disable",
    )
    assert Interpreter(state).run(script.text).output == "1\r\n"
    assert state.secret("alice").disabled
    assert script.label == "/ppp secret disable"


@pytest.mark.parametrize(
    ("output", "names"),
    [
        # MikroTik manual, File (v7 and v6 captures)
        (
            " 0 name=flash type=disk last-modified=2024-11-25 13:12:10 \r\n\r\n"
            " 1 name=flash/isp-1-x.backup type=backup size=24.1KiB last-modified=2024-11-25 "
            "13:14:28 \r\n   package-architecture=\"arm\" \r\n\r\n",
            ["flash", "flash/isp-1-x.backup"],
        ),
        (
            ' 1 name="sample.txt" type=".txt file" size=5 creation-time=oct/11/2010 '
            "12:15:38 contents=Hello\r\n",
            ["sample.txt"],
        ),
        (' 2 name="with \\"quote\\" \\C3\\A9" type="file"\r\n', ['with "quote" é']),
        ("", []),
    ],
)
def test_detail_names_reads_v6_and_v7_listings(output: str, names: list[str]) -> None:
    assert routeros.detail_names(output) == names


def test_find_with_a_regular_expression() -> None:
    find = routeros.Find(matching={"name": "isp-7-abc"})
    assert find.render() == '[find where name~"isp-7-abc"]'
    assert routeros.Find({"name": "a"}).render("/file") == '[/file find name="a"]'
    listing = routeros.Command("/file", "print", flags=("detail",), matching={"name": "x"})
    assert listing.text == '/file print detail where name~"x"'
