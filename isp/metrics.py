"""Prometheus metrics of one app instance, and the ``GET /metrics`` route.

Each app owns its ``CollectorRegistry`` (two apps in one process do not share series;
several instances each expose their own, and Prometheus sums them). Counters the app
increments live here; hook calls are read at scrape time from the dispatcher's own
per-hook stats (:mod:`isp.plugins.stats`), and plugin status and stale devices are
read when scraped, so nothing is counted twice or drifts from what ``/plugins`` shows.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from quart import Blueprint, Quart, Response, current_app, g, has_app_context, request

from isp.auth.guard import require
from isp.core.backup_health import count_stale
from isp.openapi import document
from isp.plugins.registry import PluginRegistry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EXTENSION_KEY = "isp.metrics"


class Metrics:
    """The instruments the core updates, on a registry of this app's own."""

    def __init__(self, plugins: Any, registry: PluginRegistry) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "isp_http_requests", "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.http_duration = Histogram(
            "isp_http_request_duration_seconds", "HTTP request latency, by route and method",
            ["route", "method"], registry=self.registry,
        )  # fmt: skip
        self.workflows = Counter(
            "isp_workflows", "Core workflows run, by event and outcome (ok, failed)",
            ["event", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.backups = Counter(
            "isp_backups",
            "Backups by this instance: kind export/binary with outcome changed/unchanged per "
            "stored artifact; kind device with outcome ok/failed per device",
            ["kind", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.jobs = Counter(
            "isp_jobs", "Fleet jobs started and finished here, by status",
            ["status"], registry=self.registry,
        )  # fmt: skip
        self.stale = Gauge(
            "isp_devices_backup_stale",
            "Devices whose last complete backup is older than ISP_BACKUP_STALE_HOURS, or missing",
            registry=self.registry,
        )
        self.registry.register(_PluginCollector(plugins, registry))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PluginCollector(Collector):
    """Hook calls and latency from the dispatcher's stats, and one info series per plugin."""

    def __init__(self, plugins: Any, registry: PluginRegistry) -> None:
        self._plugins = plugins
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        calls = CounterMetricFamily(
            "isp_hook_calls", "Hook calls by plugin, hook, event and outcome (ok, error, timeout)",
            labels=["plugin", "hook", "event", "outcome"],
        )  # fmt: skip
        latency = HistogramMetricFamily(
            "isp_hook_duration_seconds", "Hook call latency by plugin and hook",
            labels=["plugin", "hook", "event"],
        )  # fmt: skip
        for plugin in self._registry.plugins():
            for entry in self._registry.entries(plugin):
                stats = entry.stats
                labels = [plugin, entry.hook, entry.event]
                errors = stats.failures - stats.timeouts
                for outcome, value in (
                    ("ok", stats.calls - stats.failures),
                    ("error", errors),
                    ("timeout", stats.timeouts),
                ):
                    calls.add_metric([*labels, outcome], value)
                latency.add_metric(labels, stats.cumulative_buckets(), stats.duration_sum)
        yield calls
        yield latency
        yield from _compensation_families(self._registry)
        info = GaugeMetricFamily(
            "isp_plugin_info", "1 per plugin, labelled with its version, status and isolation",
            labels=["plugin", "version", "status", "isolation"],
        )  # fmt: skip
        for described in self._plugins.list() if self._plugins is not None else ():
            status = "quarantined" if described.get("quarantined") else described["status"]
            info.add_metric(
                [
                    described["name"],
                    str(described.get("version") or ""),
                    str(status),
                    str(described.get("isolation") or "in_process"),
                ],
                1,
            )
        yield info


def _compensation_families(registry: PluginRegistry) -> Iterator[Any]:
    """Compensation calls and latency, per hook that declares one."""
    calls = CounterMetricFamily(
        "isp_compensation_calls",
        "Compensation calls by plugin, hook, event and outcome (ok, error, timeout)",
        labels=["plugin", "hook", "event", "outcome"],
    )
    latency = HistogramMetricFamily(
        "isp_compensation_duration_seconds", "Compensation latency by plugin and hook",
        labels=["plugin", "hook", "event"],
    )  # fmt: skip
    for plugin in registry.plugins():
        for entry in registry.entries(plugin):
            if entry.compensation is None:
                continue
            stats = entry.compensation.stats
            labels = [plugin, entry.hook, entry.event]
            for outcome, value in (
                ("ok", stats.calls - stats.failures),
                ("error", stats.failures - stats.timeouts),
                ("timeout", stats.timeouts),
            ):
                calls.add_metric([*labels, outcome], value)
            latency.add_metric(labels, stats.cumulative_buckets(), stats.duration_sum)
    yield calls
    yield latency


def count_workflow(event: str, ok: bool) -> None:
    """Count one workflow's outcome on the current app's metrics (none outside an app)."""
    if has_app_context():
        found = current_app.extensions.get(EXTENSION_KEY)
        if isinstance(found, Metrics):
            found.workflows.labels(event, "ok" if ok else "failed").inc()


class _HttpObserver:
    """Counts and times one answer. Label children are looked up once per route, method
    and status and kept: ``labels()`` validates, stringifies and locks on every call, a
    large share of the per-request cost of a fast route."""

    def __init__(self, found: Metrics) -> None:
        self._metrics = found
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float | None) -> None:
        counter = self._counters.get((route, method, status))
        if counter is None:
            counter = self._metrics.http_requests.labels(route, method, str(status))
            self._counters[(route, method, status)] = counter
        counter.inc()
        if seconds is None:
            return
        timer = self._timers.get((route, method))
        if timer is None:
            timer = self._timers[(route, method)] = self._metrics.http_duration.labels(
                route, method
            )
        timer.observe(seconds)


def install_http_metrics(app: Quart, found: Metrics) -> None:
    """Time and count every request in one before/after pair, by route template."""
    observer = _HttpObserver(found)

    async def started() -> None:
        g.isp_started = perf_counter()

    async def answered(response: Response) -> Response:
        rule = request.url_rule
        started_at = g.get("isp_started")
        observer.observe(
            rule.rule if rule is not None else "unmatched",
            request.method,
            response.status_code,
            None if started_at is None else perf_counter() - started_at,
        )
        return response

    app.before_request(started)
    app.after_request(answered)


bp = Blueprint("metrics", __name__)


def app_metrics() -> Metrics:
    found = current_app.extensions[EXTENSION_KEY]
    assert isinstance(found, Metrics)
    return found


@bp.get("/metrics")
@document(
    statuses=(401, 403),
    responses={
        200: {
            "description": "Prometheus' text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics() -> Response:
    """Prometheus text: ``Bearer $ISP_METRICS_TOKEN`` or a token with the ``read`` scope."""
    from isp.context import components

    configured = components().settings.metrics_token
    given = request.headers.get("Authorization", "")
    if configured is not None and hmac.compare_digest(
        given.encode(), f"Bearer {configured.get_secret_value()}".encode()
    ):
        return await _render()
    return await _guarded()


@require("read")
async def _guarded() -> Response:
    return await _render()


async def _render() -> Response:
    from isp.context import components

    found = app_metrics()
    found.stale.set(await count_stale(components().settings.backup_stale_hours))
    return Response(found.render(), content_type=CONTENT_TYPE)
