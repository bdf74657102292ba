"""What a sandboxed hook receives of the core's objects: documented attributes, no secrets."""

from __future__ import annotations

from typing import Any

import pytest

from isp import crypto
from isp.config import Settings
from isp.core.models import Customer, Device, Plan, Service
from isp.plugins.sandbox.worker import Snapshot, frozen
from isp.plugins.snapshots import SECRET_FIELD, snapshot
from tests.conftest import TEST_SECRET_KEY


@pytest.fixture(autouse=True)
def box() -> None:
    crypto.install_box(crypto.SecretBox(TEST_SECRET_KEY))


async def a_service() -> Service:
    box = crypto.process_box()
    customer = await Customer.create(name="Ada", email="ada@example.net")
    plan = await Plan.create(name="fast", download_mbps=100, upload_mbps=20)
    device = await Device.create(name="r1", vendor="mikrotik", host="10.0.0.1", username="api",
                                 password_enc=box.encrypt("router-pw"))  # fmt: skip
    service = await Service.create(customer=customer, plan=plan, device=device, username="ada",
                                   password_enc=box.encrypt("pppoe-pw"))  # fmt: skip
    return await Service.get(id=service.id).prefetch_related("customer", "plan", "device")


async def test_a_service_snapshot_has_its_columns_and_loaded_relations_but_no_ciphertext(
    migrated: Settings,
) -> None:
    data = snapshot(await a_service())

    assert data["username"] == "ada"
    assert data["status"] == "pending"
    assert (data["customer"]["name"], data["plan"]["download_mbps"]) == ("Ada", 100)
    assert data["device"]["host"] == "10.0.0.1"
    flat = repr(data)
    assert "password_enc" not in flat
    assert SECRET_FIELD not in flat
    assert crypto.process_box().decrypt(await _cipher()) == "pppoe-pw"  # it was there to leak


async def _cipher() -> str:
    service = await Service.first()
    assert service is not None
    return service.password_enc


async def test_secrets_travel_only_when_granted_and_answer_reveal_password(
    migrated: Settings,
) -> None:
    service = frozen(snapshot(await a_service(), secrets=True))

    assert isinstance(service, Snapshot)
    assert service.reveal_password() == "pppoe-pw"
    assert service.device.reveal_password() == "router-pw"
    assert SECRET_FIELD not in repr(service)
    withheld = frozen(snapshot(await Service.get(id=service.id)))
    with pytest.raises(PermissionError, match="secrets"):
        withheld.reveal_password()


def test_a_snapshot_is_read_only_and_plain_data_passes_through() -> None:
    seen: Any = frozen(snapshot({"name": "x", "tags": {"a"}, "nested": {"n": 1}}))

    assert (seen.name, seen.tags, seen.nested.n) == ("x", ("a",), 1)
    with pytest.raises(AttributeError, match="read-only"):
        seen.name = "y"
