"""The ``isp`` command: serve, migrate, roles, users, tokens (plugins and backups later).

Each command reads the settings once, runs one coroutine with ``asyncio.run`` and exits
non-zero with a one-line message on a known error (no traceback for operator mistakes).
"""

from __future__ import annotations

import asyncio
import getpass
import io
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from isp import db
from isp.config import Settings, load_settings
from isp.errors import ISPError
from isp.logs import configure_logging

if TYPE_CHECKING:
    from isp.plugins.service import PluginService

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except ISPError as exc:
        raise click.ClickException(exc.detail) from exc


def _run(settings: Settings, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Open the database (migrated), run ``work``, close; known errors become messages."""

    async def main() -> T:
        await db.init_db(settings)
        try:
            await db.migrate()
            from isp.auth.roles import ensure_builtin_roles

            await ensure_builtin_roles()
            return await work()
        finally:
            await db.close_db()

    try:
        return asyncio.run(main())
    except ISPError as exc:
        raise click.ClickException(exc.detail) from exc


@click.group()
def main() -> None:
    """ISP Framework: an ISP's core records with plugins around its workflows."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Apply pending migrations, then serve with Hypercorn."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    from isp.app import create_app

    settings = _settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # our JSON handler, once
    config.graceful_timeout = 5.0
    try:
        asyncio.run(hypercorn_serve(app, config))
    except ISPError as exc:
        raise click.ClickException(exc.detail) from exc
    except KeyboardInterrupt:
        pass


@main.command()
def migrate() -> None:
    """Apply pending migrations (core and plugins) and exit."""
    settings = _settings()
    configure_logging(settings.log_level)

    async def work() -> list[str]:
        from isp.plugins import tables
        from isp.plugins.discovery import discover

        applied: list[str] = []
        for source in await asyncio.to_thread(discover, settings.plugins_dir):
            if source.manifest is not None and tables.has_migrations(source.path):
                applied += await tables.migrate(source.name, source.path)
        return applied

    for name in _run(settings, work):
        click.echo(f"applied {name}")
    click.echo("migrations are up to date")


@main.command()
@click.option("--check", is_flag=True, help="Exit 1 when the models need a new migration.")
@click.option("--name", default=None, help="Name of the new migration file.")
@click.option("--plugin", default=None, help="A plugin under ISP_PLUGINS_DIR, not the core.")
def makemigrations(check: bool, name: str | None, plugin: str | None) -> None:
    """Write a migration for model changes of the core or of one plugin (developers)."""
    apps, only = None, None
    if plugin is not None:
        from isp.plugins import tables

        folder = _settings().plugins_dir / plugin
        if not (folder / "models.py").is_file():
            raise click.ClickException(f"{folder}/models.py not found")
        (folder / "migrations").mkdir(exist_ok=True)
        (folder / "migrations" / "__init__.py").touch()
        tables.ensure_package(plugin, folder)
        only = tables.app_label(plugin)
        apps = {db.CORE_APP: db.core_app_config(), only: tables.app_config(plugin)}
    changes = asyncio.run(db.pending_model_changes(apps, name=name, write=not check, only=only))
    if not changes:
        click.echo("no changes: the migrations match the models")
        return
    for change in changes:
        click.echo(change)
    if check:
        sys.exit(1)


@main.group()
def plugins() -> None:
    """Install, list, enable and disable plugins (the admin API's verbs, on the box)."""


def _plugin_command(work: Callable[[PluginService], Coroutine[Any, Any, T]]) -> T:
    """Run ``work(service)`` with the plugins loaded as a server would load them."""
    from isp.core.events import CORE_EVENTS
    from isp.crypto import install_box, load_secret_box
    from isp.plugins.registry import registry
    from isp.plugins.runtime import PluginRuntime
    from isp.plugins.service import PluginService
    from isp.storage import create_object_store

    settings = _settings()
    configure_logging("WARNING")

    async def run() -> T:
        registry.declare_events(CORE_EVENTS)
        install_box(await asyncio.to_thread(load_secret_box, settings))
        store = create_object_store(settings)
        runtime = PluginRuntime(settings, registry)
        await store.ensure_buckets(settings.s3_plugins_bucket, settings.s3_backups_bucket)
        await runtime.start()
        try:
            return await work(PluginService(settings, runtime, store))
        finally:
            await runtime.stop()
            await store.close()

    return _run(settings, run)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _print_plugin(described: dict[str, Any]) -> None:
    reason = described.get("error") or described.get("reload_error")
    click.echo(
        f"{described['name']:<24} {described.get('version') or '-':<12} "
        f"{described['status']:<9} {described.get('source') or '-':<7}"
        + (f" {reason}" if reason else "")
    )


@plugins.command("list")
def plugins_list() -> None:
    """Every plugin with its version, status and source."""

    async def work(service: PluginService) -> list[dict[str, Any]]:
        return list(service.runtime.list())

    for described in _plugin_command(work):
        _print_plugin(described)


@plugins.command("install")
@click.argument("zip_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Allow installing an older version.")
def plugins_install(zip_path: Path, force: bool) -> None:
    """Install or upgrade a plugin from a zip file."""
    data = zip_path.read_bytes()

    async def work(service: PluginService) -> tuple[dict[str, Any], int]:
        return await service.upload(data, _actor(), force=force)

    described, status = _plugin_command(work)
    click.echo({201: "installed", 200: "up to date or upgraded"}.get(status, str(status)))
    _print_plugin(described)


@plugins.command("enable")
@click.argument("name")
def plugins_enable(name: str) -> None:
    """Enable a plugin on every instance."""

    async def work(service: PluginService) -> dict[str, Any]:
        return await service.set_enabled(name, True, _actor())

    _print_plugin(_plugin_command(work))


@plugins.command("disable")
@click.argument("name")
def plugins_disable(name: str) -> None:
    """Disable a plugin on every instance."""

    async def work(service: PluginService) -> dict[str, Any]:
        return await service.set_enabled(name, False, _actor())

    _print_plugin(_plugin_command(work))


@main.group(invoke_without_command=True)
@click.option("--all", "everything", is_flag=True, help="Back up every device.")
@click.option("--device", "device_ids", multiple=True, type=int, help="A device id (repeatable).")
@click.pass_context
def backup(ctx: click.Context, everything: bool, device_ids: tuple[int, ...]) -> None:
    """Back up devices now, as POST /backups/run does; a progress bar on a terminal.

    The job is queued like any other: this command works on it too, and so do the
    workers of running instances (on PostgreSQL).
    """
    if ctx.invoked_subcommand is not None:
        return
    if everything == bool(device_ids):
        raise click.UsageError("give either --all or one or more --device ID")
    from isp.core.jobs import FleetJobs
    from isp.core.models import Job
    from isp.queue import TaskQueue

    settings = _settings()
    bar_wanted = sys.stdout.isatty()

    async def work(service: PluginService) -> Job:
        queue = TaskQueue(settings)
        jobs = FleetJobs(settings, service.store, queue)
        await queue.start()
        try:
            job = await jobs.start(list(device_ids) if device_ids else None)
            waiting = asyncio.create_task(jobs.wait(job.id))
            with click.progressbar(
                length=job.total, label="backing up", file=None if bar_wanted else io.StringIO()
            ) as bar:
                shown = 0
                while not waiting.done():
                    await asyncio.wait({waiting}, timeout=0.2)
                    current = await Job.get(id=job.id)
                    bar.update(current.done - shown)
                    shown = current.done
            return await waiting
        finally:
            await queue.stop()

    job = _plugin_command(work)
    ok = job.done - len(job.failed)
    click.echo(f"backed up {ok} of {job.total} devices; {len(job.failed)} failed")
    for failure in job.failed:
        click.echo(f"  device {failure.get('device_id')}: {failure.get('reason')}", err=True)
    if job.failed:
        sys.exit(1)


@backup.command("status")
def backup_status() -> None:
    """The backup schedule (next and last run, with its job) and stale devices."""
    from isp.core.backup_health import count_stale
    from isp.core.models import Job, ScheduleRun
    from isp.cron import next_run

    settings = _settings()

    async def work() -> tuple[ScheduleRun | None, Job | None, int]:
        last = await ScheduleRun.filter(name="backup").order_by("-run_at").first()
        job = await Job.get_or_none(id=last.job_id) if last and last.job_id else None
        return last, job, await count_stale(settings.backup_stale_hours)

    last, job, stale = _run(settings, work)
    cron = settings.backup_schedule
    if cron is None:
        click.echo("schedule: none (set ISP_BACKUP_SCHEDULE)")
    else:
        from datetime import UTC, datetime

        click.echo(f"schedule: {cron}")
        click.echo(f"next run: {next_run(cron, datetime.now(UTC)).isoformat()}")
    if last is None:
        click.echo("last run: never")
    else:
        click.echo(f"last run: {last.run_at.isoformat()} job {last.job_id or '-'}")
        if job is not None:
            click.echo(
                f"last job: {job.status.value}, {job.done} of {job.total} done, "
                f"{len(job.failed)} failed"
            )
    hours = f"{settings.backup_stale_hours:g}"
    click.echo(f"stale devices (no complete backup for {hours} h): {stale}")


@main.group()
def role() -> None:
    """Manage roles."""


@role.command("add")
@click.argument("name")
@click.option("--permission", "permissions", multiple=True, required=True)
def role_add(name: str, permissions: tuple[str, ...]) -> None:
    """Create or update a role with these permissions."""
    from isp.auth.roles import upsert_role

    async def work() -> Any:
        return await upsert_role(name, list(permissions))

    saved = _run(_settings(), work)
    click.echo(f"role {saved.name}: {', '.join(saved.permissions)}")


@main.group()
def user() -> None:
    """Manage users."""


@user.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True)
def user_add(name: str, roles: tuple[str, ...]) -> None:
    """Create a user with these roles."""
    from isp.auth.roles import add_user

    async def work() -> Any:
        return await add_user(name, list(roles))

    created = _run(_settings(), work)
    click.echo(f"user {created.name} created")


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command("issue")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, help="read, write or admin (repeatable).")
def token_issue(name: str, scopes: tuple[str, ...]) -> None:
    """Issue a token for user NAME; the token alone is the last line of stdout."""
    from isp.auth.tokens import issue_token

    async def work() -> str:
        return await issue_token(name, list(scopes))

    issued = _run(_settings(), work)
    click.echo(f"token for {name} (scopes: {', '.join(scopes) or 'read, write'}); shown once:")
    click.echo(issued)
