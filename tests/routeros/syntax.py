"""RouterOS console syntax: statements, words, quoting and `[...]` substitutions.

A parse turns one command line into statements. A statement is a list of words; a word is a
list of parts (literal text, a `[...]` substitution, a `$variable`, a `{...}` block of
statements as in `do={...}`, a `(...)` expression as in `:if (... = 0)`), concatenated when
the word is evaluated. Errors carry the character offset, so the caller can say
`(line L column C)` exactly as RouterOS does.

The rules that matter for a client's safety are the router's: an unquoted `;` or newline ends
the statement, an unquoted `[` opens a command substitution, and inside `"..."` a `$[...]` is a
substitution too (run when the value is evaluated) unless the `$` is escaped as `\\$`.

Escapes inside strings are the ones Manual:Scripting lists: `\\"`, `\\\\`, `\\$`, `\\?`,
`\\_` (space), `\\a \\b \\f \\n \\r \\t \\v`, and `\\XX` with two *upper-case* hex digits: a
lower-case `\\e9` is not the byte 0xE9 (it reads as `e` then `9`), so a client that escapes
in lower case sends something else than it meant.
"""

from __future__ import annotations

from dataclasses import dataclass

_ESCAPES = {
    '"': '"', "\\": "\\", "$": "$", "?": "?", "_": " ",
    "n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
}
_HEX = "0123456789ABCDEF"  # upper case only (Manual:Scripting)
_WORD_END = " \t\r\n;]})"
_CLOSERS = "])}"
_IDENT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"


class RouterOSSyntaxError(Exception):
    """A console error tied to a position: `syntax error`, `bad command name x`, ..."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos

    def render(self, src: str) -> str:
        line, column = location(src, self.pos)
        return f"{self.message} (line {line} column {column})"


@dataclass(frozen=True)
class Literal:
    text: str
    pos: int
    quoted: bool = False


@dataclass(frozen=True)
class Variable:
    name: str
    pos: int


@dataclass(frozen=True)
class Substitution:
    statements: tuple[Statement, ...]
    pos: int
    text: str
    in_string: bool


@dataclass(frozen=True)
class Block:
    """`{...}`: statements run when a command decides to (`:if ... do={...}`)."""

    statements: tuple[Statement, ...]
    pos: int
    text: str


@dataclass(frozen=True)
class Expression:
    """`(...)`: words of an expression, e.g. `[:len [find]]`, `=`, `0`."""

    words: tuple[Word, ...]
    pos: int
    text: str


Part = Literal | Variable | Substitution | Block | Expression


@dataclass(frozen=True)
class Word:
    parts: tuple[Part, ...]
    pos: int

    @property
    def plain(self) -> str | None:
        """The text of a word made only of unquoted literal text, else None."""
        if all(isinstance(p, Literal) and not p.quoted for p in self.parts):
            return "".join(p.text for p in self.parts if isinstance(p, Literal))
        return None

    def split_named(self) -> tuple[str, Word] | None:
        """`name=value` -> (name, value word); the `=` must be unquoted, in the first part."""
        first = self.parts[0] if self.parts else None
        if not isinstance(first, Literal) or first.quoted or "=" not in first.text:
            return None
        name, _, rest = first.text.partition("=")
        value_pos = first.pos + len(name) + 1
        head = (Literal(rest, value_pos),) if rest else ()
        return name, Word(head + self.parts[1:], value_pos)


@dataclass(frozen=True)
class Statement:
    words: tuple[Word, ...]
    pos: int
    text: str


def location(src: str, pos: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    line_start = src.rfind("\n", 0, pos) + 1
    return src.count("\n", 0, pos) + 1, pos - line_start + 1


def parse(src: str) -> tuple[Statement, ...]:
    """Parse a command line (or script) into statements; raise RouterOSSyntaxError."""
    return _Parser(src).block(None)


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.i = 0

    def _peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.src[j] if j < len(self.src) else ""

    def _continuation(self) -> None:
        """Skip `\\`, the line break (`\\n` or `\\r\\n`) and the next line's indent."""
        self.i += 1
        if self._peek() == "\r":
            self.i += 1
        if self._peek() == "\n":
            self.i += 1
        while self._peek() in (" ", "\t") and self._peek():
            self.i += 1

    def block(self, opened_at: int | None, closer: str = "]") -> tuple[Statement, ...]:
        """Statements up to the end of input, or up to the `]` (`}`) closing what opened."""
        statements: list[Statement] = []
        words: list[Word] = []

        def flush() -> None:
            if words:
                start = words[0].pos
                text = self.src[start:self.i].strip(" \t\r\n;")
                statements.append(Statement(tuple(words), start, text))
                words.clear()

        while True:
            c = self._peek()
            if c == "":
                if opened_at is not None:
                    raise RouterOSSyntaxError("syntax error", opened_at)
                flush()
                return tuple(statements)
            if c in " \t\r":
                self.i += 1
            elif c == "\\" and self._peek(1) in ("\n", "\r"):
                self._continuation()  # as in exported scripts
            elif c in ";\n":
                flush()
                self.i += 1
            elif c in _CLOSERS:
                if opened_at is None or c != closer:
                    raise RouterOSSyntaxError("syntax error", self.i)
                flush()
                self.i += 1
                return tuple(statements)
            elif c == "#" and not words:
                while self._peek() not in ("", "\n"):
                    self.i += 1
            else:
                words.append(self._word())

    def _word(self) -> Word:
        start = self.i
        parts: list[Part] = []
        buf: list[str] = []
        buf_pos = start

        def flush() -> None:
            if buf:
                parts.append(Literal("".join(buf), buf_pos))
                buf.clear()

        while (c := self._peek()) != "" and c not in _WORD_END:
            if c == '"':
                flush()
                parts.extend(self._quoted())
                buf_pos = self.i
            elif c == "[" or (c == "$" and self._peek(1) == "["):
                flush()
                parts.append(self._substitution(in_string=False))
                buf_pos = self.i
            elif c == "{":
                flush()
                parts.append(self._block())
                buf_pos = self.i
            elif c == "(":
                flush()
                parts.append(self._expression())
                buf_pos = self.i
            elif c == "$" and self._peek(1) in _IDENT and self._peek(1):
                flush()
                parts.append(self._variable())
                buf_pos = self.i
            elif c == "\\" and self._peek(1):
                if not buf:
                    buf_pos = self.i
                buf.append(self._peek(1))
                self.i += 2
            else:
                if not buf:
                    buf_pos = self.i
                buf.append(c)
                self.i += 1
        flush()
        return Word(tuple(parts), start)

    def _variable(self) -> Variable:
        pos = self.i
        self.i += 1
        while self._peek() and self._peek() in _IDENT:
            self.i += 1
        return Variable(self.src[pos + 1:self.i], pos)

    def _substitution(self, *, in_string: bool) -> Substitution:
        pos = self.i
        self.i += 2 if self._peek() == "$" else 1
        body_start = self.i
        statements = self.block(pos)
        return Substitution(statements, pos, self.src[body_start:self.i - 1], in_string)

    def _block(self) -> Block:
        pos = self.i
        self.i += 1
        statements = self.block(pos, "}")
        return Block(statements, pos, self.src[pos + 1:self.i - 1])

    def _expression(self) -> Expression:
        pos = self.i
        self.i += 1
        words: list[Word] = []
        while True:
            c = self._peek()
            if c == "":
                raise RouterOSSyntaxError("syntax error", pos)
            if c in " \t":
                self.i += 1
            elif c == ")":
                self.i += 1
                return Expression(tuple(words), pos, self.src[pos + 1:self.i - 1])
            elif c in ";\n]}":
                raise RouterOSSyntaxError("syntax error", self.i)
            else:
                words.append(self._word())

    def _quoted(self) -> list[Part]:
        """A `"..."` string: literal runs (escapes decoded) and `$[...]`/`$var` parts."""
        opened_at = self.i
        self.i += 1
        parts: list[Part] = []
        text: list[str] = []
        raw = bytearray()  # consecutive \XX escapes form UTF-8 bytes
        text_pos = self.i

        def flush_raw() -> None:
            if raw:
                text.append(raw.decode("utf-8", errors="replace"))
                raw.clear()

        def flush() -> None:
            flush_raw()
            parts.append(Literal("".join(text), text_pos, quoted=True))
            text.clear()

        while True:
            c = self._peek()
            if c == "":
                raise RouterOSSyntaxError("syntax error", opened_at)
            if c == '"':
                self.i += 1
                flush()
                return parts
            if c == "\\":
                nxt, nxt2 = self._peek(1), self._peek(2)
                if nxt and nxt in _HEX and nxt2 and nxt2 in _HEX:
                    raw.append(int(nxt + nxt2, 16))
                    self.i += 3
                    continue
                flush_raw()
                if nxt in ("\n", "\r"):
                    self._continuation()
                    continue
                if nxt == "":
                    raise RouterOSSyntaxError("syntax error", opened_at)
                text.append(_ESCAPES.get(nxt, nxt))
                self.i += 2
            elif c == "$" and self._peek(1) == "[":
                flush()
                parts.append(self._substitution(in_string=True))
                text_pos = self.i
            elif c == "$" and self._peek(1) and self._peek(1) in _IDENT:
                flush()
                parts.append(self._variable())
                text_pos = self.i
            else:
                flush_raw()
                text.append(c)
                self.i += 1


_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/@,+*!%^&|~<>'"
)
_QUOTE_ESCAPES = {'"': '\\"', "\\": "\\\\", "$": "\\$", "?": "\\?",
                  "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(value: str) -> str:
    """A value as RouterOS prints it in export and terse output: bare when safe, else quoted."""
    if value and all(c in _SAFE for c in value):
        return value
    out: list[str] = []
    for c in value:
        if c in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[c])
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.extend(f"\\{b:02X}" for b in c.encode("utf-8"))
    return '"' + "".join(out) + '"'
