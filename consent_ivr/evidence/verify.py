"""`consent-ivr verify`: the evidence in the database, all of it or one record's.

All of it: the ledger entry by entry (contiguous 1..head, every link, the head row); every
record's chain, head and caches recomputed from its events, its subject's numbers against the
commitment; every recording and every prompt audio an event names, re-hashed; every checkpoint
against the ledger entry it signs and its signature against ``evidence.public_keys``; and the
external checkpoint file line by line against the database. One record: the same for that
record, plus the ledger proof from its first event to the checkpoint that covers its last.

Reads are paged, never one query per record: the ledger in pages of entries, the records a
page of calls at a time with their events in one query, so `verify --all` costs a few queries
per thousand records. Each audio file is hashed once however many records name it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_ivr import audio
from consent_ivr.config import Config
from consent_ivr.evidence import checkpoints, checks, keys
from consent_ivr.evidence.checks import Event
from consent_ivr.evidence.ledger import Walk, proof_findings, signature_findings
from consent_ivr.evidence.report import Finding, Report
from consent_ivr.prompts import archive_dir, archived_path, sha256_file
from consent_ivr.store.models import Call, Checkpoint, ConsentEvent, ConsentRecord, LedgerHead

CALL_PAGE = 500
LEDGER_PAGE = 20_000
EVENT_COLUMNS = tuple(getattr(ConsentEvent, name) for name in Event._fields)


class Files:
    """SHA-256 of audio files on disk, each file hashed once."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self._recordings: dict[Path, str | None] = {}
        self._prompts: dict[str, tuple[str, str | None]] = {}

    @staticmethod
    def _hash(path: Path) -> str | None:
        return sha256_file(path) if path.is_file() else None

    def sha256(self, path: Path) -> str | None:
        """A recording's hash: of its plain audio, also when it is encrypted at rest."""
        if path not in self._recordings:
            found: str | None = None
            try:
                plain = audio.read(path) if path.is_file() else None
                found = hashlib.sha256(plain).hexdigest() if plain else None
            except audio.RecordingKeyError as e:
                found = checks.Unreadable(str(e))
            self._recordings[path] = found
        return self._recordings[path]

    def prompt(self, sha: Any) -> tuple[str, str | None]:
        key = str(sha)
        if key not in self._prompts:
            path = archived_path(self.archive, key)
            self._prompts[key] = (str(path), self._hash(path))
        return self._prompts[key]

    def forget_recordings(self) -> None:
        """A recording is named by one call only: forget their hashes page by page."""
        self._recordings.clear()


def events_of(session: Session, record_ids: Sequence[str]) -> dict[str, list[Event]]:
    """The events of these records, in chain order, in one query."""
    grouped: dict[str, list[Event]] = {rid: [] for rid in record_ids}
    if not record_ids:
        return grouped
    query = (
        select(*EVENT_COLUMNS)
        .where(ConsentEvent.record_id.in_(record_ids))
        .order_by(ConsentEvent.record_id, ConsentEvent.seq)
    )
    for row in session.execute(query):
        grouped[row.record_id].append(Event(*row))
    return grouped


def ledger_proof(session: Session, events: Sequence[Event], end: int) -> dict[str, Any]:
    """The ledger entries from just before the first of `events` up to entry `end`."""
    start = events[0].ledger_seq - 1
    rows = session.execute(
        select(ConsentEvent.ledger_seq, ConsentEvent.hash, ConsentEvent.ledger_hash)
        .where(ConsentEvent.ledger_seq > start, ConsentEvent.ledger_seq <= end)
        .order_by(ConsentEvent.ledger_seq)
    )
    return {
        "start": {"seq": start, "ledger_hash": events[0].ledger_prev},
        "entries": [[seq, event_hash, link] for seq, event_hash, link in rows],
    }


def covering(session: Session, ledger_seq: int, trusted: dict[str, str]) -> Checkpoint | None:
    """The first checkpoint at or after `ledger_seq`: a trusted signed one when there is one."""
    after = list(
        session.scalars(
            select(Checkpoint)
            .where(Checkpoint.ledger_seq >= ledger_seq)
            .order_by(Checkpoint.ledger_seq, Checkpoint.id)
        )
    )
    signed = [cp for cp in after if cp.signature is not None and cp.key_id in trusted]
    return next(iter(signed or after), None)


# ---- one record and its call -------------------------------------------------------------------


def check(
    report: Report, record: ConsentRecord, call: Call | None, events: list[Event], files: Files
) -> None:
    rid = record.record_id
    erased = checks.check_record(
        report, rid, events, checks.columns(record, call), checks.subject(record, call)
    )
    if call is None:
        report.problems.append(
            Finding("call_id", "its call row is missing", rid, None, record.call_id, None)
        )
        return
    path = Path(call.recording_path) if call.recording_path else None
    call_erased = call.erased_at is not None
    checks.audio_findings(
        report,
        rid,
        events,
        lambda _data: (
            str(path or "(calls.recording_path is empty)"),
            files.sha256(path) if path else None,
        ),
        files.prompt,
        recording_gone=call_erased,
    )
    if call_erased and not erased:
        report.problems.append(
            Finding("call.erased_at", "the call was erased but this record was not", rid)
        )
    if call_erased and path is not None and files.sha256(path) is not None:
        report.warnings.append(
            Finding(f"recording {path}", "still on disk after its call was erased: delete it", rid)
        )


def verify_record(session: Session, config: Config, record_id: str) -> Report:
    """One record: LookupError when there is none."""
    record = session.get(ConsentRecord, record_id)
    if record is None:
        raise LookupError(f"no consent record {record_id}")
    report = Report()
    trusted = keys.trusted(config)
    events = events_of(session, [record_id])[record_id]
    check(report, record, session.get(Call, record.call_id), events, Files(archive_dir(config)))
    if not events:
        return report
    cp = covering(session, events[-1].ledger_seq, trusted)
    if cp is None:
        report.warnings.append(
            Finding(
                "checkpoint",
                "no checkpoint covers this record's newest event yet: run `consent-ivr checkpoint`",
                record_id,
            )
        )
        return report
    entry = checkpoints.as_dict(cp)
    report.problems += proof_findings(
        record_id, events, ledger_proof(session, events, cp.ledger_seq), entry
    )
    checkpoint_findings(report, [entry], trusted)
    path = Path(config.evidence.checkpoints)
    if path.exists():
        lines = [
            (n, e)
            for n, e in checkpoints.read_file(path)
            if isinstance(e, dict) and e["id"] == cp.id
        ]
        file_findings(report, path, lines, [entry], {})
    report.count("checkpoints")
    return report


# ---- everything --------------------------------------------------------------------------------


def verify_all(session: Session, config: Config) -> Report:
    report = Report()
    trusted = keys.trusted(config)
    cps = [
        checkpoints.as_dict(cp)
        for cp in session.scalars(select(Checkpoint).order_by(Checkpoint.id))
    ]
    path = Path(config.evidence.checkpoints)
    lines = checkpoints.read_file(path) if path.exists() else []
    wanted = {cp["ledger_seq"] for cp in cps}
    wanted |= {e["ledger_seq"] for _, e in lines if isinstance(e, dict)}
    at_seq = _ledger(session, report, wanted)
    _records(session, report, Files(archive_dir(config)))
    head = report.counts.get("ledger entries", 0)
    for cp in cps:
        what = f"checkpoint {cp['id']} (ledger entry {cp['ledger_seq']})"
        if cp["ledger_seq"] > head:
            report.problems.append(
                Finding(
                    what,
                    "signs more entries than the ledger holds: events removed from its end",
                    None,
                    None,
                    cp["ledger_seq"],
                    head,
                )
            )
        elif at_seq.get(cp["ledger_seq"]) != cp["ledger_hash"]:
            report.problems.append(
                Finding(
                    what,
                    "differs from the ledger entry it signs: the ledger was rewritten",
                    None,
                    None,
                    cp["ledger_hash"],
                    at_seq.get(cp["ledger_seq"]),
                )
            )
    checkpoint_findings(report, cps, trusted)
    report.count("checkpoints", len(cps))
    if path.exists():
        file_findings(report, path, lines, cps, at_seq, trusted)
    elif cps:
        report.warnings.append(
            Finding(
                f"checkpoint file {path}",
                "missing: the database cannot be checked against "
                "the checkpoints kept outside it (evidence.checkpoints)",
            )
        )
    return report


def _ledger(session: Session, report: Report, wanted: set[int]) -> dict[int, str]:
    """Walk the whole ledger; the ledger hash at each wanted entry."""
    walk, at_seq, last = Walk(), {}, 0
    columns = (
        ConsentEvent.ledger_seq,
        ConsentEvent.hash,
        ConsentEvent.ledger_hash,
        ConsentEvent.ledger_prev,
        ConsentEvent.record_id,
        ConsentEvent.seq,
    )
    while True:
        rows = session.execute(
            select(*columns)
            .where(ConsentEvent.ledger_seq > last)
            .order_by(ConsentEvent.ledger_seq)
            .limit(LEDGER_PAGE)
        ).all()
        if not rows:
            break
        for seq, event_hash, link, prev, record_id, rseq in rows:
            walk.feed(seq, event_hash, link, prev=prev, record=record_id, rseq=rseq)
            if seq in wanted:
                at_seq[seq] = link
        last = rows[-1][0]
    report.problems += walk.findings
    report.counts["ledger entries"] = walk.seq
    head = session.get(LedgerHead, 1)
    found = (head.seq, head.hash) if head else None
    if (found or (0, walk.hash)) != (walk.seq, walk.hash):
        report.problems.append(
            Finding(
                "ledger_head",
                "does not name the newest ledger entry",
                None,
                None,
                f"{walk.seq} {walk.hash}",
                f"{found[0]} {found[1]}" if found else None,
            )
        )
    return at_seq


def _records(session: Session, report: Report, files: Files) -> None:
    last = ""
    while True:
        calls = session.scalars(
            select(Call).where(Call.call_id > last).order_by(Call.call_id).limit(CALL_PAGE)
        ).all()
        if not calls:
            break
        last = calls[-1].call_id
        records = session.scalars(
            select(ConsentRecord)
            .where(ConsentRecord.call_id.in_([c.call_id for c in calls]))
            .order_by(ConsentRecord.call_id, ConsentRecord.record_id)
        ).all()
        events = events_of(session, [r.record_id for r in records])
        by_call: dict[str, list[ConsentRecord]] = {}
        for r in records:
            by_call.setdefault(r.call_id, []).append(r)
        for call in calls:
            for record in by_call.get(call.call_id, ()):
                check(report, record, call, events[record.record_id], files)
        files.forget_recordings()
    orphans = session.scalars(
        select(ConsentRecord).where(ConsentRecord.call_id.not_in(select(Call.call_id)))
    ).all()
    events = events_of(session, [r.record_id for r in orphans])
    for record in orphans:
        check(report, record, None, events[record.record_id], files)
    lost = session.execute(
        select(ConsentEvent.record_id, ConsentEvent.seq, ConsentEvent.ledger_seq)
        .where(ConsentEvent.record_id.not_in(select(ConsentRecord.record_id)))
        .order_by(ConsentEvent.record_id, ConsentEvent.seq)
    ).all()
    for record_id, seq, ledger_seq in lost:
        report.problems.append(
            Finding(
                f"ledger entry {ledger_seq}", "the event's record row was deleted", record_id, seq
            )
        )


# ---- checkpoints --------------------------------------------------------------------------------


def checkpoint_findings(
    report: Report, cps: Sequence[dict[str, Any]], trusted: dict[str, str]
) -> None:
    """Signatures, and unsigned checkpoints where signing was expected."""
    signed_before = False
    unsigned = []
    for cp in cps:
        if cp["signature"] is None:
            if trusted and signed_before:
                report.problems.append(
                    Finding(
                        f"checkpoint {cp['id']} (ledger entry {cp['ledger_seq']})",
                        "not signed although earlier ones are: the signing key was lost, "
                        "or the checkpoint was rewritten",
                    )
                )
            else:
                unsigned.append(cp["id"])
            continue
        signed_before = True
        report.problems += signature_findings(cp, trusted)
    if unsigned and trusted and not signed_before:
        report.problems.append(
            Finding(
                "checkpoints",
                "none is signed although evidence.public_keys is configured: "
                "set the signing key in the service's environment, or they were rewritten",
            )
        )
    elif unsigned:
        report.warnings.append(
            Finding(
                "checkpoints",
                f"{len(unsigned)} not signed (made without a signing key): "
                "they pin the ledger only together with the checkpoint file",
            )
        )


def file_findings(
    report: Report,
    path: Path,
    lines: Iterable[tuple[int, dict[str, Any] | str]],
    cps: Sequence[dict[str, Any]],
    at_seq: dict[int, str],
    trusted: dict[str, str] | None = None,
) -> None:
    """Every line of the external file must be in the database, unchanged."""
    by_id = {cp["id"]: cp for cp in cps}
    seen = set()
    for number, entry in lines:
        what = f"checkpoint file {path} line {number}"
        if isinstance(entry, str):
            report.problems.append(Finding(what, entry))
            continue
        seen.add(entry["id"])
        row = by_id.get(entry["id"])
        if row is None:
            report.problems.append(
                Finding(
                    what, f"checkpoint {entry['id']} is not in the database (deleted or replaced)"
                )
            )
            if at_seq.get(entry["ledger_seq"]) != entry["ledger_hash"]:
                report.problems.append(
                    Finding(
                        what,
                        f"ledger entry {entry['ledger_seq']} differs from the signed "
                        "one: the ledger was rewritten",
                        None,
                        None,
                        entry["ledger_hash"],
                        at_seq.get(entry["ledger_seq"]),
                    )
                )
            report.problems += signature_findings(entry, trusted or {})
            continue
        for name in checkpoints.FIELDS:
            if row[name] != entry[name]:
                report.problems.append(
                    Finding(
                        what,
                        f"{name} of checkpoint {entry['id']} differs in the database: "
                        "the database was rewritten",
                        None,
                        None,
                        entry[name],
                        row[name],
                    )
                )
    missing = [cp["id"] for cp in cps if cp["id"] not in seen]
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        report.warnings.append(
            Finding(
                f"checkpoint file {path}",
                f"{len(missing)} checkpoint(s) of the database "
                f"are not in it ({shown}): written while the file was unavailable, or the "
                "file was replaced",
            )
        )
