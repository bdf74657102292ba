"""The ``isp`` command: serve, migrate, roles, users, tokens (plugins and backups later).

Each command reads the settings once, runs one coroutine with ``asyncio.run`` and exits
non-zero with a one-line message on a known error (no traceback for operator mistakes).
"""

from __future__ import annotations

import asyncio
import errno
import getpass
import io
import logging
import re
import socket
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
        raise click.ClickException(cli_wording(exc.detail)) from exc


def cli_wording(detail: str) -> str:
    """Messages written for the API name its query flags; here they are the CLI's options
    (``?force=true`` -> ``--force``, ``?replace_local=true`` -> ``--replace-local``,
    ``?grant=network`` -> ``--grant network``)."""
    flags = re.sub(r"\?([a-z_]+)=true", lambda m: "--" + m.group(1).replace("_", "-"), detail)
    flags = re.sub(
        r"\?grant=([a-z,]+)",
        lambda m: " ".join(f"--grant {name}" for name in m.group(1).split(",")),
        flags,
    )
    return re.sub(r"PUT /plugins/(\w+)/(enable|disable)", r"isp plugins \2 \1", flags)


@click.group()
def main() -> None:
    """ISP Framework: an ISP's core records with plugins around its workflows."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Apply pending migrations, then serve with Hypercorn."""
    listener = _listen(host, port)  # before anything slow: a taken port fails at once
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    from isp.app import create_app

    settings = _settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    config = Config()
    config.bind = [f"fd://{listener.fileno()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # our JSON handler, once
    config.graceful_timeout = 5.0
    try:
        asyncio.run(hypercorn_serve(app, config))
    except ISPError as exc:
        raise click.ClickException(exc.detail) from exc
    except KeyboardInterrupt:
        pass


def _listen(host: str, port: int) -> socket.socket:
    """The bound listening socket Hypercorn will serve on, or a one-line error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(1024)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"port {port} on {host} is in use: stop what serves there or pick another "
                "with --port (make run PORT=...)"
            ) from exc
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    listener.set_inheritable(True)
    return listener


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


def _plugin_command(
    work: Callable[[PluginService], Coroutine[Any, Any, T]], *, load: bool = True
) -> T:
    """Run ``work(service)`` with the plugins loaded as a server would load them, or only
    discovered (``load=False``: no plugin code runs, for commands that remove one)."""
    from isp.core.events import CORE_EVENTS
    from isp.crypto import install_box, load_secret_box
    from isp.plugins.recovery import recover
    from isp.plugins.registry import PluginRegistry, registry
    from isp.plugins.runtime import PluginRuntime
    from isp.plugins.service import PluginService
    from isp.plugins.settings import SettingsStore, settings_store
    from isp.plugins.specs import SPECS_BY_NAME
    from isp.storage import create_object_store

    settings = _settings()
    configure_logging("WARNING")

    async def run() -> T:
        own = PluginRegistry(default_timeout=settings.hook_timeout)
        own.declare_events({*CORE_EVENTS, *SPECS_BY_NAME})
        registry.bind(own)  # what the core's registry.emit reaches in this command
        plugin_settings = SettingsStore()
        settings_store.bind(plugin_settings)
        install_box(await asyncio.to_thread(load_secret_box, settings))
        store = create_object_store(settings)
        runtime = PluginRuntime(settings, own, plugin_settings)
        await store.ensure_buckets(settings.s3_plugins_bucket, settings.s3_backups_bucket)
        await recover(settings.plugins_dir, store, settings.s3_plugins_bucket)
        await (runtime.start() if load else runtime.discover())
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
        f"{described['status']:<9} {described.get('source') or '-':<7} "
        f"{described.get('signature') or '-':<9} {described.get('isolation') or '-':<10}"
        + (f" signer={described['signer']}" if described.get("signer") else "")
        + (f" {reason}" if reason else "")
    )


@plugins.command("list")
def plugins_list() -> None:
    """Every plugin: version, status, source, signature, isolation (and signer, error)."""

    async def work(service: PluginService) -> list[dict[str, Any]]:
        return list(service.runtime.list())

    for described in _plugin_command(work):
        _print_plugin(described)


@plugins.command("install")
@click.argument("zip_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Allow installing an older version.")
@click.option(
    "--replace-local",
    is_flag=True,
    help="Replace a local plugin's folder (moved to ISP_DATA_DIR/replaced-plugins/).",
)
@click.option(
    "--grant",
    type=click.Choice(["network", "secrets"]),
    multiple=True,
    help="Grant a permission the manifest asks for (as ?grant=); repeat for both.",
)
def plugins_install(
    zip_path: Path, force: bool, replace_local: bool, grant: tuple[str, ...]
) -> None:
    """Install or upgrade a plugin from a zip file."""
    data = zip_path.read_bytes()

    async def work(service: PluginService) -> tuple[dict[str, Any], int, dict[str, str]]:
        before = {p["name"]: p["version"] for p in service.runtime.list()}
        described, status = await service.upload(
            data, _actor(), force=force, replace_local=replace_local, grant=frozenset(grant)
        )
        return described, status, before

    described, status, before = _plugin_command(work)
    click.echo(_what_happened(described, status, before.get(described["name"])))
    _print_plugin(described)


def _what_happened(described: dict[str, Any], status: int, before: str | None) -> str:
    """``installed stamp 1.0.0``, ``upgraded mikrotik 1.0.0 -> 1.1.0``, or nothing changed."""
    from packaging.version import Version

    name, after = described["name"], described["version"]
    if status == 201 or before is None:
        return f"installed {name} {after}"
    if before == after:
        return f"{name} {after} is already installed: nothing changed"
    verb = "upgraded" if Version(after) > Version(before) else "downgraded"
    return f"{verb} {name} {before} -> {after}"


@plugins.command("new")
@click.argument("name")
@click.option(
    "--dir",
    "where",
    default=".",
    type=click.Path(file_okay=False, path_type=Path),
    help="The project folder (default: here).",
)
def plugins_new(name: str, where: Path) -> None:
    """Scaffold a plugin NAME: manifest, handlers and a passing test."""
    from isp.plugins.authoring import scaffold

    try:
        written = scaffold(name, where)
    except ISPError as exc:
        raise click.ClickException(exc.detail) from exc
    for path in written:
        click.echo(f"created {path}")
    click.echo(f"next: pytest (in {where}), then: isp plugins pack {where / name}")


@plugins.command("pack")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The zip to write (default: <name>-<version>.zip here).",
)
def plugins_pack(folder: Path, output: Path | None) -> None:
    """Build the zip that POST /plugins/upload and `isp plugins install` take."""
    from isp.plugins.authoring import pack

    try:
        written = pack(folder, output)
    except ISPError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(str(written))


@plugins.command("keygen")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def plugins_keygen(path: Path) -> None:
    """Write a new Ed25519 signing key to PATH (mode 0600) and its public key to PATH.pub."""
    from isp.plugins.keys import write_keypair

    try:
        key_id = write_keypair(path)
    except ISPError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(f"wrote {path} (private: keep it secret) and {path}.pub; key id {key_id}")
    click.echo(f"trust it: add the line of {path}.pub to the ISP_PLUGIN_TRUSTED_KEYS file")


@plugins.command("sign")
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--key",
    "key",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The private key written by `isp plugins keygen`.",
)
def plugins_sign(target: Path, key: Path) -> None:
    """Write SIGNATURE.json into the plugin folder or zip TARGET, signed with --key."""
    from isp.plugins.trust import SIGNATURE_FILE, sign

    try:
        key_id = sign(target, key)
    except ISPError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(f"signed {target} with key {key_id} ({SIGNATURE_FILE})")


@plugins.command("enable")
@click.argument("name")
def plugins_enable(name: str) -> None:
    """Enable a plugin on every instance."""

    async def work(service: PluginService) -> dict[str, Any]:
        return await service.set_enabled(name, True, _actor())

    _print_plugin(_plugin_command(work))


@plugins.command("disable")
@click.argument("name")
@click.option("--cascade", is_flag=True, help="Disable the plugins that depend on it too.")
def plugins_disable(name: str, cascade: bool) -> None:
    """Disable a plugin on every instance."""

    async def work(service: PluginService) -> dict[str, Any]:
        return await service.set_enabled(name, False, _actor(), cascade=cascade)

    _print_plugin(_plugin_command(work))


@plugins.command("uninstall")
@click.argument("name")
@click.option("--purge", is_flag=True, help="Also drop its tables, settings and stored zips.")
@click.option("--cascade", is_flag=True, help="Disable the plugins that depend on it first.")
def plugins_uninstall(name: str, purge: bool, cascade: bool) -> None:
    """Uninstall an uploaded plugin; works with the service stopped (no plugin code runs)."""

    async def work(service: PluginService) -> str | None:
        version = service.runtime.version_of(name) or service.runtime.manifest_version(name)
        await service.uninstall(name, _actor(), purge=purge, cascade=cascade)
        return version

    version = _plugin_command(work, load=False)
    kept = "its tables, settings and stored zips were removed" if purge else (
        "its tables, settings and stored zips are kept (--purge removes them)"
    )
    click.echo(f"uninstalled {name} {version or ''}".rstrip() + f"; {kept}")


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


@user.command("list")
def user_list() -> None:
    """Every user with their roles."""
    from isp.auth.models import User

    async def work() -> list[Any]:
        return list(await User.all().prefetch_related("roles").order_by("id"))

    for found in _run(_settings(), work):
        roles = ", ".join(sorted(r.name for r in found.roles)) or "-"
        click.echo(f"{found.name:<24} {roles:<32} {_when(found.created_at)}")


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command("issue")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, help="read, write or admin (repeatable).")
@click.option(
    "--expires-in-days",
    type=click.IntRange(1, 3650),
    default=None,
    help="The token stops working after N days.",
)
def token_issue(name: str, scopes: tuple[str, ...], expires_in_days: int | None) -> None:
    """Issue a token for user NAME; the token alone is the last line of stdout."""
    from isp.auth.tokens import issue_token

    async def work() -> str:
        return await issue_token(name, list(scopes), expires_in_days)

    issued = _run(_settings(), work)
    until = f", expires in {expires_in_days} days" if expires_in_days else ""
    click.echo(
        f"token for {name} (scopes: {', '.join(scopes) or 'read, write'}{until}); shown once:"
    )
    click.echo(issued)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


@token.command("list")
@click.option("--user", "user_name", default=None, help="Only this user's tokens.")
def token_list(user_name: str | None) -> None:
    """Every token: prefix, user, scopes, created, expires, revoked, last used."""
    from isp.auth.models import ApiToken

    async def work() -> list[Any]:
        query = ApiToken.all().select_related("user").order_by("id")
        if user_name is not None:
            query = query.filter(user__name=user_name)
        return list(await query)

    rows = _run(_settings(), work)
    click.echo(
        f"{'prefix':<10} {'user':<16} {'scopes':<18} {'created':<16} {'expires':<16} "
        f"{'revoked':<16} last used"
    )
    for t in rows:
        click.echo(
            f"{t.prefix:<10} {t.user.name:<16} {','.join(t.scopes):<18} "
            f"{_when(t.created_at):<16} {_when(t.expires_at):<16} {_when(t.revoked_at):<16} "
            f"{_when(t.last_used_at)}"
        )


@token.command("revoke")
@click.argument("prefix")
def token_revoke(prefix: str) -> None:
    """Revoke the token with PREFIX; running instances refuse it within
    ISP_PLUGIN_SYNC_INTERVAL."""
    from isp.auth.models import ApiToken
    from isp.auth.tokens import revoke_tokens

    async def work() -> tuple[bool, int]:
        exists = await ApiToken.exists(prefix=prefix)
        return exists, await revoke_tokens(prefix, None) if exists else 0

    exists, count = _run(_settings(), work)
    if not exists:
        raise click.ClickException(f"no token with prefix {prefix!r} (see 'isp token list')")
    click.echo(f"revoked token {prefix}" if count else f"token {prefix} was already revoked")
