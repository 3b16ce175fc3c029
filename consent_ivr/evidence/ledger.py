"""Checking the ledger: its links entry by entry, a record's proof up to a signed checkpoint,
and a checkpoint's signature. Pure functions over plain values, shared by the database check
and the bundle check.

A ledger proof for a record is the run of ledger entries from the one just before the record's
first event up to a checkpoint: ``start`` (that entry's seq and ledger hash) and ``entries``
(``[seq, event hash, ledger hash]`` each). Recomputing each link from the start must arrive at
the checkpoint's signed hash, and each of the record's events must sit in the proof under its
own hash, so none of them can have been changed, removed or added after that checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consent_ivr.evidence import checkpoints, keys
from consent_ivr.evidence.checks import Event
from consent_ivr.evidence.report import Finding
from consent_ivr.store.chain import GENESIS, ledger_hash


def _span(first: int, last: int) -> str:
    return f"ledger entry {first}" if first == last else f"ledger entries {first}..{last}"


class Walk:
    """Walks ledger entries in order from (seq, hash), checking every link."""

    def __init__(self, seq: int = 0, link: str = GENESIS) -> None:
        self.seq, self.hash = seq, link
        self.findings: list[Finding] = []

    def feed(
        self,
        seq: int,
        event_hash: str,
        link: str,
        *,
        prev: str | None = None,
        record: str | None = None,
        rseq: int | None = None,
    ) -> None:
        """One entry; `prev` is the entry's stored ledger_prev when there is one."""
        base: str | None = self.hash
        if seq <= self.seq:
            self.findings.append(
                Finding(f"ledger entry {seq}", "out of order", record, rseq, self.seq + 1, seq)
            )
            return
        if seq != self.seq + 1:
            self.findings.append(
                Finding(
                    _span(self.seq + 1, seq - 1),
                    "missing: events deleted (a whole record, or events with their record's head)",
                    None,
                    None,
                    self.seq + 1,
                    seq,
                )
            )
            base = prev
        elif prev is not None and prev != self.hash:
            self.findings.append(
                Finding(
                    f"ledger entry {seq} ledger_prev",
                    "does not link to the entry before it",
                    record,
                    rseq,
                    self.hash,
                    prev,
                )
            )
            base = prev
        if base is not None:
            computed = ledger_hash(seq, base, event_hash)
            if computed != link:
                self.findings.append(
                    Finding(
                        f"ledger entry {seq} ledger_hash",
                        "does not match the entry's content (rewritten)",
                        record,
                        rseq,
                        computed,
                        link,
                    )
                )
        self.seq, self.hash = seq, link


def proof_findings(
    record_id: str, events: Sequence[Event], proof: dict[str, Any], checkpoint: dict[str, Any]
) -> list[Finding]:
    """Recompute the proof's links up to the checkpoint, and find the record's events in it.
    KeyError, TypeError or ValueError when the proof is malformed."""
    start_seq, start_hash = int(proof["start"]["seq"]), str(proof["start"]["ledger_hash"])
    walk = Walk(start_seq, start_hash)
    if start_seq == 0 and start_hash != GENESIS:
        walk.findings.append(
            Finding("ledger proof start", "entry 0 is the genesis", None, None, GENESIS, start_hash)
        )
    held: dict[int, tuple[str, str]] = {}
    for seq, event_hash, link in proof["entries"]:
        walk.feed(int(seq), str(event_hash), str(link))
        held[int(seq)] = (str(event_hash), str(link))
    found = walk.findings
    signed = (checkpoint["ledger_seq"], checkpoint["ledger_hash"])
    if (walk.seq, walk.hash) != signed:
        found.append(
            Finding(
                f"checkpoint {checkpoint.get('id')}",
                "the ledger proof does not arrive at the checkpoint's entry and hash",
                record_id,
                None,
                f"{signed[0]} {signed[1]}",
                f"{walk.seq} {walk.hash}",
            )
        )
    for ev in events:
        entry = held.get(ev.ledger_seq)
        if entry is None:
            found.append(
                Finding(
                    "ledger_seq",
                    f"the event is not in the ledger proof (entries {start_seq + 1}..{walk.seq})",
                    record_id,
                    ev.seq,
                    None,
                    ev.ledger_seq,
                )
            )
        elif entry != (ev.hash, ev.ledger_hash):
            found.append(
                Finding(
                    f"ledger entry {ev.ledger_seq}",
                    "holds another event than this one",
                    record_id,
                    ev.seq,
                    f"{ev.hash} {ev.ledger_hash}",
                    f"{entry[0]} {entry[1]}",
                )
            )
    return found


def signature_findings(entry: dict[str, Any], trusted: dict[str, str]) -> list[Finding]:
    """A signed checkpoint's signature against the trusted public keys (by key id)."""
    what = f"checkpoint {entry.get('id')} (ledger entry {entry.get('ledger_seq')})"
    kid, signature = entry.get("key_id"), entry.get("signature")
    if signature is None:
        return []
    public = trusted.get(kid) if isinstance(kid, str) else None
    if public is None:
        return [
            Finding(
                what,
                "signed with a key that is not trusted (not in evidence.public_keys)",
                expected=", ".join(trusted) or "a configured key",
                found=kid,
            )
        ]
    if not keys.verify(public, checkpoints.message(entry), str(signature)):
        return [Finding(what, f"the signature does not verify with key {kid}: forged or altered")]
    return []
