"""Run a command line against a `RouterState`, printing what RouterOS would print.

Like the router, a line is compiled whole first: a syntax error, a `bad command name` or an
`expected end of command` anywhere means nothing runs. Then statements run in order; a runtime
error (`failure: ...`, `no such item`, ...) is printed and stops the rest of the line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import render
from .compiler import Call, check, resolve
from .menus import SERVICES, TABLES, Path, Table
from .state import Profile, RouterState, Secret
from .syntax import (
    Block,
    Expression,
    Literal,
    RouterOSSyntaxError,
    Statement,
    Substitution,
    Variable,
    Word,
    parse,
)

Value = str | list[str]

_RATE = re.compile(r"^\d+[kMG]?(/\d+[kMG]?)?( \S+)*$")
DENIED = "not enough permissions (9)"


class CommandFailure(Exception):
    """A runtime error: its text is printed, and the rest of the line does not run."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _LineStopped(Exception):
    """The line ends here with nothing more printed (an export that wrote `#interrupted`)."""


_COMPARE = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
}


@dataclass
class Result:
    output: str
    export_span: tuple[int, int] | None = None  # where the export text sits in `output`


class Interpreter:
    """One exec command's run; `user` is the login name without its `+` options."""

    def __init__(self, state: RouterState, user: str = "admin") -> None:
        self.state = state
        self.user = user
        self.lines: list[str] = []
        self._export_lines: tuple[int, int] | None = None

    def run(self, src: str) -> Result:
        self.lines = []
        self._export_lines = None
        try:
            statements = parse(src)
            check(statements, (), self.state)
        except RouterOSSyntaxError as exc:
            return Result(exc.render(src) + "\r\n")
        cwd: Path = ()
        try:
            for statement in statements:
                cwd, _ = self._execute(statement, cwd, top=True)
        except CommandFailure as exc:
            self.lines.append(exc.message)
        except _LineStopped:
            pass
        output = "".join(line + "\r\n" for line in self.lines)
        span = None
        if self._export_lines is not None:
            first, last = self._export_lines
            span = (sum(len(x) + 2 for x in self.lines[:first]),
                    sum(len(x) + 2 for x in self.lines[:last]))
        return Result(output, span)

    # -- running -------------------------------------------------------------------------

    def _execute(self, statement: Statement, cwd: Path, *, top: bool) -> tuple[Path, Value]:
        call = resolve(statement, cwd, self.state)
        if isinstance(call, tuple):
            return call, ""
        self.state.executed.append(statement.text)
        if top and not call.spec.control:
            injected = self.state.take_injected(statement.text)
            if injected is not None and injected.continue_line:
                self.lines.append(injected.message)
                return cwd, ""
            if injected is not None:
                raise CommandFailure(injected.message)
        if call.spec.write:
            if self.state.permissions_denied or not self.state.has_policy(self.user, "write"):
                raise CommandFailure(DENIED)
            self.state.writes.append(statement.text)
        table = TABLES.get(call.menu)
        verb = call.path[-1]
        if table is not None:
            return cwd, getattr(self, f"_table_{verb}")(call, table)
        handler = "_cmd_" + "_".join(call.path).replace(":", "").replace("-", "_")
        return cwd, getattr(self, handler)(call)

    def value(self, word: Word, menu: Path) -> Value:
        if len(word.parts) == 1 and isinstance(word.parts[0], Substitution):
            return self._substitute(word.parts[0], menu)
        return "".join(self._text(part, menu) for part in word.parts)

    def text(self, word: Word, menu: Path) -> str:
        value = self.value(word, menu)
        return value if isinstance(value, str) else ";".join(value)

    def _text(
        self, part: Literal | Variable | Substitution | Block | Expression, menu: Path
    ) -> str:
        if isinstance(part, Literal):
            return part.text
        if isinstance(part, Block | Expression):
            return part.text
        if isinstance(part, Variable):
            self.state.variables_read.append(part.name)
            return ""
        value = self._substitute(part, menu)
        return value if isinstance(value, str) else ";".join(value)

    def _substitute(self, sub: Substitution, menu: Path) -> Value:
        value: Value = ""
        for statement in sub.statements:
            menu, value = self._execute(statement, menu, top=False)
        return value

    def _values(self, call: Call) -> dict[str, str]:
        return {name: self.text(word, call.menu) for name, word in call.named.items()}

    # -- tables --------------------------------------------------------------------------

    def _check(self, name: str, value: str) -> Any:
        """Validate one property value; return it as stored."""
        if name == "service" and value not in SERVICES:
            raise CommandFailure("input does not match any value of service")
        if name == "profile" and self.state.profile(value) is None:
            raise CommandFailure("input does not match any value of profile")
        if name == "disabled":
            if value not in ("yes", "no", "true", "false"):
                raise CommandFailure("input does not match any value of disabled")
            return value in ("yes", "true")
        if name == "rate-limit" and value and not _RATE.match(value):
            raise CommandFailure("invalid value for argument rate-limit")
        return value

    def _apply(self, table: Table, item: Any, values: dict[str, str], unset: list[str]) -> None:
        checked = {name: self._check(name, value) for name, value in values.items()}
        if table.noun == "secret" and checked.get("remote-address", ""):
            try:
                ipaddress.IPv4Address(checked["remote-address"])
            except ValueError:
                raise CommandFailure("invalid value for argument remote-address") from None
        new_name = checked.get("name")
        if new_name is not None and any(
            other is not item and other.name == new_name for other in table.items(self.state)
        ):
            # v7 menus word it `item with this name` (beeyev #80); /ppp secret keeps its own
            if self.state.item_exists_wording and table.noun != "secret":
                raise CommandFailure("failure: item with this name already exists")
            raise CommandFailure(f"failure: {table.noun} with the same name already exists")
        defaults = {f.name: f.default for f in dataclasses.fields(item)}
        for name in unset:
            setattr(item, name.replace("-", "_"), defaults[name.replace("-", "_")])
        for name, value in checked.items():
            setattr(item, name.replace("-", "_"), value)

    def _select(self, call: Call, table: Table) -> list[Any]:
        """The items an unnamed argument names: `[find ...]` ids, `*1`, `0`, or names."""
        if not call.unnamed:
            raise CommandFailure("no such item")
        value = self.value(call.unnamed[0], call.menu)
        wanted = value if isinstance(value, list) else re.split(r"[,;]", value)
        items = list(table.items(self.state))
        chosen = []
        for token in filter(None, wanted):
            if token.startswith("*"):
                found = [i for i in items if i.id == token]
            elif token.isdigit():
                found = items[int(token):int(token) + 1]
            else:
                found = [i for i in items if i.name == token]
            if not found:
                raise CommandFailure("no such item")
            chosen += found
        return chosen

    def _matching(self, call: Call, table: Table) -> list[tuple[int, Any]]:
        """(number, item) pairs; numbers count the whole menu, as `print` shows them."""
        conditions = [*call.where, *((n, w, False, "=") for n, w in call.named.items())]
        wanted = [(n, None if w is None else self.text(w, call.menu), neg, op)
                  for n, w, neg, op in conditions]
        return [(number, item) for number, item in enumerate(table.items(self.state))
                if all(self._holds(item, *c) for c in wanted)]

    @staticmethod
    def _holds(item: Any, name: str, value: str | None, negated: bool, op: str) -> bool:
        if not hasattr(item, name.replace("-", "_")):
            return negated
        actual = render.field_value(item, name)
        if value is None:
            result = actual in ("yes", "true")
        elif op == "~":  # a regular expression, as `where name~"x"` on RouterOS
            result = re.search(value, actual) is not None
        else:
            result = actual == value
        return result != negated

    def _table_add(self, call: Call, table: Table) -> Value:
        values = self._values(call)
        if not values.get("name"):
            raise CommandFailure(f"failure: {table.noun} name must be specified")
        item = (Profile if table.noun == "profile" else Secret)("", id=self.state.new_id())
        self._apply(table, item, values, [])
        table.items(self.state).append(item)
        return item.id

    def _table_set(self, call: Call, table: Table) -> Value:
        values = self._values(call)
        for item in self._select(call, table):
            self._apply(table, item, values, call.unset)
        return ""

    def _table_remove(self, call: Call, table: Table) -> Value:
        for item in self._select(call, table):
            if getattr(item, "builtin", False):
                raise CommandFailure("failure: can not remove default profile")
            if call.menu == ("file",):
                self.state.files.pop(item.name, None)  # the `flash` disk is not a file
            else:
                table.items(self.state).remove(item)
        return ""

    def _table_disable(self, call: Call, table: Table, disabled: bool = True) -> Value:
        for item in self._select(call, table):
            item.disabled = disabled
        return ""

    def _table_enable(self, call: Call, table: Table) -> Value:
        return self._table_disable(call, table, disabled=False)

    def _table_print(self, call: Call, table: Table) -> Value:
        items = self._matching(call, table)
        if "count-only" in call.flags:
            self.lines.append(str(len(items)))
        elif "detail" in call.flags and call.menu == ("file",):
            self.lines += render.print_file_detail(items, self.state)
        elif call.flags & {"terse", "detail"}:
            self.lines += render.print_terse(items, table.fields)
        else:
            self.lines += render.print_table(items, table.fields, v6=self.state.legacy_v6)
        return ""

    def _table_find(self, call: Call, table: Table) -> Value:
        return [item.id for _, item in self._matching(call, table)]

    # -- other commands ------------------------------------------------------------------

    def _cmd_export(self, call: Call) -> Value:
        state = self.state
        if state.legacy_v6:
            shown = "hide-sensitive" not in call.flags  # v6 shows secrets unless asked not to
        else:  # v7: only with show-sensitive, and only for a user with the sensitive policy
            shown = "show-sensitive" in call.flags and state.has_policy(self.user, "sensitive")
        lines, interrupted = render.export(state, show_sensitive=shown)
        if "file" in call.named:
            name = self.text(call.named["file"], call.menu)
            path = name if name.startswith("flash/") else state.backup_dir + name
            state.files[f"{path}.rsc"] = "".join(x + "\r\n" for x in lines).encode()
            return ""
        self._export_lines = (len(self.lines), len(self.lines) + len(lines))
        self.lines += lines
        if interrupted:
            raise _LineStopped
        return ""

    def _cmd_system_backup_save(self, call: Call) -> Value:
        state = self.state
        values = self._values(call)
        name = values.get("name") or f"{state.identity}-{datetime.now():%Y%m%d-%H%M}"
        encryption = values.get("encryption", "aes-sha256")
        if encryption not in ("aes-sha256", "rc4"):
            raise CommandFailure("input does not match any value of encryption")
        # Since 6.43, no password means an unencrypted backup; dont-encrypt=yes wins.
        password = values.get("password") or None
        if values.get("dont-encrypt") in ("yes", "true"):
            password = None
        if state.backup_save_error is not None:  # beeyev #62 (7.16.1): three lines
            if state.at_least(7, 16):
                self.lines.append("Saving system configuration")
            self.lines.append("Failed to save system configuration backup")
            raise CommandFailure(state.backup_save_error)
        if state.at_least(7, 17):  # eworm-de/routeros-scripts#90, beeyev #80
            self.lines.append("Saving system configuration")
        data = render.backup_bytes(state, password, encryption)
        filename = name if name.endswith(".backup") else f"{name}.backup"
        if not filename.startswith("flash/"):
            filename = state.backup_dir + filename  # MikroTik manual, File: `flash/`
        state.backups_saved += 1
        self._write_in_background(filename, data)
        self.lines.append("Configuration backup saved")
        return ""

    def _write_in_background(self, filename: str, data: bytes) -> None:
        """Write a `.backup` as RouterOS does: after the save prints, growing to its size.

        With no delay, write time or stall the file is complete at once. Otherwise it is
        listed after `backup_delay`, grows in four steps over `backup_write_time` (or stops
        at half with `backup_write_stalls`), and stops growing if it is removed meanwhile.
        """
        state = self.state
        if not (state.backup_delay > 0 or state.backup_write_time > 0 or state.backup_write_stalls):
            state.files[filename] = data
            return
        end = len(data) // 2 if state.backup_write_stalls else len(data)

        async def write() -> None:
            if state.backup_delay > 0:
                await asyncio.sleep(state.backup_delay)
            for step in range(1, 5):
                if step > 1:
                    await asyncio.sleep(state.backup_write_time / 4)
                    if filename not in state.files:
                        return  # removed while being written
                state.files[filename] = data[: end * step // 4]

        task = asyncio.get_running_loop().create_task(write())
        state._writers.add(task)
        task.add_done_callback(state._writers.discard)

    def _cmd_system_identity_print(self, call: Call) -> Value:
        self.lines.append(f"  name: {self.state.identity}")
        return ""

    def _cmd_system_identity_set(self, call: Call) -> Value:
        self.state.identity = self._values(call).get("name", self.state.identity)
        return ""

    def _cmd_system_identity_get(self, call: Call) -> Value:
        what = self.text(call.unnamed[0], call.menu) if call.unnamed else ""
        if what != "name":
            raise CommandFailure("input does not match any value of value-name")
        return self.state.identity

    def _cmd_system_reboot(self, call: Call) -> Value:
        self.state.reboots += 1
        return ""

    def _log(self, call: Call) -> Value:
        values = self._values(call)
        message = values.get("message") or (
            self.text(call.unnamed[0], call.menu) if call.unnamed else "")
        self.state.log.append(message)
        return ""

    _cmd_log_info = _cmd_log_warning = _cmd_log_error = _log

    def _cmd_put(self, call: Call) -> Value:
        self.lines.append(self.text(call.unnamed[0], call.menu) if call.unnamed else "")
        return ""

    def _cmd_len(self, call: Call) -> Value:
        """`:len`: the number of items of a list (`[find ...]`), or a string's length."""
        value = self.value(call.unnamed[0], call.menu) if call.unnamed else ""
        return str(len(value))

    def _cmd_if(self, call: Call) -> Value:
        """`:if (<expr>) do={...} else={...}`: run one block (Manual:Scripting)."""
        chosen = call.named.get("do" if self._condition(call) else "else")
        if chosen is not None:
            block = chosen.parts[0] if len(chosen.parts) == 1 else None
            if not isinstance(block, Block):
                raise CommandFailure("syntax error")
            cwd = call.menu
            for statement in block.statements:
                cwd, _ = self._execute(statement, cwd, top=True)
        return ""

    def _condition(self, call: Call) -> bool:
        word = call.unnamed[0] if call.unnamed else None
        if word is None or len(word.parts) != 1 or not isinstance(word.parts[0], Expression):
            raise CommandFailure("syntax error")
        words = word.parts[0].words
        values = [self.text(w, call.menu) for w in words]
        if len(values) == 1:
            return values[0] in ("true", "yes") or (values[0].isdigit() and values[0] != "0")
        if len(values) != 3 or words[1].plain not in _COMPARE:
            raise CommandFailure("syntax error")
        left: Any = values[0]
        right: Any = values[2]
        if left.lstrip("-").isdigit() and right.lstrip("-").isdigit():
            left, right = int(left), int(right)
        return bool(_COMPARE[str(words[1].plain)](left, right))

