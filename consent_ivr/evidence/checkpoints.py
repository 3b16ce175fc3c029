"""Signed checkpoints of the ledger head, kept twice: in the database and in a file outside it.

A checkpoint says "the ledger had N entries and its newest hash was H at time T", signed with
the Ed25519 key named by its key id. The signature pins the ledger: a database rewritten with
recomputed hashes no longer matches the signed hash at N. The same checkpoint is appended as
one JSON line to ``evidence.checkpoints`` (fsync'd, owner read/write only), which should live
on other storage than the database: someone who holds the key and rewrites the database, its
checkpoints included, still disagrees with the lines already written there.

A checkpoint is written in its own transaction, after the events it covers committed: it takes
no ledger lock (it writes no event) and reads the head as committed. Its line is appended after
its commit, so a line in the file always names a checkpoint that exists (a crash in between
leaves a checkpoint without its line, which `verify` reports as a warning, not a forgery).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_ivr.clock import iso, now
from consent_ivr.evidence.keys import Signer
from consent_ivr.store.chain import canonical
from consent_ivr.store.db import Database
from consent_ivr.store.models import Checkpoint, LedgerHead

FIELDS = ("id", "ledger_seq", "ledger_hash", "at", "key_id", "signature")


def message(entry: dict[str, Any]) -> bytes:
    """What a checkpoint's signature covers."""
    return canonical(
        {
            "type": "consent-ivr ledger checkpoint",
            "ledger_seq": entry["ledger_seq"],
            "ledger_hash": entry["ledger_hash"],
            "at": entry["at"],
            "key_id": entry["key_id"],
        }
    ).encode()


def as_dict(cp: Checkpoint) -> dict[str, Any]:
    return {
        "id": cp.id,
        "ledger_seq": cp.ledger_seq,
        "ledger_hash": cp.ledger_hash,
        "at": iso(cp.at),
        "key_id": cp.key_id,
        "signature": cp.signature,
    }


def latest(session: Session) -> Checkpoint | None:
    return session.scalars(select(Checkpoint).order_by(Checkpoint.id.desc()).limit(1)).first()


def make(
    session: Session, signer: Signer | None, at: datetime, *, force: bool = False
) -> Checkpoint | None:
    """A checkpoint of the current ledger head, or None when there is nothing new to sign:
    an empty ledger, or the newest checkpoint already covers the head with this key."""
    head = session.get(LedgerHead, 1)
    if head is None or head.seq == 0:
        return None
    last = latest(session)
    key = signer.key_id if signer else None
    if (
        not force
        and last is not None
        and (last.ledger_seq, last.ledger_hash) == (head.seq, head.hash)
        and (last.key_id == key or key is None)
    ):
        return None
    entry = {"ledger_seq": head.seq, "ledger_hash": head.hash, "at": iso(at), "key_id": key}
    cp = Checkpoint(
        ledger_seq=head.seq,
        ledger_hash=head.hash,
        at=at,
        key_id=key,
        signature=signer.sign(message(entry)) if signer else None,
    )
    session.add(cp)
    session.flush()
    return cp


def append_line(path: Path, entry: dict[str, Any]) -> None:
    """Append one checkpoint to the external file and fsync it (created mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps({k: entry[k] for k in FIELDS}, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint(
    db: Database, path: Path, signer: Signer | None, *, force: bool = False
) -> dict[str, Any] | None:
    """Make a checkpoint when the ledger moved (or `force`), and append it to the file.
    Blocking: call it from a worker thread in the service."""
    with db.session() as session:
        cp = make(session, signer, now(), force=force)
        entry = as_dict(cp) if cp is not None else None
    if entry is not None:
        append_line(path, entry)
    return entry


def read_file(path: Path) -> list[tuple[int, dict[str, Any] | str]]:
    """The file's lines by number: each a checkpoint, or a text saying why it is not one."""
    lines: list[tuple[int, dict[str, Any] | str]] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                entry = json.loads(text)
            except json.JSONDecodeError as e:
                lines.append((number, f"not JSON ({e.msg})"))
                continue
            if (
                not isinstance(entry, dict)
                or set(entry) != set(FIELDS)
                or not isinstance(entry["id"], int)
                or not isinstance(entry["ledger_seq"], int)
            ):
                lines.append((number, f"expected a checkpoint: {', '.join(FIELDS)}"))
                continue
            lines.append((number, entry))
    return lines
