"""Evidence the database could not take, kept on local disk until it can.

Theory of operation
-------------------
When a call ends and its last write fails (the database is down or unreachable), everything
that write carried — the call and its records if they were never opened, the evidence collected
since the last successful write, each record's outcome, the stored recording — is saved as one
JSON file per call in the journal folder: written to a temporary name, fsync'd, renamed, the
folder fsync'd, owner-only. Nothing of it is in memory only once `save` returns.

`replay` writes each entry in one transaction (opening the call first when it never was) and
removes the file only after the commit; an entry whose call the database already shows as ended
was applied before (by a replay that stopped before removing the file) and is just removed. The
running service replays the journal at start and every few seconds; the recording's copy on
Asterisk is deleted only once its row is committed.

A decision is never journaled: when it cannot be stored the caller is told so and the outcome is
`failed`; the journal only keeps the evidence of what happened.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_ivr.store import records as store
from consent_ivr.store.chain import Evidence
from consent_ivr.store.db import Database
from consent_ivr.store.models import Call
from consent_ivr.store.records import NewCall, NewRecord, RecordingInfo, Subject

log = logging.getLogger(__name__)

VERSION = 1


def entry(
    new: NewCall,
    records: list[NewRecord],
    ids: tuple[str, list[str]] | None,
    evidence: list[Evidence],
    outcomes: list[str],
    ended_at: datetime,
    recording: RecordingInfo | None,
) -> dict[str, Any]:
    """What a call's failed last write carried, as plain JSON."""
    return {
        "version": VERSION,
        "call": {**asdict(new), "started_at": new.started_at.isoformat()},
        "records": [asdict(r) for r in records],
        "ids": list(ids) if ids else None,
        "evidence": [
            {"at": e.at.isoformat(), "kind": e.kind, "step": e.step, "data": e.data}
            for e in evidence
        ],
        "outcomes": outcomes,
        "ended_at": ended_at.isoformat(),
        "recording": asdict(recording) if recording else None,
    }


def save(folder: Path, name: str, data: dict[str, Any]) -> Path:
    """Write one entry durably (see the module docstring); its path."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{name}.json"
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def pending(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _new_call(data: dict[str, Any]) -> NewCall:
    fields = dict(data)
    fields["subject"] = Subject(**fields["subject"])
    fields["started_at"] = datetime.fromisoformat(fields["started_at"])
    return NewCall(**fields)


def apply(session: Session, data: dict[str, Any]) -> bool:
    """Write one entry in the caller's transaction; False when it was applied already."""
    new = _new_call(data["call"])
    ids = data["ids"]
    if ids is None:
        existing = session.scalars(
            select(Call).where(Call.channel_id == new.channel_id, Call.started_at == new.started_at)
        ).first()
        if existing is not None:
            if existing.ended_at is not None:
                return False
            opened = store.records_of_call(session, existing.call_id)
            ids = [existing.call_id, [r.record_id for r in opened]]
        else:
            call_id, record_ids = store.open_call(
                session, new, [NewRecord(**r) for r in data["records"]]
            )
            ids = [call_id, record_ids]
    call_id, record_ids = ids
    call = session.get(Call, call_id)
    if call is None:
        raise LookupError(f"journal entry names call {call_id}, which the database has not")
    if call.ended_at is not None:
        return False
    evidence = [
        Evidence(datetime.fromisoformat(e["at"]), e["kind"], e["step"], e["data"])
        for e in data["evidence"]
    ]
    items = [(r, ev) for r in record_ids for ev in evidence]
    outcomes = dict(zip(record_ids, data["outcomes"], strict=False))
    for r in record_ids:
        outcomes.setdefault(r, "failed")
    recording = RecordingInfo(**data["recording"]) if data["recording"] else None
    store.finish_call(
        session, call_id, outcomes, datetime.fromisoformat(data["ended_at"]), items, recording
    )
    return True


def replay(db: Database, folder: Path) -> list[dict[str, Any]]:
    """Write every entry the database takes now; the entries written (blocking: run it in a
    worker thread). An entry that fails stays for the next replay."""
    done = []
    for path in pending(folder):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            with db.session() as session:
                applied = apply(session, data)
        except (ValueError, KeyError, TypeError, LookupError) as e:
            # Not the database's fault: kept aside for a person to look at, not retried.
            log.error("journal entry %s cannot be written (%s): kept as .bad", path.name, e)
            path.rename(path.with_suffix(".bad"))
            continue
        except Exception as e:
            log.warning("journal entry %s not written yet: %s", path.name, type(e).__name__)
            break  # the database is still away: try again later, in order
        path.unlink()
        if applied:
            log.info("journal entry %s written to the database", path.name)
            done.append(data)
    return done
