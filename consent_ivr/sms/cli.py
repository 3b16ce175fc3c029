"""`consent-ivr` commands of the SMS part."""

from __future__ import annotations

from typing import Any


def add_commands(sub: Any) -> None:
    """Register this part's subcommands on the main parser's subparsers."""
    del sub
