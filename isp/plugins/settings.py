"""Plugin settings: defaults < stored values (``PluginRecord.settings``) < environment.

A plugin declares a pydantic model (``Plugin(settings=Model)``); hooks read the values in
force through ``plugin.settings`` on every call, so :meth:`SettingsStore.current` is a
dictionary lookup: the validated instance is rebuilt only when something changes
(register, refresh, update). ``ISP_PLUGIN_<NAME>__<FIELD>`` wins over stored values and
cannot be changed over the API, so an operator's deployment config stays authoritative.

Secret fields (``SecretStr`` anywhere in the annotation) are encrypted at rest as
``{"__enc__": <ciphertext>}``, masked as ``MASK`` in :meth:`SettingsStore.public_view`
and in error messages; a PUT that sends the mask back keeps the stored secret. A stored
value that no longer validates (the model changed in an upgrade) falls back to the
default with a warning instead of taking the plugin down.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, PydanticUserError, ValidationError
from pydantic_core import to_jsonable_python

from isp.errors import ISPError, NotFound, ValidationFailed
from isp.plugins.settings_values import (
    env_values,
    env_variable,
    invalid_settings,
    is_secret,
    stored_form,
    wrong_types,
)

if TYPE_CHECKING:
    from isp.crypto import SecretBox

log = logging.getLogger("isp.plugins.settings")

MASK: Final = "********"
ENCRYPTED: Final = "__enc__"


@dataclass(frozen=True)
class _Entry:
    """One plugin's settings: ``decoded`` is what the DB holds, decrypted (never logged)."""

    model: type[BaseModel]
    decoded: Mapping[str, Any]
    env: Mapping[str, str]  # field -> variable name, for every variable that is set
    instance: BaseModel
    refreshed: bool
    # Instances for another class of the same plugin: the previous version while a
    # reload is in progress or failed (its code checks isinstance against its own class).
    others: dict[type[BaseModel], BaseModel] = field(default_factory=dict)


class SettingsStore:
    """Per plugin name: the settings model and the validated values in force."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._watchers: dict[str, list[Callable[[BaseModel], None]]] = {}

    # -- wiring --------------------------------------------------------------------------

    def register(self, name: str, model: type[BaseModel]) -> BaseModel:
        """Learn (or relearn, after a reload) ``name``'s model; no I/O.

        Values already read from the DB are kept and re-validated against the new model,
        so a hot reload keeps serving the stored settings; :meth:`refresh` re-reads them.
        """
        previous = self._entries.get(name)
        decoded = previous.decoded if previous is not None else {}
        entry = self._entry(name, model, decoded, refreshed=False)
        self._set(name, entry)
        return entry.instance

    def forget(self, name: str) -> None:
        """Drop ``name`` (uninstalled, or its new version declares no settings)."""
        self._entries.pop(name, None)

    def watch(self, name: str, listener: Callable[[BaseModel], None]) -> Callable[[], None]:
        """Call ``listener`` with ``name``'s new instance whenever its values change
        (register, refresh, update): how a sandboxed plugin's worker learns them. Returns
        the function that stops it."""
        listeners = self._watchers.setdefault(name, [])
        listeners.append(listener)

        def unwatch() -> None:
            if listener in listeners:
                listeners.remove(listener)

        return unwatch

    def assign(self, name: str, values: Mapping[str, Any]) -> None:
        """Serve ``values`` (plain JSON, secrets in clear) as ``name``'s stored layer: in a
        sandbox's worker, what the host sent; they are validated like stored values."""
        entry = self._entries.get(name)
        if entry is not None:
            self._set(name, self._entry(name, entry.model, dict(values), refreshed=True))

    def model_of(self, name: str) -> type[BaseModel] | None:
        entry = self._entries.get(name)
        return entry.model if entry is not None else None

    def is_refreshed(self, name: str) -> bool:
        """Whether the stored values were read from the DB since the model was registered."""
        entry = self._entries.get(name)
        return entry is not None and entry.refreshed

    async def refresh(self, name: str, box: SecretBox | None = None) -> None:
        """Re-read ``name``'s stored values (at load, and when another instance changed them)."""
        from isp.plugins.models import PluginRecord

        if name not in self._entries:
            return
        record = await PluginRecord.get_or_none(name=name)
        self._reload(name, record.settings if record is not None else None, box)

    async def refresh_all(self, box: SecretBox | None = None) -> None:
        """Re-read every registered plugin's stored values in one query."""
        from isp.plugins.models import PluginRecord

        names = list(self._entries)
        if not names:
            return
        stored = {r.name: r.settings for r in await PluginRecord.filter(name__in=names)}
        for name in names:
            self._reload(name, stored.get(name), box)

    # -- reading -------------------------------------------------------------------------

    def current(self, name: str, model: type[BaseModel] | None = None) -> BaseModel | None:
        """The validated settings in force: no I/O, never raises; None without a model.

        ``model`` is the caller's class: when it is not the registered one (an older
        version of the plugin still serving), the values are validated against it.
        """
        entry = self._entries.get(name)
        if entry is None:
            return None if model is None else self.register(name, model)
        if model is None or model is entry.model:
            return entry.instance
        found = entry.others.get(model)
        if found is None:
            found = entry.others[model] = self._resolve(name, model, entry.decoded)[0]
        return found

    @staticmethod
    def defaults(model: type[BaseModel]) -> BaseModel:
        """The model's defaults (a plugin object not loaded by the service)."""
        try:
            return model.model_validate({})
        except ValidationError:  # required fields: nothing valid to offer
            return model.model_construct()

    def public_view(self, name: str) -> dict[str, Any]:
        """Every field with secrets masked, which ones the environment sets, the schema."""
        entry = self._require(name)
        try:
            schema: dict[str, Any] | None = entry.model.model_json_schema()
        except PydanticUserError:  # a type pydantic cannot describe: still show values
            schema = None
        return {
            "plugin": name,
            "values": _shown(entry),
            "overridden": sorted(entry.env),
            "environment": dict(sorted(entry.env.items())),
            "schema": schema,
        }

    # -- writing -------------------------------------------------------------------------

    async def update(
        self, name: str, data: Mapping[str, Any], box: SecretBox, *, actor: str | None = None
    ) -> BaseModel:
        """Validate a (partial) PUT body, encrypt secrets, persist, serve it at once.

        Raises ValidationFailed (422) with ``errors[].loc == ["body", field]``; secret
        values never appear in it. With ``actor``, an ``AuditEntry`` lists changed fields.
        """
        from tortoise.transactions import in_transaction

        from isp.plugins import records
        from isp.plugins.models import PluginRecord

        entry = self._require(name)
        model = entry.model
        secrets = {f for f, i in model.model_fields.items() if is_secret(i.annotation)}
        # What GET shows may come back unchanged: the mask keeps a secret, and a field the
        # environment sets may be repeated as is (a GET -> PUT round trip stays valid).
        shown = _shown(entry)
        data = {f: v for f, v in data.items() if not (f in entry.env and shown.get(f) == v)}
        self._refuse(name, entry, data)
        changes = {f: v for f, v in data.items() if not (f in secrets and v == MASK)}
        wrong = wrong_types(name, model, changes, {f: changes[f] for f in secrets & changes.keys()})
        if wrong is not None:
            raise wrong
        async with in_transaction() as conn:
            # Merge with what the DB holds now (another instance may have just written).
            record = await PluginRecord.select_for_update().using_db(conn).get_or_none(name=name)
            stored = record.settings if record is not None else None
            raw = dict(stored) if isinstance(stored, dict) else {}
            decoded = self._decode(name, raw, box)
            _, kept = self._resolve(name, model, decoded, quiet=True)
            try:
                instance = model.model_validate({**kept, **changes, **env_values(name, model)})
            except ValidationError as exc:
                hidden = {f: changes[f] for f in secrets & changes.keys()}
                raise invalid_settings(name, exc, hidden) from exc
            plain = {f: stored_form(getattr(instance, f)) for f in changes}
            changed = sorted(f for f in plain if decoded.get(f, _MISSING) != plain[f])
            for f in changed:
                secret = f in secrets and plain[f] is not None
                raw[f] = {ENCRYPTED: box.encrypt(json.dumps(plain[f]))} if secret else plain[f]
            if changed:
                await records.settings_changed(conn, name, record, raw, changed, actor)
        if changed:
            log.info(
                "plugin %s settings changed: %s",
                name,
                ", ".join(changed),
                extra={"plugin": name, "fields": changed},
            )
        latest = self._entries.get(name, entry)  # the model may have been reloaded meanwhile
        self._set(name, self._entry(name, latest.model, {**decoded, **plain}, refreshed=True))
        return self._entries[name].instance

    # -- internals -----------------------------------------------------------------------

    def _set(self, name: str, entry: _Entry) -> None:
        self._entries[name] = entry
        for listener in list(self._watchers.get(name, ())):
            try:
                listener(entry.instance)
            except Exception:  # one listener's bug must not fail a settings change
                log.exception("plugin %s: settings listener failed", name, extra={"plugin": name})

    def _require(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise NotFound(
                f"plugin {name!r} has no settings: its Plugin(...) declares no settings model",
                plugin=name,
            )
        return entry

    def _refuse(self, name: str, entry: _Entry, data: Mapping[str, Any]) -> None:
        """Unknown fields and fields the environment sets cannot be PUT."""
        known = entry.model.model_fields
        errors = []
        for f in data:
            if f not in known:
                msg = f"unknown setting; known settings: {', '.join(sorted(known))}"
            elif f in entry.env:
                msg = (
                    f"set by the environment variable {entry.env[f]}; unset it to manage "
                    "this setting through the API"
                )
            else:
                continue
            errors.append({"loc": ["body", f], "msg": msg})
        if errors:
            detail = "; ".join(f"{e['loc'][1]}: {e['msg']}" for e in errors)
            raise ValidationFailed(
                f"invalid settings for plugin {name!r}: {detail}", errors=errors, plugin=name
            )

    def _reload(self, name: str, raw: Any, box: SecretBox | None) -> None:
        entry = self._entries.get(name)
        if entry is not None:
            decoded = self._decode(name, raw if isinstance(raw, dict) else {}, box)
            self._set(name, self._entry(name, entry.model, decoded, refreshed=True))

    def _entry(
        self, name: str, model: type[BaseModel], decoded: Mapping[str, Any], *, refreshed: bool
    ) -> _Entry:
        instance, _ = self._resolve(name, model, decoded)
        env = {
            f: env_variable(name, f)
            for f in model.model_fields
            if env_variable(name, f) in os.environ
        }
        return _Entry(model, dict(decoded), env, instance, refreshed)

    def _decode(self, name: str, raw: Mapping[str, Any], box: SecretBox | None) -> dict[str, Any]:
        """Stored JSON -> plain values; a secret that cannot be decrypted is skipped."""
        decoded: dict[str, Any] = {}
        for f, value in raw.items():
            if isinstance(value, dict) and set(value) == {ENCRYPTED}:
                try:
                    opened = box or _process_box()
                    value = json.loads(opened.decrypt(str(value[ENCRYPTED])))
                except (ISPError, ValueError) as exc:
                    log.warning(
                        "plugin %s: stored secret setting %s unusable, using the default: %s",
                        name,
                        f,
                        exc,
                        extra={"plugin": name},
                    )
                    continue
            decoded[f] = value
        return decoded

    def _resolve(
        self, name: str, model: type[BaseModel], decoded: Mapping[str, Any], *, quiet: bool = False
    ) -> tuple[BaseModel, dict[str, Any]]:
        """The instance in force and the stored values that made it in; never raises.

        A bad environment value falls back to the stored one, a bad stored value to the
        default; each is logged (without the value).
        """
        stored = {f: v for f, v in decoded.items() if f in model.model_fields}
        env = env_values(name, model)
        if not quiet and stored.keys() != decoded.keys():
            log.warning(
                "plugin %s: stored settings %s are not in its model any more, ignored",
                name,
                ", ".join(sorted(decoded.keys() - stored.keys())),
                extra={"plugin": name},
            )
        for _ in range(len(stored) + len(env) + 1):
            try:
                return model.model_validate({**stored, **env}), stored
            except ValidationError as exc:
                bad = {
                    str(e["loc"][0]): e["msg"]
                    for e in exc.errors(include_input=False)
                    if e["loc"] and str(e["loc"][0]) in stored.keys() | env.keys()
                }
            if not bad:
                break
            for f, msg in bad.items():
                if is_secret(model.model_fields[f].annotation):
                    msg = "not shown: the setting is secret"
                layer, source = (env, env_variable(name, f)) if f in env else (stored, "stored")
                layer.pop(f)
                if not quiet:
                    log.warning(
                        "plugin %s: setting %s: %s value is invalid (%s), falling back",
                        name,
                        f,
                        source,
                        msg,
                        extra={"plugin": name, "field": f},
                    )
        for fallback in (env, {}):
            try:
                return model.model_validate(fallback), {}
            except ValidationError:
                continue
        log.error(
            "plugin %s: settings model has required fields without defaults and "
            "no valid value for them",
            name,
            extra={"plugin": name},
        )
        return model.model_construct(**stored), stored


_MISSING: Final = object()


def _shown(entry: _Entry) -> dict[str, Any]:
    """The values in force as JSON, secrets masked (``MASK`` when set, None when not)."""
    values: dict[str, Any] = {}
    for name, info in entry.model.model_fields.items():
        value = getattr(entry.instance, name, None)
        if is_secret(info.annotation):
            values[name] = None if value is None else MASK
        else:
            values[name] = to_jsonable_python(value, fallback=str)
    return values


def _process_box() -> SecretBox:
    from isp.crypto import process_box

    return process_box()


_CURRENT: ContextVar[SettingsStore | None] = ContextVar("isp_current_settings", default=None)


class CurrentSettingsStore:
    """What ``from isp.plugins.settings import settings_store`` is: the settings store of
    the application serving the current request or task, so two apps in one process keep
    their plugins' settings apart.

    ``create_app`` builds one :class:`SettingsStore` and hands it to its runtime, which
    binds it to the plugins it loads (``Plugin.bind``); the app binds it (:meth:`bind`)
    when it starts serving and for every request. Outside any app (a script, a test that
    builds no app) the process default answers.
    """

    def __init__(self) -> None:
        self._default = SettingsStore()

    def current(self) -> SettingsStore:
        return _CURRENT.get() or self._default

    @staticmethod
    def bind(target: SettingsStore) -> Token[SettingsStore | None]:
        """Make ``target`` the store of this context and of the tasks it starts."""
        return _CURRENT.set(target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current(), name)


settings_store: Final = CurrentSettingsStore()
"""The running app's store (see :class:`CurrentSettingsStore`)."""
