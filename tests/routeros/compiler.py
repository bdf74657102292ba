"""Compiling a statement: find its command in the menu tree and sort its arguments.

RouterOS compiles a whole line before running any of it, so `bad command name`, `syntax
error` and `expected end of command` (unknown argument, extra value) mean nothing ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .menus import COMMANDS, MENUS, TABLES, Path, Spec, spec_for
from .state import RouterState
from .syntax import Block, Expression, Literal, RouterOSSyntaxError, Statement, Substitution, Word

# (property, value or None for a flag, negated, operator: "=" equals, "~" regex match)
Condition = tuple[str, Word | None, bool, str]


@dataclass
class Call:
    path: Path
    spec: Spec
    statement: Statement
    named: dict[str, Word] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)
    unnamed: list[Word] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    where: list[Condition] = field(default_factory=list)

    @property
    def menu(self) -> Path:
        return self.path[:-1]


def check(statements: tuple[Statement, ...], cwd: Path, state: RouterState) -> None:
    """Resolve every statement, substitutions included; raise what RouterOS reports."""
    for statement in statements:
        call = resolve(statement, cwd, state)
        if isinstance(call, tuple):
            cwd = call
            continue
        words = [*call.named.values(), *call.unnamed, *(c[1] for c in call.where if c[1])]
        _check_words(words, call.menu, state)


def _check_words(words: list[Word], menu: Path, state: RouterState) -> None:
    """Substitutions, blocks and expressions are compiled with the line, before it runs."""
    for word in words:
        for part in word.parts:
            if isinstance(part, Substitution | Block):
                check(part.statements, menu, state)
            elif isinstance(part, Expression):
                _check_words(list(part.words), menu, state)


def resolve(statement: Statement, cwd: Path, state: RouterState) -> Call | Path:
    """Find the command (or the menu, for a bare `/ppp secret`) and sort its arguments."""
    path = cwd
    words = list(statement.words)
    while words:
        word = words.pop(0)
        text = word.plain
        if text is None:
            raise RouterOSSyntaxError("bad command name", word.pos)
        offset = word.pos
        if text.startswith("/"):
            path, text, offset = (), text[1:], offset + 1
        segments = text.split("/")
        for n, segment in enumerate(segments):
            if segment == "..":
                path = path[:-1]
            elif segment and (*path, segment) in MENUS:
                path = (*path, segment)
            elif segment and (*path, segment) in COMMANDS:
                if n != len(segments) - 1:
                    bad = offset + len(segment) + 1
                    raise RouterOSSyntaxError(f"bad command name {segments[n + 1]}", bad)
                full = (*path, segment)
                return _arguments(Call(full, spec_for(full, state), statement), words)
            elif segment:
                raise RouterOSSyntaxError(f"bad command name {segment}", offset)
            offset += len(segment) + 1
    return path


def _arguments(call: Call, words: list[Word]) -> Call:
    spec = call.spec
    table = TABLES.get(call.menu)
    properties = {"comment", *table.fields, *table.writable} if table else set()
    in_where = False
    for word in words:
        named = word.split_named()
        plain = word.plain
        if in_where:
            if plain == "and":
                continue
            if named and named[0] in properties:
                call.where.append((named[0], named[1], False, "="))
                continue
            matched = _regex_condition(word)
            if matched and matched[0] in properties:
                call.where.append((matched[0], matched[1], False, "~"))
                continue
            if plain and plain.lstrip("!") in properties | {"disabled"}:
                call.where.append((plain.lstrip("!"), None, plain.startswith("!"), "="))
                continue
        elif named:
            if named[0] in spec.args:
                call.named[named[0]] = named[1]
                continue
        elif plain == "where" and spec.where:
            in_where = True
            continue
        elif plain is not None and plain in spec.flags:
            call.flags.add(plain)
            continue
        elif spec.unset and plain and plain.startswith("!") and plain[1:] in spec.args:
            call.unset.append(plain[1:])
            continue
        elif len(call.unnamed) < spec.unnamed:
            call.unnamed.append(word)
            continue
        raise RouterOSSyntaxError("expected end of command", word.pos)
    return call


def _regex_condition(word: Word) -> tuple[str, Word] | None:
    """`name~"x"` -> (name, value word): the `~` regex match of a `where` clause."""
    first = word.parts[0] if word.parts else None
    if not isinstance(first, Literal) or first.quoted or "~" not in first.text:
        return None
    name, _, rest = first.text.partition("~")
    pos = first.pos + len(name) + 1
    head = (Literal(rest, pos),) if rest else ()
    return name, Word(head + word.parts[1:], pos)
