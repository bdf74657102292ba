"""Run a command line against a `RouterState`, printing what RouterOS would print.

Like the router, a line is compiled whole first: a syntax error, a `bad command name` or an
`expected end of command` anywhere means nothing runs. Then statements run in order; a runtime
error (`failure: ...`, `no such item`, ...) is printed and stops the rest of the line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from . import render
from .commands import DENIED, CommandFailure, Commands, LineStopped
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




@dataclass
class Result:
    output: str
    export_span: tuple[int, int] | None = None  # where the export text sits in `output`


class Interpreter(Commands):
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
        except LineStopped:
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
