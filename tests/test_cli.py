"""The `isp` command, run as operators run it: a real process on a real database."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from isp.app import create_app
from isp.config import Settings
from tests.conftest import TEST_SECRET_KEY, auth, make_settings


async def isp(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "isp",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "ISP_DATABASE_URL": database_url,
        "ISP_DATA_DIR": str(tmp_path / "data"),
        "ISP_PLUGINS_DIR": str(tmp_path / "plugins"),
        "ISP_SECRET_KEY": TEST_SECRET_KEY,
        "ISP_PLUGIN_RELOAD": "false",
    }


async def test_token_from_the_cli_drives_the_api(database_url: str, tmp_path: Path) -> None:
    env = cli_env(database_url, tmp_path)
    (tmp_path / "plugins").mkdir()
    code, out, err = await isp("migrate", env=env)
    assert code == 0, err
    code, out, err = await isp(
        "role", "add", "noc", "--permission", "services:write", "--permission", "customers:write",
        env=env,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = await isp("user", "add", "nina", "--role", "noc", env=env)
    assert code == 0, err
    code, out, err = await isp("token", "issue", "nina", "--scope", "write", env=env)
    assert code == 0, err
    token = out.strip().splitlines()[-1]
    assert token.startswith("isp_")
    assert " " not in token

    app = create_app(make_settings(database_url, tmp_path))
    async with app.test_app():
        client = app.test_client()
        created = await client.post("/customers", json={"name": "Nina's"}, headers=auth(token))
        assert created.status_code == 201
        refused = await client.post(
            "/plans", json={"name": "p", "download_mbps": 1, "upload_mbps": 1}, headers=auth(token)
        )
        assert refused.status_code == 403  # the noc role lacks plans:write


async def test_cli_errors_are_one_line_messages(database_url: str, tmp_path: Path) -> None:
    env = cli_env(database_url, tmp_path)
    code, _, err = await isp("user", "add", "x", "--role", "nosuchrole", env=env)
    assert code == 1
    assert "no role named 'nosuchrole'" in err
    assert "Traceback" not in err
    code, _, err = await isp("token", "issue", "ghost", env=env)
    assert code == 1
    assert "no user named 'ghost'" in err
    code, _, err = await isp("role", "add", "r", "--permission", "fly:kites", env=env)
    assert code == 1
    assert "unknown permission 'fly:kites'" in err


async def test_operator_cannot_get_an_admin_scoped_token(database_url: str, tmp_path: Path) -> None:
    env = cli_env(database_url, tmp_path)
    assert (await isp("user", "add", "olga", "--role", "operator", env=env))[0] == 0
    code, _, err = await isp("token", "issue", "olga", "--scope", "admin", env=env)
    assert code == 1
    assert "admin" in err


async def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    env = cli_env("sqlite://" + str(tmp_path / "x.sqlite3"), tmp_path)
    env["ISP_HOOK_TIMEOUT"] = "soon"
    code, _, err = await isp("migrate", env=env)
    assert code == 1
    assert "ISP_HOOK_TIMEOUT" in err
    assert "Traceback" not in err


async def test_plugin_verbs_on_the_box(database_url: str, tmp_path: Path) -> None:
    from tests.plugins.builders import stamp_zip

    env = cli_env(database_url, tmp_path)
    (tmp_path / "plugins").mkdir()
    archive = tmp_path / "stamp.zip"
    archive.write_bytes(stamp_zip(version="1.2.3"))
    code, out, err = await isp("plugins", "install", str(archive), env=env)
    assert code == 0, err
    assert "installed" in out
    code, out, err = await isp("plugins", "list", env=env)
    assert code == 0, err
    # ISP_PLUGIN_UNSIGNED is not set: the default runs an unsigned upload in the sandbox
    assert out.split() == ["stamp", "1.2.3", "active", "upload", "unsigned", "sandbox"]
    code, out, err = await isp("plugins", "disable", "stamp", env=env)
    assert code == 0, err
    assert "disabled" in out
    code, out, _ = await isp("plugins", "list", env=env)
    assert out.split()[2] == "disabled"
    code, out, err = await isp("plugins", "install", str(archive), env=env)
    assert code == 0, err  # the same zip again changes nothing
    code, _, err = await isp("plugins", "enable", "nosuch", env=env)
    assert code == 1
    assert "no plugin named 'nosuch'" in err


async def test_backup_status_shows_the_schedule_its_last_job_and_stale_devices(
    app: Any, settings: Settings
) -> None:
    import uuid
    from datetime import UTC, datetime

    from isp.core.models import Device, Job, JobStatus, ScheduleRun, Vendor

    env = cli_env(settings.database_url, settings.data_dir.parent)
    code, out, err = await isp("backup", "status", env=env)
    assert code == 0, err
    assert "schedule: none" in out
    assert "last run: never" in out

    await Device.create(name="r1", vendor=Vendor.MIKROTIK, host="192.0.2.1", username="a",
                        password_enc="x")  # fmt: skip
    job = await Job.create(id=uuid.uuid4(), kind="backup", total=1, done=1,
                           status=JobStatus.SUCCEEDED)  # fmt: skip
    run_at = datetime(2026, 1, 2, 2, 0, tzinfo=UTC)
    await ScheduleRun.create(name="backup", run_at=run_at, job_id=job.id)
    env["ISP_BACKUP_SCHEDULE"] = "0 2 * * *"
    code, out, err = await isp("backup", "status", env=env)
    assert code == 0, err
    assert "schedule: 0 2 * * *" in out
    [next_line] = [line for line in out.splitlines() if line.startswith("next run: ")]
    assert next_line.endswith("T02:00:00+00:00")
    assert f"last run: {run_at.isoformat()} job {job.id}" in out
    assert "last job: succeeded, 1 of 1 done, 0 failed" in out
    assert "stale devices (no complete backup for 26 h): 1" in out
