"""Device addresses: a DNS name, an IPv4 address or an IPv6 address (``::1``, ``2001:db8::1``).

One rule for every route that takes a device's ``host``. An IPv6 address is stored in
its compressed form without brackets (what asyncssh and ``ipaddress`` take); a URL-style
``[2001:db8::1]`` is accepted and unwrapped.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

HOSTNAME: Final = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$"
)


def check_host(value: str) -> str:
    """``value`` as stored, or ValueError saying what a host may be."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            raise ValueError(f"{value!r} is not a valid IPv6 address") from None
    if HOSTNAME.match(text):
        return text
    raise ValueError("must be a hostname, an IPv4 address or an IPv6 address")
