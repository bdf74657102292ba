"""``create_app(settings)``: wiring only, no I/O at import or construction.

Start-up (``before_serving``): open the database, apply pending migrations, seed the
built-in roles, load the secret key, make sure the buckets exist, start the plugins,
then the job worker. Shut-down (``after_serving``): stop the worker (unfinished tasks go
back to the queue) and the plugins, close the store and DB.
"""

from __future__ import annotations

import asyncio
import logging

from quart import Quart
from quart_schema import QuartSchema

import isp
from isp import audit, db
from isp.auth.api import bp as auth_bp
from isp.auth.roles import ensure_builtin_roles
from isp.auth.tokens import token_cache
from isp.config import Settings
from isp.context import EXTENSION_KEY, Components
from isp.core.api import bp as core_bp
from isp.core.events import CORE_EVENTS
from isp.core.jobs import FleetJobs
from isp.core.schedules import BackupSchedule
from isp.core.schedules import bp as schedules_bp
from isp.crypto import install_box, load_secret_box
from isp.health import bp as health_bp
from isp.http_input import IdConverter, refuse_nul_in_query, request_class
from isp.metrics import EXTENSION_KEY as METRICS_KEY
from isp.metrics import Metrics, install_http_metrics
from isp.metrics import bp as metrics_bp
from isp.openapi import PLUGIN_ROUTE_DOCS, ISPOpenAPIProvider, annotate
from isp.plugins import compensation_retry, outbox, registry
from isp.plugins.api import bp as plugins_bp
from isp.plugins.outbox_api import EXTENSION as OUTBOX_KEY
from isp.plugins.outbox_api import bp as outbox_bp
from isp.plugins.recovery import recover
from isp.plugins.registry import PluginRegistry
from isp.plugins.reloader import PluginReloader
from isp.plugins.runtime import PluginRuntime
from isp.plugins.service import PluginService
from isp.plugins.settings import SettingsStore, settings_store
from isp.plugins.settings_api import bp as plugin_settings_bp
from isp.plugins.specs import SPECS_BY_NAME
from isp.plugins.sync import PluginSync
from isp.problems import install_error_handlers
from isp.queue import TaskQueue
from isp.response_conversion import install_response_conversion
from isp.storage import create_object_store

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Quart:
    app = Quart("isp")
    # JSON bodies stop at ISP_MAX_BODY; a plugin zip (plus its multipart framing) may be larger
    app.request_class = request_class(upload_limit=settings.plugin_max_upload + 1024 * 1024)
    app.url_map.converters["int"] = IdConverter
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    token_cache.ttl = settings.plugin_sync_interval
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,
        info={"title": "ISP Framework", "version": isp.__version__},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
        openapi_provider_class=ISPOpenAPIProvider,
    )
    install_response_conversion(app)
    install_error_handlers(app)
    app.before_request(refuse_nul_in_query)
    plugin_registry = PluginRegistry(default_timeout=settings.hook_timeout)
    plugin_registry.declare_events({*CORE_EVENTS, *SPECS_BY_NAME})
    plugin_settings = SettingsStore()
    store = create_object_store(settings)
    plugins = PluginRuntime(settings, plugin_registry, plugin_settings)
    deliverer = outbox.Outbox(settings, plugin_registry)
    compensation_retry.install()  # failed compensations are outbox rows too
    app.extensions[OUTBOX_KEY] = deliverer
    metrics = Metrics(plugins, plugin_registry)
    queue = TaskQueue(settings)
    jobs = FleetJobs(settings, store, queue, metrics)
    parts = Components(
        settings=settings,
        store=store,
        jobs=jobs,
        queue=queue,
        schedule=BackupSchedule(settings.backup_schedule, jobs, queue),
        metrics=metrics,
        plugins=plugins,
    )
    app.extensions[EXTENSION_KEY] = parts
    app.extensions[METRICS_KEY] = metrics
    install_http_metrics(app, metrics)
    app.extensions["isp.plugins"] = parts.plugins
    app.register_blueprint(health_bp)
    app.register_blueprint(core_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(plugins_bp)
    app.register_blueprint(audit.bp)
    app.register_blueprint(plugin_settings_bp)
    app.register_blueprint(schedules_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(outbox_bp)
    annotate(app, PLUGIN_ROUTE_DOCS)
    app.extensions["isp.plugin_service"] = PluginService(settings, parts.plugins, parts.store)
    sync = PluginSync(settings, parts.plugins, parts.store)
    reloader = PluginReloader(parts.plugins, settings.plugins_dir)
    app.extensions["isp.reloader"] = reloader

    @app.before_request
    @app.before_websocket
    async def bind_plugin_state() -> None:
        """The core's ``registry.emit`` reaches this app's plugins, not another app's, and
        ``settings_store`` this app's plugin settings."""
        registry.bind(plugin_registry)
        settings_store.bind(plugin_settings)
        outbox.bind(deliverer)

    @app.before_serving
    async def start() -> None:
        registry.bind(plugin_registry)
        settings_store.bind(plugin_settings)
        outbox.bind(deliverer)
        await db.init_db(settings)
        await db.migrate()
        await ensure_builtin_roles()
        parts.box = await asyncio.to_thread(load_secret_box, settings)
        install_box(parts.box)
        await parts.store.ensure_buckets(settings.s3_plugins_bucket, settings.s3_backups_bucket)
        await recover(settings.plugins_dir, parts.store, settings.s3_plugins_bucket)
        await parts.plugins.start()
        await sync.start()
        if settings.plugin_reload:
            await reloader.start()
        await queue.start()
        await deliverer.start()
        log.info("service started", extra={"version": isp.__version__})

    @app.after_serving
    async def stop() -> None:
        await deliverer.stop()
        await reloader.stop()
        await sync.stop()
        await queue.stop()
        await parts.plugins.stop()
        await parts.store.close()
        await db.close_db()

    return app
