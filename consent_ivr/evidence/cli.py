"""`consent-ivr` commands of the evidence part (verify, export, keys, checkpoint, purge)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any) -> None:
    """Register this part's subcommands on the main parser's subparsers."""
    del sub


__all__ = ["add_commands", "argparse"]
