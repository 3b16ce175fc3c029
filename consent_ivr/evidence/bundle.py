"""The evidence bundle of one record (`consent-ivr export RECORD_ID -o FILE.zip`), and its check
without the database (`consent-ivr verify FILE.zip`).

A bundle is a zip a lawyer or a regulator can take as it is:

    summary.html          the record for a person: prompts as played, keys, decision, SMS,
                          withdrawals, the verification result, audio players; prints as a document
    record.json           the record's columns and subject, an ISO/IEC TS 27560 view and a Kantara
                          Consent Receipt view
    events.json           the record's hash chain, every event as stored
    ledger.json           the ledger proof: entries from just before the first event up to the
                          checkpoint (see consent_ivr.evidence.ledger)
    checkpoint.json       that checkpoint, signed
    public-key.txt        the Ed25519 key the checkpoint verifies with
    recording.<format>    the call recording (absent once erased by policy)
    prompts/<sha256>.wav  the exact audio of every prompt the person heard
    manifest.json         the SHA-256 of every other file, in canonical JSON

Checking one needs only the zip: every file against the manifest (naming each changed file),
the chain recomputed from events.json, record.json recomputed from the events (its columns, and
the phone number against the salted commitment of the first event), the ledger proof up to the
checkpoint, the signature with the bundled key (or a key pinned with ``--public-key``), and
the recording and each prompt's audio against the events that name their hashes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import zipfile
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_ivr import audio
from consent_ivr.clock import iso, now
from consent_ivr.config import Config
from consent_ivr.evidence import checkpoints, checks, keys, verify, views
from consent_ivr.evidence.checks import Event
from consent_ivr.evidence.ledger import proof_findings, signature_findings
from consent_ivr.evidence.report import Finding, Report
from consent_ivr.prompts import archive_dir
from consent_ivr.store.chain import canonical
from consent_ivr.store.db import Database
from consent_ivr.store.models import Call, ConsentRecord
from consent_ivr.store.records import record_view

FORMAT = "consent-ivr evidence bundle 1"
MANIFEST = "manifest.json"
KEYS = ("format", "record_id", "files")


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_json(
    cols: dict[str, Any], personal: dict[str, Any], events: list[Event]
) -> dict[str, Any]:
    """record.json without its export time: everything in it is recomputable."""
    return {
        "record_id": cols["record_id"],
        "record": cols,
        "subject": personal,
        "iso27560": views.iso27560(cols, personal, events),
        "kantara_consent_receipt": views.kantara(cols, personal, events),
    }


# ---- export -----------------------------------------------------------------------------------


def _covered(session: Session, config: Config, record_id: str) -> bool:
    """Whether a checkpoint covers the record's newest event (a signed one, when we sign)."""
    events = verify.events_of(session, [record_id])[record_id]
    if not events:
        return True
    trusted = keys.trusted(config)
    cp = verify.covering(session, events[-1].ledger_seq, trusted)
    return cp is not None and (cp.signature is not None or not trusted)


def export(db: Database, config: Config, record_id: str, out: Path) -> Report:
    """Write the bundle of one record to `out`; the record's verification (LookupError when
    there is no such record). Makes a checkpoint first when none covers the record yet."""
    with db.session() as session:
        if session.get(ConsentRecord, record_id) is None:
            raise LookupError(f"no consent record {record_id}")
        covered = _covered(session, config, record_id)
    if not covered:
        checkpoints.checkpoint(db, Path(config.evidence.checkpoints), keys.signer(config))
    with db.snapshot() as session:  # the record, its events and its ledger at one moment
        return _write(session, config, record_id, out)


def _write(session: Session, config: Config, record_id: str, out: Path) -> Report:
    record = session.get(ConsentRecord, record_id)
    assert record is not None
    call = session.get(Call, record.call_id)
    events = verify.events_of(session, [record_id])[record_id]
    report = verify.verify_record(session, config, record_id)
    trusted = keys.trusted(config)
    cols, personal = checks.columns(record, call), checks.subject(record, call)
    erased = record.erased_at is not None
    files: dict[str, bytes | Path] = {
        "record.json": _json({**record_json(cols, personal, events), "exported_at": iso(now())}),
        "events.json": _json([checks.event_json(e) for e in events]),
    }
    cp = verify.covering(session, events[-1].ledger_seq, trusted) if events else None
    if cp is not None:
        files["ledger.json"] = _json(verify.ledger_proof(session, events, cp.ledger_seq))
        files["checkpoint.json"] = _json(checkpoints.as_dict(cp))
        if cp.key_id in trusted:
            files["public-key.txt"] = (trusted[cp.key_id] + "\n").encode()
    media: dict[str, str] = {}
    stored = next((e for e in reversed(events) if e.kind == "recording_stored"), None)
    if stored is not None and not erased and call is not None and call.recording_path:
        path = Path(call.recording_path)
        if path.is_file():
            media["recording"] = f"recording.{stored.data.get('format') or 'wav'}"
            files[media["recording"]] = audio.read(path)  # plain, also if encrypted at rest
    archive = archive_dir(config)
    for e in events:
        sha = e.data.get("sha256") if e.kind == "prompt" else None
        if sha and (archive / f"{sha}.wav").is_file():
            media[sha] = f"prompts/{sha}.wav"
            files[media[sha]] = archive / f"{sha}.wav"
    view = record_view(session, record_id)
    verification = {
        "ok": report.ok,
        "problems": [str(f) for f in report.problems],
        "warnings": [str(f) for f in report.warnings],
        "notes": [str(f) for f in report.notes],
        "checked_at": iso(now()),
        "checkpoint": {**checkpoints.as_dict(cp), "signed": cp.signature is not None}
        if cp
        else None,
    }
    files["summary.html"] = summary(view, sms_of(session, events), verification, media).encode()
    _zip(out, record_id, files)
    return report


def sms_of(session: Session, events: list[Event]) -> list[dict[str, Any]]:
    """The SMS a record's events name, with their delivery (empty without the SMS part)."""
    if importlib.util.find_spec("consent_ivr.sms.models") is None:
        return []
    from consent_ivr.sms.models import SmsDeliveryReport, SmsJob

    ids = list(dict.fromkeys(str(e.data["job_id"]) for e in events if "job_id" in e.data))
    if not ids:
        return []
    jobs = session.scalars(select(SmsJob).where(SmsJob.id.in_(ids)).order_by(SmsJob.created_at))
    reports: dict[str, list[dict[str, Any]]] = {}
    for r in session.scalars(
        select(SmsDeliveryReport)
        .where(SmsDeliveryReport.job_id.in_(ids))
        .order_by(SmsDeliveryReport.received_at)
    ):
        reports.setdefault(r.job_id, []).append(
            {"at": iso(r.received_at), "status": r.status, "gateway_status": r.gateway_status}
        )
    return [
        {
            "job_id": j.id,
            "decision": j.decision,
            "text": j.text,
            "status": j.status,
            "gateway": j.gateway,
            "message_id": j.message_id,
            "created_at": iso(j.created_at),
            "sent_at": iso(j.sent_at),
            "delivered_at": iso(j.delivered_at),
            "failed_at": iso(j.failed_at),
            "error": j.error,
            "reports": reports.get(j.id, []),
        }
        for j in jobs
    ]


def summary(
    view: dict[str, Any],
    sms: list[dict[str, Any]],
    verification: dict[str, Any],
    media: dict[str, str],
) -> str:
    """summary.html from consent_ivr.evidence.summary, or a minimal page until it exists."""
    if importlib.util.find_spec("consent_ivr.evidence.summary") is not None:
        from consent_ivr.evidence import summary as renderer

        return str(renderer.render(view, sms, verification, media))
    players = "".join(
        f'<p>{escape(name)}: <audio controls src="{escape(path)}"></audio></p>'
        for name, path in media.items()
    )
    verdict = "verified" if verification.get("ok") else "PROBLEMS FOUND"
    return (
        f'<!doctype html><html lang="{escape(str(view.get("language") or "en"))}"><meta '
        f'charset="utf-8"><title>Consent record {escape(view["record_id"])}</title>'
        f"<h1>Consent record {escape(view['record_id'])}</h1><p>Outcome: "
        f"{escape(str(view.get('outcome')))}; status: {escape(str(view.get('status')))}; "
        f"evidence {verdict}.</p>{players}<p>The full summary is in record.json and events.json."
        f"</p></html>"
    )


def _zip(out: Path, record_id: str, files: dict[str, bytes | Path]) -> None:
    """Write the zip atomically, owner read/write only (it holds personal data)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    hashes = {}
    with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in sorted(files.items()):
            data = content.read_bytes() if isinstance(content, Path) else content
            hashes[name] = _sha256(data)
            z.writestr(name, data)
        manifest = {"format": FORMAT, "record_id": record_id, "files": hashes}
        z.writestr(MANIFEST, canonical(manifest).encode())
    part.replace(out)


# ---- verify -----------------------------------------------------------------------------------


class _Bundle:
    """The zip's members, read once; each problem of reading one names it."""

    def __init__(self, z: zipfile.ZipFile, report: Report) -> None:
        self.z, self.report = z, report
        counted = Counter(i.filename for i in z.infolist() if not i.is_dir())
        self.names = set(counted)
        for name in sorted(n for n, times in counted.items() if times > 1):
            report.problems.append(Finding(name, "appears twice in the zip"))

    def sha256(self, name: str) -> str | None:
        if name not in self.names:
            return None
        digest = hashlib.sha256()
        with self.z.open(name) as f:
            for block in iter(lambda: f.read(1 << 16), b""):
                digest.update(block)
        return digest.hexdigest()

    def json(self, name: str) -> Any:
        if name not in self.names:
            self.report.problems.append(Finding(name, "missing from the bundle"))
            return None
        try:
            return json.loads(self.z.read(name))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self.report.problems.append(Finding(name, f"not valid JSON: {e}"))
            return None


def verify_bundle(path: Path, public_key: str | None = None) -> Report:
    """Check a bundle alone, without the database."""
    report = Report()
    try:
        with zipfile.ZipFile(path) as z:
            _check(_Bundle(z, report), public_key)
    except (zipfile.BadZipFile, OSError) as e:
        report.problems.append(Finding(str(path), f"cannot be read as a zip: {e}"))
    return report


def _manifest(b: _Bundle) -> dict[str, Any] | None:
    report = b.report
    manifest = b.json(MANIFEST)
    if manifest is None:
        return None
    if not isinstance(manifest, dict) or set(manifest) != set(KEYS):
        report.problems.append(Finding(MANIFEST, f"expected the keys {', '.join(KEYS)}"))
        return None
    if canonical(manifest).encode() != b.z.read(MANIFEST):
        report.problems.append(Finding(MANIFEST, "not in its canonical form: it was changed"))
    if manifest["format"] != FORMAT:
        report.problems.append(
            Finding(MANIFEST, "unknown format", None, None, FORMAT, manifest["format"])
        )
    listed = manifest["files"] if isinstance(manifest["files"], dict) else {}
    for name in sorted(b.names - set(listed) - {MANIFEST}):
        report.problems.append(Finding(name, f"not listed in {MANIFEST}: added or renamed"))
    for name, expected in sorted(listed.items()):
        found = b.sha256(name)
        if found is None:
            report.problems.append(Finding(name, f"listed in {MANIFEST} but missing"))
        elif found != expected:
            report.problems.append(
                Finding(
                    name,
                    f"changed: its SHA-256 differs from {MANIFEST}",
                    None,
                    None,
                    expected,
                    found,
                )
            )
        report.count("files")
    return manifest


def _check(b: _Bundle, pinned: str | None) -> None:
    report = b.report
    manifest = _manifest(b)
    doc, raw_events = b.json("record.json"), b.json("events.json")
    if not isinstance(doc, dict) or not isinstance(raw_events, list):
        return
    try:
        events = [checks.event_from_json(e) for e in raw_events]
        rid, cols, personal = str(doc["record_id"]), dict(doc["record"]), dict(doc["subject"])
    except (KeyError, TypeError, ValueError) as e:
        report.problems.append(Finding("events.json or record.json", f"malformed: {e}"))
        return
    if manifest is not None and manifest["record_id"] != rid:
        report.problems.append(
            Finding(
                MANIFEST,
                "names another record than record.json",
                None,
                None,
                rid,
                manifest["record_id"],
            )
        )
    for ev in events:
        if ev.record_id != rid:
            report.problems.append(
                Finding("events.json", "an event of another record", rid, ev.seq, rid, ev.record_id)
            )
    erased = checks.check_record(report, rid, events, cols, personal)
    expected = record_json(cols, personal, events)
    for key in ("iso27560", "kantara_consent_receipt"):
        if doc.get(key) != expected[key]:
            report.problems.append(
                Finding(f"record.json {key}", "does not match the record it describes", rid)
            )
    checks.audio_findings(
        report,
        rid,
        events,
        lambda data: (
            f"recording.{data.get('format') or 'wav'}",
            b.sha256(f"recording.{data.get('format') or 'wav'}"),
        ),
        lambda sha: (f"prompts/{sha}.wav", b.sha256(f"prompts/{sha}.wav")),
        recording_gone=erased,
    )
    _ledger(b, rid, events, pinned)


def _ledger(b: _Bundle, rid: str, events: list[Event], pinned: str | None) -> None:
    report = b.report
    cp, proof = b.json("checkpoint.json"), b.json("ledger.json")
    if not isinstance(cp, dict) or not isinstance(proof, dict):
        return
    try:
        report.problems += proof_findings(rid, events, proof, cp)
    except (KeyError, TypeError, ValueError) as e:
        report.problems.append(Finding("ledger.json or checkpoint.json", f"malformed: {e}"))
        return
    trusted: dict[str, str] = {}
    if "public-key.txt" in b.names:
        bundled = b.z.read("public-key.txt").decode(errors="replace").strip()
        try:
            trusted = {keys.key_id(bundled): bundled}
        except ValueError as e:
            report.problems.append(Finding("public-key.txt", f"not an Ed25519 public key: {e}"))
    if pinned is not None:
        pinned_id = keys.key_id(pinned)
        if trusted and pinned_id not in trusted:
            report.problems.append(
                Finding(
                    "public-key.txt",
                    "is not the trusted key given with --public-key",
                    None,
                    None,
                    pinned_id,
                    ", ".join(trusted),
                )
            )
        trusted = {pinned_id: pinned.strip()}
    if cp.get("signature") is None:
        finding = Finding(
            "checkpoint.json",
            "not signed: the bundle proves its own consistency "
            "only, not that the operator's ledger held it",
        )
        (report.problems if pinned else report.warnings).append(finding)
    else:
        report.problems += signature_findings(cp, trusted)
    report.count("checkpoints")
