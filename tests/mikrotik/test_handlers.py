"""The hooks with stand-in core objects (plugins/mikrotik/handlers.py, settings.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.mikrotik.loaded import entries, handlers, manifest, package
from tests.mikrotik.loaded import settings as settings_module
from tests.routeros import RouterOSServer, RouterState


@dataclass
class FakeDevice:
    host: str
    port: int
    id: int = 3
    vendor: str = "mikrotik"
    username: str = "admin"
    password: str = "secret"
    host_key: str | None = None
    saves: list[dict[str, Any]] = field(default_factory=list)

    def reveal_password(self) -> str:
        return self.password

    async def save(self, **kwargs: Any) -> None:
        self.saves.append({**kwargs, "host_key": self.host_key})


@dataclass
class Named:
    name: str


@dataclass
class FakePlan:
    name: str = "home-50"
    download_mbps: int = 50
    upload_mbps: int = 10


@dataclass
class FakeService:
    device: FakeDevice
    id: int = 9
    username: str = "alice"
    customer: Named = field(default_factory=lambda: Named("Alice"))
    plan: FakePlan = field(default_factory=FakePlan)

    def reveal_password(self) -> str:
        return "pppoe-pw"


def test_manifest_declares_every_hook_with_its_timeout() -> None:
    timeouts = {spec.name: spec.timeout for spec in manifest.hooks}
    assert timeouts == {
        "service_provision": 30,
        "service_suspend": 30,
        "service_resume": 30,
        "service_terminate": 30,
        "plan_updated": 30,
        "service_update": 30,
        "device_backup": 120,
    }
    assert {entry.event for entry in entries} == set(timeouts)
    assert (manifest.name, manifest.version) == ("mikrotik", "1.3.0")


async def test_other_vendors_are_left_alone() -> None:
    device = FakeDevice(host="192.0.2.1", port=1, vendor="cisco")  # would fail if contacted
    service = FakeService(device=device)
    assert await handlers.device_backup(device, db=None) is None
    for hook in ("service_provision", "service_suspend", "service_resume", "service_terminate"):
        assert await getattr(handlers, hook)(service, db=None) is None


async def test_backup_hook_pins_the_host_key_through_db(
    router: RouterOSServer, state: RouterState
) -> None:
    device = FakeDevice(host=router.host, port=router.port)
    db = object()
    artifacts = await handlers.device_backup(device, db=db)
    assert [a["kind"] for a in artifacts] == ["export", "binary"]
    pinned = " ".join(router.host_key.export_public_key().decode().split()[:2])
    assert device.saves == [{"using_db": db, "update_fields": ["host_key"], "host_key": pinned}]
    await handlers.device_backup(device, db=db)
    assert len(device.saves) == 1  # pinned once
    assert state.files == {}


async def test_provision_hook_maps_the_service(router: RouterOSServer, state: RouterState) -> None:
    service = FakeService(device=FakeDevice(host=router.host, port=router.port))
    await handlers.service_provision(service, db=None)
    secret = state.secret("alice")
    assert (secret.password, secret.profile, secret.comment) == (
        "pppoe-pw",
        "home-50",
        "isp:service=9 customer=Alice",
    )


def test_settings_are_the_defaults_until_an_operator_changes_them() -> None:
    current = package.plugin.settings
    assert isinstance(current, settings_module.MikrotikSettings)
    assert current == settings_module.MikrotikSettings()


def test_backup_key_is_masked() -> None:
    values = settings_module.MikrotikSettings(backup_key="k3y")
    assert "k3y" not in repr(values)
    assert "k3y" not in values.model_dump_json()
