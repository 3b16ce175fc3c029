"""What `verify` finds: problems (the evidence does not hold), warnings (it holds, with a
caveat a person should know) and notes (facts, such as an erasure by policy)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class Finding:
    """One broken link or fact, named as precisely as the evidence allows."""

    what: str  # the field, file or ledger entry
    message: str
    record: str | None = None
    seq: int | None = None  # the event's sequence number in its record
    expected: Any = None
    found: Any = None

    def __str__(self) -> str:
        where = " ".join(
            part
            for part in (
                f"record {self.record}" if self.record else "",
                f"event {self.seq}" if self.seq is not None else "",
                self.what,
            )
            if part
        )
        text = f"{where}: {self.message}"
        if self.expected is not None or self.found is not None:
            text += f" (expected {_shown(self.expected)}, found {_shown(self.found)})"
        return text


@dataclass
class Report:
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def lines(self) -> list[str]:
        out = [f"PROBLEM {f}" for f in self.problems]
        out += [f"warning {f}" for f in self.warnings]
        out += [f"note    {f}" for f in self.notes]
        counted = ", ".join(f"{name} {n}" for name, n in self.counts.items())
        verdict = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        out.append(f"verified: {counted or 'nothing'}: {verdict}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts,
            "problems": [{**asdict(f), "text": str(f)} for f in self.problems],
            "warnings": [{**asdict(f), "text": str(f)} for f in self.warnings],
            "notes": [{**asdict(f), "text": str(f)} for f in self.notes],
        }
