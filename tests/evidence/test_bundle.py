"""The evidence bundle: exported from a real record, it verifies alone (no database, no audio
directories); changing any one byte of any file in it fails and names the file; a rewrite
that keeps the manifest consistent is still caught by the chain, the commitment or the
signature; a trusted key can be pinned."""

from __future__ import annotations

import json
import shutil
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from consent_ivr.evidence import bundle, keys
from consent_ivr.evidence.report import Report
from consent_ivr.store.chain import canonical
from tests.evidence.calls import PROMPTS
from tests.evidence.conftest import T0, World

pytestmark = pytest.mark.integration


def export(world: World, record_id: str, name: str = "bundle.zip") -> Path:
    out = world.root / "out" / name
    report = bundle.export(world.db, world.config, record_id, out)
    assert report.ok, "\n".join(report.lines())
    return out


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def rezip(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)


def problems(report: Report) -> str:
    return "\n".join(str(p) for p in report.problems)


def alone(world: World, path: Path) -> Path:
    """The bundle copied away, and the database, recordings and prompt archive gone."""
    away = world.root / "lawyer" / path.name
    away.parent.mkdir()
    shutil.copyfile(path, away)
    world.db.close()
    for folder in ("audio", "recordings"):
        shutil.rmtree(world.root / folder)
    return away


def test_bundle_holds_the_evidence_and_verifies_alone(world: World, capsys: Any) -> None:
    stored = world.store_call()
    world.store_call(at=T0 + timedelta(minutes=5))  # ledger entries after this record's
    path = export(world, stored.record_id)
    files = members(path)
    expected = {
        "manifest.json",
        "summary.html",
        "record.json",
        "events.json",
        "ledger.json",
        "checkpoint.json",
        "public-key.txt",
        "recording.wav",
        *(f"prompts/{world.prompt_sha[name]}.wav" for name in PROMPTS),
    }
    assert set(files) == expected
    assert stored.recording is not None
    assert files["recording.wav"] == stored.recording.read_bytes()
    record = json.loads(files["record.json"])
    assert record["record"]["outcome"] == "granted"
    assert record["subject"]["phone"] == "+79161234567"
    assert record["iso27560"]["record"]["pii_principal_id"] == "+79161234567"
    assert record["kantara_consent_receipt"]["version"] == "KI-CR-v1.1.0"
    assert files["public-key.txt"].decode().strip() == world.public
    proof = json.loads(files["ledger.json"])
    events = json.loads(files["events.json"])
    assert proof["start"]["seq"] == events[0]["ledger_seq"] - 1
    assert proof["entries"][-1][0] == json.loads(files["checkpoint.json"])["ledger_seq"]

    away = alone(world, path)
    report = bundle.verify_bundle(away)
    assert report.ok, "\n".join(report.lines())
    assert report.counts["files"] == len(expected) - 1
    assert bundle.verify_bundle(away, world.public).ok
    assert world.cli("verify", str(away)) == 0
    assert world.cli("verify", str(away), "--public-key", world.public) == 0
    assert "OK" in capsys.readouterr().out


def test_any_changed_byte_fails_naming_the_file(world: World) -> None:
    stored = world.store_call()
    path = export(world, stored.record_id)
    original = members(path)
    assert bundle.verify_bundle(path).ok
    broken = world.root / "broken.zip"
    for name, data in original.items():
        for at in sorted({0, len(data) // 2, len(data) - 1}):
            changed = bytearray(data)
            changed[at] ^= 0x01
            rezip(broken, {**original, name: bytes(changed)})
            report = bundle.verify_bundle(broken)
            assert not report.ok, f"a changed byte {at} of {name} went unnoticed"
            assert any(name in p.what or name in p.message for p in report.problems), (
                f"a changed byte {at} of {name} was not named:\n{problems(report)}"
            )


def test_removed_or_added_file_is_named(world: World) -> None:
    stored = world.store_call()
    path = export(world, stored.record_id)
    original = members(path)
    sha = world.prompt_sha["ask"]
    rezip(path, {k: v for k, v in original.items() if k != f"prompts/{sha}.wav"})
    report = bundle.verify_bundle(path)
    assert f"prompts/{sha}.wav: listed in manifest.json but missing" in problems(report)
    rezip(path, {**original, "extra.txt": b"hello"})
    assert "extra.txt: not listed in manifest.json" in problems(bundle.verify_bundle(path))


def _with_manifest(files: dict[str, bytes]) -> dict[str, bytes]:
    """What someone rewriting a bundle does: recompute the manifest to match."""
    manifest = json.loads(files["manifest.json"])
    manifest["files"] = {
        name: __import__("hashlib").sha256(data).hexdigest()
        for name, data in files.items()
        if name != "manifest.json"
    }
    return {**files, "manifest.json": canonical(manifest).encode()}


def test_another_phone_number_with_a_recomputed_manifest_is_caught(world: World) -> None:
    stored = world.store_call()
    path = export(world, stored.record_id)
    files = members(path)
    doc = json.loads(files["record.json"])
    doc["subject"]["phone"] = "+79990001122"
    for view in ("iso27560",):
        doc[view]["record"]["pii_principal_id"] = "+79990001122"
    doc["kantara_consent_receipt"]["piiPrincipalId"] = "+79990001122"
    rezip(path, _with_manifest({**files, "record.json": json.dumps(doc).encode()}))
    report = bundle.verify_bundle(path)
    assert "do not match the commitment in the first event" in problems(report)


def test_another_outcome_with_recomputed_hashes_fails_the_signature(world: World) -> None:
    """Events rewritten with recomputed chain, ledger proof and checkpoint hash: only the
    signature (made with a key the rewriter does not have) is left to fail."""
    from consent_ivr.evidence.checks import event_from_json, event_json
    from consent_ivr.store.chain import GENESIS, event_hash, ledger_hash

    stored = world.store_call()
    path = export(world, stored.record_id)
    files = members(path)
    events = [event_from_json(e) for e in json.loads(files["events.json"])]
    proof = json.loads(files["ledger.json"])
    cp = json.loads(files["checkpoint.json"])
    rewritten, prev = [], GENESIS
    for ev in events:
        kind = "refused" if ev.kind == "given" else ev.kind
        data = {"outcome": "declined"} if ev.kind == "call_ended" else ev.data
        digest = event_hash(ev.record_id, ev.seq, ev.at, kind, ev.step, data, prev)
        rewritten.append(ev._replace(kind=kind, data=data, prev_hash=prev, hash=digest))
        prev = digest
    by_seq = {ev.ledger_seq: ev.hash for ev in rewritten}
    link, entries = proof["start"]["ledger_hash"], []
    for seq, event, _ in proof["entries"]:
        event = by_seq.get(seq, event)
        link = ledger_hash(seq, link, event)
        entries.append([seq, event, link])
    rewritten = [
        ev._replace(ledger_hash=entries[ev.ledger_seq - proof["start"]["seq"] - 1][2])
        for ev in rewritten
    ]
    doc = json.loads(files["record.json"])
    doc["record"].update(outcome="declined", status="refused", head_hash=rewritten[-1].hash)
    doc.pop("iso27560"), doc.pop("kantara_consent_receipt")
    doc.update(
        {
            k: v
            for k, v in bundle.record_json(doc["record"], doc["subject"], rewritten).items()
            if k in ("iso27560", "kantara_consent_receipt")
        }
    )
    files |= {
        "events.json": json.dumps([event_json(e) for e in rewritten]).encode(),
        "ledger.json": json.dumps({**proof, "entries": entries}).encode(),
        "checkpoint.json": json.dumps({**cp, "ledger_hash": link}).encode(),
        "record.json": json.dumps(doc).encode(),
    }
    rezip(path, _with_manifest(files))
    report = bundle.verify_bundle(path)
    assert [p.what for p in report.problems] == [
        f"checkpoint {cp['id']} (ledger entry {cp['ledger_seq']})"
    ], problems(report)
    assert "the signature does not verify" in problems(report)


def test_pinned_key_must_be_the_bundled_one(world: World, capsys: Any) -> None:
    stored = world.store_call()
    path = export(world, stored.record_id)
    _, other = keys.generate()
    report = bundle.verify_bundle(path, other)
    assert "public-key.txt: is not the trusted key given with --public-key" in problems(report)
    assert world.cli("verify", str(path), "--public-key", other) == 1
    assert "public-key.txt" in capsys.readouterr().out


def test_changed_byte_cli_exit_code(world: World, capsys: Any) -> None:
    stored = world.store_call()
    path = export(world, stored.record_id)
    files = members(path)
    data = bytearray(files["recording.wav"])
    data[100] ^= 0x01
    rezip(path, {**files, "recording.wav": bytes(data)})
    assert world.cli("verify", str(path)) == 1
    out = capsys.readouterr().out
    assert "PROBLEM recording.wav: changed" in out, out


def test_withdrawn_record_bundle_verifies(world: World) -> None:
    stored = world.store_call()
    world.withdraw(stored.record_id, T0 + timedelta(days=3))
    path = export(world, stored.record_id)
    record = json.loads(members(path)["record.json"])
    assert record["record"]["status"] == "withdrawn"
    assert [e["state"] for e in record["iso27560"]["event"]] == ["given", "withdrawn"]
    assert bundle.verify_bundle(path).ok


def test_export_command_and_unknown_record(world: World, capsys: Any) -> None:
    stored = world.store_call()
    out = world.root / "cli.zip"
    assert world.cli("export", stored.record_id, "-o", str(out)) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert bundle.verify_bundle(out).ok
    assert world.cli("export", "no-such-record", "-o", str(out)) == 1
    assert "no consent record no-such-record" in capsys.readouterr().err
    assert world.cli("export", stored.record_id) == 2


def test_bulk_export_jsonl_and_csv(world: World, capsys: Any) -> None:
    early = world.store_call(at=T0)
    late = world.store_call(at=T0 + timedelta(days=10), outcome="declined")
    capsys.readouterr()
    assert world.cli("export", "--since", (T0 + timedelta(days=1)).date().isoformat()) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["record_id"] for r in rows] == [late.record_id]
    assert rows[0]["outcome"] == "declined" and rows[0]["phone"] == "+79161234567"
    out = world.root / "all.csv"
    args = ["export", "--since", "2020-01-01", "--campaign", "default", "--format", "csv"]
    assert world.cli(*args, "-o", str(out)) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("record_id,kind,campaign")
    assert {line.split(",")[0] for line in lines[1:]} == {early.record_id, late.record_id}
    assert world.cli("export", "--since", "2020-01-01", "--campaign", "nobody") == 0
    assert capsys.readouterr().out == ""
