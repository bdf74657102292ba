"""Settings: read once from the ``ISP_*`` environment variables and passed down.

Tests build ``Settings(...)`` directly; nothing else in the package reads the
environment (plugin settings overrides aside, which live with the plugin settings).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from isp.errors import ConfigError

ENV_PREFIX = "ISP_"
NESTED = "__"  # ISP_SANDBOX_LIMITS__<PLUGIN>__<LIMIT>: one level per delimiter
PLUGIN_SLUG = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # isp.plugins.manifest.SLUG

# the bounds of a sandbox limit, the deployment's (ISP_SANDBOX_*) and a plugin's alike
MemoryMB = Annotated[int, Field(ge=64, le=1024 * 1024)]
CpuSeconds = Annotated[int, Field(ge=1, le=7 * 86_400)]
Files = Annotated[int, Field(ge=16, le=65_536)]
Processes = Annotated[int, Field(ge=8, le=4096)]


class SandboxLimits(BaseModel):
    """One plugin's sandbox limits, set by the operator; a limit left out is the deployment's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_mb: MemoryMB | None = None
    cpu_seconds: CpuSeconds | None = None
    files: Files | None = None
    processes: Processes | None = None


class Settings(BaseSettings):
    """Every ``ISP_*`` variable of the outside contract (API.md)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED,  # only fields that are objects: sandbox_limits
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    database_url: str = "sqlite://./data/isp.sqlite3"
    db_timeout: float = Field(default=10.0, gt=0, le=3600)
    db_pool_size: int = Field(default=20, ge=1, le=1000)
    data_dir: Path = Path("./data")
    plugins_dir: Path = Path("./plugins")
    plugin_reload: bool = True
    hook_timeout: float = Field(default=10.0, gt=0, le=3600)
    hook_grace: float = Field(default=1.0, ge=0, le=60)
    plugin_threads: int = Field(default=4, ge=1, le=256)
    max_body: int = Field(default=1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    plugin_import_timeout: float = Field(default=10.0, gt=0, le=3600)
    sandbox_memory_mb: MemoryMB = 1024
    sandbox_cpu_seconds: CpuSeconds = 600
    sandbox_files: Files = 256
    sandbox_processes: Processes = 32
    sandbox_limits: dict[str, SandboxLimits] = Field(default_factory=dict)
    s3_endpoint_url: str | None = None
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    s3_plugins_bucket: str = "plugins"
    s3_backups_bucket: str = "backups"
    s3_timeout: float = Field(default=30.0, gt=0, le=3600)
    plugin_max_upload: int = Field(default=16 * 1024 * 1024, gt=0)
    plugin_trusted_keys: Path | None = None
    plugin_unsigned: Literal["sandbox", "refuse", "allow"] = "sandbox"
    plugin_sandbox_local: bool = False
    plugin_sync_interval: float = Field(default=1.0, gt=0, le=60)
    backup_concurrency: int = Field(default=50, ge=1, le=10_000)
    backup_device_timeout: float = Field(default=300.0, gt=0, le=86_400)
    backup_retries: int = Field(default=2, ge=0, le=10)
    backup_chunk_size: int = Field(default=25, ge=1, le=10_000)
    backup_schedule: str | None = None
    backup_stale_hours: float = Field(default=26.0, gt=0, le=24 * 366)
    job_stalled_after: float = Field(default=30.0, ge=2, le=3600)
    outbox_attempts: int = Field(default=5, ge=1, le=100)
    outbox_backoff: float = Field(default=1.0, gt=0, le=3600)
    outbox_lease: float = Field(default=60.0, ge=1, le=86_400)
    outbox_poll_interval: float = Field(default=1.0, gt=0, le=60)
    outbox_keep_days: float = Field(default=7.0, gt=0, le=3660)
    metrics_token: SecretStr | None = None
    secret_key: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("sandbox_limits")
    @classmethod
    def _plugin_names(cls, value: dict[str, SandboxLimits]) -> dict[str, SandboxLimits]:
        for name in value:
            if not PLUGIN_SLUG.match(name):
                raise ValueError(
                    f"{name!r} is not a plugin name (lowercase letters, digits and '_')"
                )
        return value

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in {"sqlite", "postgres", "asyncpg", "psycopg"}:
            raise ValueError("must be a Tortoise URL starting with sqlite:// or postgres://")
        return value

    @field_validator("backup_schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from isp.cron import parse_cron

        parse_cron(value)  # raises ValueError naming the field that is wrong
        return " ".join(value.split())

    @field_validator("plugin_trusted_keys", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("plugin_trusted_keys")
    @classmethod
    def _trusted_keys(cls, value: Path | None) -> Path | None:
        if value is not None:
            from isp.plugins.keys import load_trusted_keys

            load_trusted_keys(value)  # raises ValueError naming the file and the line
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _http_endpoint(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def uses_s3(self) -> bool:
        return self.s3_endpoint_url is not None

    @property
    def objects_dir(self) -> Path:
        """Root of the local object store (one sub-folder per bucket)."""
        return self.data_dir / "objects"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite://")


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; a bad value raises ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except SettingsError as exc:  # an object-valued variable whose text is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        variable = f"{ENV_PREFIX}{found.group(1).upper()}" if found else "ISP_*"
        why = "is not a JSON object"
        raise ConfigError(
            f"invalid configuration: {variable}: {why}",
            errors=[{"variable": variable, "msg": why}],
        ) from exc
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = NESTED.join(str(part) for part in error["loc"])
            why = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{ENV_PREFIX}{field.upper()}: {why}")
        raise ConfigError(
            "invalid configuration: " + "; ".join(problems),
            errors=[{"variable": p.split(":", 1)[0], "msg": p.split(": ", 1)[1]} for p in problems],
        ) from exc
