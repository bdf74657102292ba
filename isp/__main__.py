"""`python -m isp` runs the `isp` command."""

from __future__ import annotations

from isp.cli import main

main()
