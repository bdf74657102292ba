"""PPPoE provisioning against the emulated router (plugins/mikrotik/provision.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.mikrotik.loaded import errors, provision
from tests.routeros import RouterState


def subscriber(**changes: Any) -> Any:
    values: dict[str, Any] = {
        "service_id": 42,
        "username": "alice",
        "password": "pw-1",
        "plan": "home-50",
        "download_mbps": 50,
        "upload_mbps": 10,
        "customer": "Alice Example",
    }
    values.update(changes)
    return provision.Subscriber(**values)


async def test_provision_adds_the_plan_profile_and_the_secret(
    session: Any, state: RouterState
) -> None:
    await provision.provision(session, subscriber())
    profile = state.profile("home-50")
    assert profile is not None
    assert profile.rate_limit == "10M/50M"  # rx/tx from the router: upload/download
    secret = state.secret("alice")
    assert secret is not None
    assert (secret.password, secret.service, secret.profile, secret.disabled) == (
        "pw-1",
        "pppoe",
        "home-50",
        False,
    )
    assert secret.comment == "isp:service=42 customer=Alice Example"


async def test_provisioning_twice_updates_instead_of_failing(
    session: Any, state: RouterState
) -> None:
    await provision.provision(session, subscriber())
    await provision.provision(
        session, subscriber(password="pw-2", download_mbps=100, upload_mbps=20)
    )
    assert [s.name for s in state.secrets] == ["alice"]
    assert [p.name for p in state.profiles if not p.builtin] == ["home-50"]
    assert state.profile("home-50").rate_limit == "20M/100M"
    assert state.secret("alice").password == "pw-2"


async def test_provision_takes_over_a_disabled_leftover_secret(
    session: Any, state: RouterState
) -> None:
    state.add_secret("alice", password="old", profile="default", disabled=True)
    await provision.provision(session, subscriber())
    secret = state.secret("alice")
    assert (secret.password, secret.profile, secret.disabled) == ("pw-1", "home-50", False)
    assert len(state.secrets) == 1


async def test_suspend_disables_the_secret_and_ends_the_live_session(
    session: Any, state: RouterState
) -> None:
    await provision.provision(session, subscriber())
    state.add_active("alice", "10.0.0.2")
    state.add_active("bob", "10.0.0.3")
    await provision.suspend(session, "alice")
    assert state.secret("alice").disabled
    assert [a.name for a in state.active] == ["bob"]


async def test_resume_enables_the_secret(session: Any, state: RouterState) -> None:
    await provision.provision(session, subscriber())
    await provision.suspend(session, "alice")
    await provision.resume(session, subscriber())
    assert not state.secret("alice").disabled


async def test_resume_recreates_a_secret_removed_on_the_router(
    session: Any, state: RouterState
) -> None:
    await provision.resume(session, subscriber())
    secret = state.secret("alice")
    assert secret is not None
    assert not secret.disabled
    assert secret.profile == "home-50"


async def test_terminate_removes_the_secret_and_the_session(
    session: Any, state: RouterState
) -> None:
    await provision.provision(session, subscriber())
    state.add_active("alice", "10.0.0.2")
    await provision.terminate(session, "alice")
    assert state.secrets == []
    assert state.active == []
    await provision.terminate(session, "alice")  # idempotent


@pytest.mark.parametrize(
    "field",
    ["username", "password", "plan", "customer"],
)
@pytest.mark.parametrize(
    "attack",
    [
        'x"; /system reboot; "',
        "x;/system reboot",
        "x$[/system reboot]",
        "[/system reboot]",
        "$[:put [/system identity get name]]",
        "x\\",
    ],
)
async def test_injection_attempts_stay_data(
    session: Any, state: RouterState, field: str, attack: str
) -> None:
    sub = subscriber(**{field: attack})
    await provision.provision(session, sub)
    assert state.reboots == 0
    assert state.variables_read == []
    # profile add, secret add: nothing else changed the router, and nothing else ran
    assert [w.split(" ", 3)[:3] for w in state.writes] == [
        ["/ppp", "profile", "add"],
        ["/ppp", "secret", "add"],
    ]
    assert all(s.startswith(("/ppp ", ":if ", ":len ")) for s in state.executed)
    secret = state.secrets[0]
    assert secret.name == sub.username
    assert secret.password == sub.password
    assert secret.profile == sub.plan
    assert sub.customer in secret.comment


async def test_a_newline_in_the_customer_name_does_not_start_a_statement(
    session: Any, state: RouterState
) -> None:
    await provision.provision(session, subscriber(customer="Eve\n/system reboot\r\n"))
    assert state.reboots == 0
    assert state.secret("alice").comment == "isp:service=42 customer=Eve /system reboot"


@pytest.mark.parametrize("username", ["al\nice", "tab\t", "", " alice", "bell\x07"])
def test_names_with_control_characters_are_refused(username: str) -> None:
    with pytest.raises(errors.InvalidValue, match="cannot be a RouterOS name"):
        subscriber(username=username)


def test_a_plan_named_like_a_builtin_profile_is_refused() -> None:
    with pytest.raises(errors.InvalidValue, match="built-in"):
        subscriber(plan="default")


ROUTER_ERRORS = [
    "failure: secret with the same name already exists on another table",
    "bad command name add (line 1 column 13)",
    "expected end of command (line 1 column 40)",
    "syntax error (line 1 column 22)",
    "input does not match any value of profile",
    "invalid value for argument remote-address",
    "no such item",
    "not enough permissions (9)",
]


@pytest.mark.parametrize("message", ROUTER_ERRORS)
async def test_every_router_error_raises_with_its_text(
    session: Any, state: RouterState, message: str
) -> None:
    state.fail_next(message, match="secret add")
    with pytest.raises(errors.RouterCommandError) as caught:
        await provision.provision(session, subscriber())
    assert caught.value.extra["router_message"] == message
    assert message in caught.value.detail
    assert "pw-1" not in str(caught.value.to_problem())
    assert state.secrets == []


async def test_suspend_fails_when_the_router_refuses(session: Any, state: RouterState) -> None:
    await provision.provision(session, subscriber())
    state.permissions_denied = True
    with pytest.raises(errors.RouterPermissionDenied):
        await provision.suspend(session, "alice")
    assert not state.secret("alice").disabled
