"""A MikroTik RouterOS 7 (or 6) router emulated over SSH, for tests and benchmarks.

    async with RouterOSServer(RouterState()) as router:
        async with asyncssh.connect("127.0.0.1", router.port, username="admin+ct",
                                    password="secret", known_hosts=None) as conn:
            result = await conn.run("/ppp secret print terse")

Modules: `syntax` (tokenizer and parser), `state` (configuration, knobs, records), `menus`
(the command tree), `compiler` (resolving a statement's command and arguments),
`interpreter` (running statements, table verbs), `commands` (export, backup save, identity,
log, `:put`/`:len`/`:if`), `render` (print, export, backup bytes), `sftp` (in-memory SFTP),
`server` (the SSH server and fleets). Each behaviour taken from real routers names its
source where it is modelled (`state.RouterState` lists the knobs).
"""

from __future__ import annotations

from .interpreter import CommandFailure, Interpreter, Result
from .render import MAGIC_AES, MAGIC_PLAIN, MAGIC_RC4
from .server import RouterFleet, RouterOSServer, default_host_key
from .state import ActiveSession, InjectedError, Profile, RouterState, Secret
from .syntax import RouterOSSyntaxError, parse, quote

__all__ = [
    "MAGIC_AES",
    "MAGIC_PLAIN",
    "MAGIC_RC4",
    "ActiveSession",
    "CommandFailure",
    "InjectedError",
    "Interpreter",
    "Profile",
    "Result",
    "RouterFleet",
    "RouterOSServer",
    "RouterOSSyntaxError",
    "RouterState",
    "Secret",
    "default_host_key",
    "parse",
    "quote",
]
