"""The emulator's commands outside tables: export, backup save, identity, log, scripting.

A mixin of `Interpreter` (which resolves statements and runs the table verbs); each
`_cmd_<path>` method is found by name from the command's path (`/system backup save` ->
`_cmd_system_backup_save`, `:if` -> `_cmd_if`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import render
from .syntax import Block, Expression

if TYPE_CHECKING:
    from .compiler import Call
    from .menus import Path
    from .state import RouterState
    from .syntax import Statement, Word

Value = str | list[str]
DENIED = "not enough permissions (9)"

_COMPARE = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
}


class CommandFailure(Exception):
    """A runtime error: its text is printed, and the rest of the line does not run."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LineStopped(Exception):
    """The line ends here with nothing more printed (an export that wrote `#interrupted`)."""


class Commands:
    """`_cmd_*` handlers; `Interpreter` provides the state and the evaluation helpers."""

    state: RouterState
    user: str
    lines: list[str]
    _export_lines: tuple[int, int] | None

    if TYPE_CHECKING:
        def value(self, word: Word, menu: Path) -> Value: ...
        def text(self, word: Word, menu: Path) -> str: ...
        def _values(self, call: Call) -> dict[str, str]: ...
        def _execute(self, statement: Statement, cwd: Path, *, top: bool) -> tuple[Path, Value]: ...

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
            raise LineStopped
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

