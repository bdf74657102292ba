"""The author's kit: `isp plugins new` scaffolds a plugin whose test passes outside this
repository, `isp plugins pack` builds the zip an upload takes."""

from __future__ import annotations

import asyncio
import os
import sys
import zipfile
from importlib.metadata import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from isp.errors import ValidationFailed
from isp.plugins.authoring import scaffold
from tests.plugins.builders import admin_token, isp, server_env

REPO = Path(__file__).resolve().parents[2]


def test_testing_extra_brings_what_the_fixtures_need() -> None:
    extras = metadata("isp-framework").get_all("Provides-Extra") or []
    assert "testing" in extras
    requires = metadata("isp-framework").get_all("Requires-Dist") or []
    testing = {
        Requirement(r).name for r in requires if 'extra == "testing"' in r
    }
    assert testing == {"pytest", "pytest-asyncio"}


async def test_scaffolded_plugin_test_passes_in_a_project_outside_the_repository(
    tmp_path: Path,
) -> None:
    project = tmp_path / "my-plugins"
    assert not project.resolve().is_relative_to(REPO)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISP_", "PYTEST"))}
    env.pop("PYTHONPATH", None)

    _, out, _ = await isp("plugins", "new", "hello", "--dir", str(project), env=env)
    assert f"created {project / 'hello' / 'handlers.py'}" in out

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        cwd=project, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await process.communicate())[0].decode()
    assert process.returncode == 0, output
    assert "2 passed" in output
    assert "warning" not in output.lower()
    assert str(REPO / "tests") not in output  # nothing of this repository's tests was used


async def test_packed_plugin_installs_as_an_upload(tmp_path: Path) -> None:
    project = tmp_path / "project"
    scaffold("hello", project)
    env = server_env(tmp_path / "service")
    await admin_token(env)

    _, out, _ = await isp("plugins", "pack", str(project / "hello"), "-o", str(tmp_path / "h.zip"),
                          env=env)  # fmt: skip
    with zipfile.ZipFile(tmp_path / "h.zip") as archive:
        assert sorted(archive.namelist()) == [
            "hello/__init__.py", "hello/handlers.py", "hello/manifest.json",
        ]  # fmt: skip
    _, out, _ = await isp("plugins", "install", str(tmp_path / "h.zip"), env=env)
    assert out.splitlines()[0] == "installed hello 0.1.0"


def test_scaffold_refuses_a_bad_name_and_never_overwrites(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match="not a valid plugin name"):
        scaffold("Hello-World", tmp_path)
    scaffold("hello", tmp_path)
    with pytest.raises(ValidationFailed, match="refusing to overwrite"):
        scaffold("hello", tmp_path)
