"""Keys and checkpoints: `keys generate` makes a pair that signs; a key that is malformed or
not configured is a clear error that never shows the key; a checkpoint is a database row and
an fsync'd line of a 0600 file, signed, made only when the ledger moved; without a key it is
unsigned with one warning; the service's task makes them on its interval and at stop."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from consent_ivr.config import ConfigError
from consent_ivr.evidence import checkpoints, keys, tasks, verify
from consent_ivr.store.models import Checkpoint, LedgerHead
from tests.evidence.conftest import KEY_ENV, World

pytestmark = pytest.mark.integration


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_keys_generate_prints_a_pair_that_signs(world: World, capsys: Any) -> None:
    assert world.cli("keys", "generate") == 0
    out = capsys.readouterr().out
    private = next(line for line in out.splitlines() if line.startswith(f"{KEY_ENV}="))
    private = private.split("=", 1)[1]
    public = next(line for line in out.splitlines() if line.startswith("#       - "))
    public = public.split('"')[1]
    assert f"key id {keys.key_id(public)}" in out
    config = world.reconfigure(public_keys=[public])
    signer = keys.signer(config, {KEY_ENV: private})
    assert signer is not None and signer.public == public
    assert private not in repr(signer)
    assert keys.verify(public, b"hello", signer.sign(b"hello"))
    assert not keys.verify(public, b"hellO", signer.sign(b"hello"))


def test_a_key_not_in_public_keys_is_a_clear_error(world: World, capsys: Any) -> None:
    private, public = keys.generate()
    with pytest.raises(ConfigError) as e:
        keys.signer(world.config, {KEY_ENV: private})
    assert "not in evidence.public_keys" in str(e.value) and keys.key_id(public) in str(e.value)
    assert private not in str(e.value)
    with pytest.raises(ConfigError, match="not an Ed25519 private key") as e:
        keys.signer(world.config, {KEY_ENV: "c2VjcmV0LXZhbHVl"})
    assert "c2VjcmV0LXZhbHVl" not in str(e.value)
    with pytest.raises(ConfigError, match=r"evidence.public_keys\[0\]"):
        keys.trusted(world.reconfigure(public_keys=["not a key"]))
    world.reconfigure(public_keys=[public])
    assert world.cli("checkpoint") == 2
    err = capsys.readouterr().err
    assert "not in evidence.public_keys" in err and world.private not in err


def test_checkpoint_row_and_file_line(world: World, capsys: Any) -> None:
    path = Path(world.config.evidence.checkpoints)
    assert world.cli("checkpoint") == 0  # an empty ledger: nothing to sign
    assert not path.exists()
    world.store_call()
    assert world.cli("checkpoint") == 0
    assert "signed with key" in capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    with world.db.session() as s:
        rows = [checkpoints.as_dict(cp) for cp in s.scalars(select(Checkpoint))]
        head = s.get(LedgerHead, 1)
        assert head is not None
        assert (rows[0]["ledger_seq"], rows[0]["ledger_hash"]) == (head.seq, head.hash)
    assert lines == rows
    assert keys.verify(world.public, checkpoints.message(rows[0]), rows[0]["signature"])
    assert world.cli("checkpoint") == 0  # unchanged ledger: no second checkpoint
    assert "nothing to sign" in capsys.readouterr().out
    world.store_call()
    assert world.cli("checkpoint") == 0
    assert len(path.read_text().splitlines()) == 2


def test_without_a_key_checkpoints_are_unsigned_with_one_warning(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(KEY_ENV)
    world.reconfigure(public_keys=[])
    world.store_call()
    with caplog.at_level(logging.WARNING, "consent_ivr.evidence"):
        tasks.preflight(world.config)  # no key: not an error, and no warning yet
        signer = keys.signer(world.config)
        entry = checkpoints.checkpoint(world.db, Path(world.config.evidence.checkpoints), signer)
    assert entry is not None and entry["signature"] is None and entry["key_id"] is None
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert f"no signing key in ${KEY_ENV}" in caplog.records[0].message
    with world.db.session() as s:
        report = verify.verify_all(s, world.config)
    assert report.ok and "1 not signed" in str(report.warnings[0])


def test_the_service_task_checkpoints_on_its_interval_and_at_stop(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    config = world.reconfigure(checkpoint_interval_s=0.2, purge_interval_s=0)
    path = Path(config.evidence.checkpoints)

    async def scenario() -> tuple[int, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(tasks.run(config, world.db, stop))
        await asyncio.to_thread(world.store_call)
        for _ in range(100):
            if await asyncio.to_thread(count_lines, path):
                break
            await asyncio.sleep(0.05)
        during = await asyncio.to_thread(count_lines, path)
        await asyncio.to_thread(world.store_call)
        stop.set()
        await asyncio.wait_for(task, 10)
        return during, await asyncio.to_thread(count_lines, path)

    with caplog.at_level(logging.DEBUG):
        during, after = asyncio.run(scenario())
    assert during >= 1 and after == during + 1
    with world.db.session() as s:
        head = s.get(LedgerHead, 1)
        last = checkpoints.latest(s)
        assert head is not None and last is not None
        assert (last.ledger_seq, last.ledger_hash) == (head.seq, head.hash)
        assert verify.verify_all(s, config).ok
    assert world.private not in caplog.text


def test_the_service_task_purges_and_checkpoints_after(world: World) -> None:
    from datetime import datetime

    from tests.evidence.conftest import T0

    stored = world.store_call(at=datetime(2019, 1, 10, tzinfo=T0.tzinfo))
    config = world.reconfigure(checkpoint_interval_s=3600, purge_interval_s=3600)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(tasks.run(config, world.db, stop))
        for _ in range(100):
            if not await asyncio.to_thread(os.path.exists, str(stored.recording)):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert stored.recording is not None and not stored.recording.exists()
    with world.db.session() as s:
        report = verify.verify_all(s, config)
        assert report.ok and report.counts["checkpoints"] >= 1
        assert "erased by policy" in str(report.notes[0])


def test_a_bad_key_stops_the_task_from_signing_and_says_why(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    other, _ = keys.generate()
    monkeypatch.setenv(KEY_ENV, other)
    with pytest.raises(ConfigError):
        tasks.preflight(world.config)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(tasks.run(world.config, world.db, stop))
        await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 5)

    world.store_call()
    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert "not in evidence.public_keys" in caplog.text and other not in caplog.text
    assert not Path(world.config.evidence.checkpoints).exists()


def test_key_rotation_keeps_old_checkpoints_verifiable(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.store_call()
    path = Path(world.config.evidence.checkpoints)
    old = checkpoints.checkpoint(world.db, path, keys.signer(world.config))
    assert old is not None
    private, public = keys.generate()
    monkeypatch.setenv(KEY_ENV, private)
    config = world.reconfigure(public_keys=[public, world.public])
    new = checkpoints.checkpoint(world.db, path, keys.signer(config))
    assert new is not None, "a new key signs the unchanged head once"
    assert (new["ledger_seq"], new["key_id"]) == (old["ledger_seq"], keys.key_id(public))
    with world.db.session() as s:
        assert verify.verify_all(s, config).ok
        retired = verify.verify_all(s, world.reconfigure(public_keys=[public]))
    assert [str(p) for p in retired.problems] == [
        f"checkpoint {old['id']} (ledger entry {old['ledger_seq']}): signed with a key that is "
        f"not trusted (not in evidence.public_keys) (expected {keys.key_id(public)}, "
        f"found {old['key_id']})"
    ]
