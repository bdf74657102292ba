"""``create_app`` builds what belongs to the app: two apps in one process do not share."""

from __future__ import annotations

from pathlib import Path

from isp.app import create_app
from isp.plugins import registry
from isp.plugins.runtime import PluginRuntime
from tests.conftest import make_settings


def _registry_of(app: object) -> object:
    runtime = app.extensions["isp.plugins"]  # type: ignore[attr-defined]
    assert isinstance(runtime, PluginRuntime)
    return runtime.registry


def test_two_apps_in_one_process_have_their_own_plugin_registries(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'isp.sqlite3'}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = create_app(make_settings(url, tmp_path / "a", hook_timeout=3))
    second = create_app(make_settings(url, tmp_path / "b", hook_timeout=4))

    assert _registry_of(first) is not _registry_of(second)
    assert registry.current() not in (_registry_of(first), _registry_of(second))
    assert (_registry_of(first).default_timeout, _registry_of(second).default_timeout) == (3, 4)


async def test_the_core_emits_through_the_registry_of_the_app_serving_the_request(
    tmp_path: Path,
) -> None:
    from quart import current_app

    app = create_app(make_settings(f"sqlite://{tmp_path / 'isp.sqlite3'}", tmp_path))

    @app.get("/which-registry")
    async def which() -> dict[str, bool]:
        return {"own": registry.current() is _registry_of(current_app)}

    async with app.test_app():
        response = await app.test_client().get("/which-registry")
        assert await response.get_json() == {"own": True}
