"""What a person watching a campaign run sees: a live bar on a terminal (a line every few
seconds when the output is a file or a pipe), and the summary per outcome at the end."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TextIO

from consent_ivr.clock import now
from consent_ivr.dialing.campaign import RunFigures
from consent_ivr.dialing.store import Progress

WIDTH = 28


def when(at: datetime) -> str:
    """A moment and how far away it is: "2026-12-01 06:00 UTC (in 7 h 12 min)"."""
    left = max(int((at - now()).total_seconds()), 0)
    hours, rest = divmod(left, 3600)
    span = f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
    return f"{at:%Y-%m-%d %H:%M} UTC (in {span})"


def outcomes_text(outcomes: dict[str, int]) -> str:
    return " · ".join(f"{k} {v}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]))


def line(name: str, p: Progress, figures: RunFigures, waiting: datetime | None) -> str:
    done = p.finished
    filled = int(WIDTH * done / p.total) if p.total else WIDTH
    bar = "#" * filled + "-" * (WIDTH - filled)
    parts = [
        f"{name} [{bar}] {done}/{p.total}",
        f"{p.in_call} in call",
        f"{figures.calls_per_second():.1f} calls/s",
    ]
    if waiting is not None:
        parts.append(f"waiting for the calling window until {when(waiting)}")
    if p.outcomes:
        parts.append(outcomes_text(p.outcomes))
    return "  ".join(parts[:1]) + "  " + " · ".join(parts[1:])


class Display:
    def __init__(self, stream: TextIO, *, interval_s: float | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval_s = interval_s if interval_s is not None else (0.2 if self.tty else 5.0)
        self._last = 0.0
        self._shown = ""

    def show(self, text: str, *, force: bool = False) -> None:
        t = time.monotonic()
        if not force and (t - self._last < self.interval_s or text == self._shown):
            return
        self._last, self._shown = t, text
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        """A line of its own (the bar is redrawn below it)."""
        if self.tty and self._shown:
            self.stream.write("\r\x1b[2K")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._shown = ""

    def close(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()


def summary(name: str, p: Progress, figures: RunFigures) -> str:
    lines = [f"campaign {name}: {p.total} numbers, {p.finished} finished"]
    width = max((len(k) for k in p.outcomes), default=8)
    for outcome, count in sorted(p.outcomes.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {outcome:<{width}}  {count:>6}")
    if p.in_call:
        lines.append(f"  {'in call':<{width}}  {p.in_call:>6}")
    if p.pending:
        lines.append(f"  {'to dial':<{width}}  {p.pending:>6}")
    elapsed = time.monotonic() - figures.started
    lines.append(
        f"this run: {figures.placed} calls placed in {elapsed:.1f} s "
        f"({figures.calls_per_second():.2f} calls/s), at most {figures.max_in_call} at once"
    )
    return "\n".join(lines)
