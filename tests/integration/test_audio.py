"""Recordings written to disk as they arrive (audio.AudioWriter): what lands on disk, its hash
and duration, encryption at rest, a download started again, and what a failure leaves."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from consent_ivr import audio


def wav(seconds: float, *, closed: bool = True, rate: int = 8000) -> bytes:
    """A 16-bit mono PCM WAV; when not `closed`, its sizes are 0 as in a file being written."""
    size = int(seconds * rate) * 2
    body = (bytes(range(256)) * (size // 256 + 1))[:size]
    riff, data = (36 + len(body), len(body)) if closed else (0, 0)
    header = (
        b"RIFF"
        + riff.to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")  # PCM
        + (1).to_bytes(2, "little")  # mono
        + rate.to_bytes(4, "little")
        + (rate * 2).to_bytes(4, "little")  # bytes a second
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + data.to_bytes(4, "little")
    )
    return header + body


def in_chunks(writer: audio.AudioWriter, data: bytes, size: int = 1000) -> None:
    for i in range(0, len(data), size):
        writer.write(data[i : i + size])


def test_a_recording_written_in_chunks_is_stored_whole_hashed_and_timed(tmp_path: Path) -> None:
    data = wav(2.5)
    writer = audio.AudioWriter(tmp_path / "2026" / "12", "call.wav")
    in_chunks(writer, data)
    assert writer.wav_closed
    assert not (tmp_path / "2026" / "12" / "call.wav").exists()  # not before the commit
    saved = writer.commit()
    assert saved.path == (tmp_path / "2026" / "12" / "call.wav").resolve()
    assert saved.path.read_bytes() == data
    assert saved.sha256 == hashlib.sha256(data).hexdigest()
    assert saved.size == len(data)
    assert saved.duration_s == pytest.approx(2.5, abs=0.001)
    assert stat.S_IMODE(saved.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in saved.path.parent.iterdir()) == ["call.wav"]
    writer.discard()  # after a commit: nothing to remove
    assert saved.path.read_bytes() == data


def test_an_encrypted_recording_keeps_the_hash_of_its_plain_audio(tmp_path: Path) -> None:
    key = os.urandom(32)
    data = wav(1.0)
    writer = audio.AudioWriter(tmp_path, "call.wav", key)
    in_chunks(writer, data, 777)
    saved = writer.commit()
    blob = saved.path.read_bytes()
    assert blob.startswith(audio.MAGIC) and data[:64] not in blob
    assert len(blob) == len(audio.MAGIC) + 12 + len(data) + 16  # nonce, audio, tag
    assert saved.sha256 == hashlib.sha256(data).hexdigest()
    assert saved.size == len(data) and saved.duration_s == pytest.approx(1.0)
    assert audio.read(saved.path, key) == data
    with pytest.raises(audio.RecordingKeyError, match="does not decrypt"):
        audio.read(saved.path, os.urandom(32))
    with pytest.raises(audio.RecordingKeyError, match="CONSENT_IVR_RECORDING_KEY"):
        audio.decrypt(blob, None)
    changed = bytearray(blob)
    changed[len(audio.MAGIC) + 12 + 100] ^= 1
    with pytest.raises(audio.RecordingKeyError, match="does not decrypt"):
        audio.decrypt(bytes(changed), key)


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_download_started_again_keeps_only_the_last(tmp_path: Path, encrypted: bool) -> None:
    key = os.urandom(32) if encrypted else None
    final = wav(1.5)
    writer = audio.AudioWriter(tmp_path, "call.wav", key)
    in_chunks(writer, wav(3.0, closed=False))
    assert not writer.wav_closed  # Asterisk has not written the sizes yet
    writer.restart()
    in_chunks(writer, final)
    assert writer.wav_closed
    saved = writer.commit()
    assert audio.read(saved.path, key) == final
    assert saved.sha256 == hashlib.sha256(final).hexdigest()
    assert saved.size == len(final) and saved.duration_s == pytest.approx(1.5)


def test_a_write_that_does_not_commit_leaves_nothing(tmp_path: Path) -> None:
    writer = audio.AudioWriter(tmp_path / "day", "call.wav")
    in_chunks(writer, wav(1.0)[:5000])
    assert [p.name for p in (tmp_path / "day").iterdir()] == ["call.wav.part"]
    writer.discard()
    assert list((tmp_path / "day").iterdir()) == []


def test_a_closed_wav_is_told_from_a_short_or_foreign_file(tmp_path: Path) -> None:
    data = wav(0.5)
    for written, closed in [
        (data, True),
        (data[:-2], False),  # the header promises more than arrived
        (wav(0.5, closed=False), False),
        (data[:44], False),  # a header alone
        (b"OggS" + data[4:], False),
    ]:
        writer = audio.AudioWriter(tmp_path, "x.wav")
        writer.write(written)
        assert writer.wav_closed is closed, written[:8]
        assert audio.wav_closed(written) is closed
        writer.discard()


def test_copy_from_a_file_asterisk_is_still_writing(tmp_path: Path) -> None:
    source = tmp_path / "spool.wav"
    writer = audio.AudioWriter(tmp_path / "kept", "call.wav")
    assert writer.copy_from(source) is False  # not there yet
    source.write_bytes(wav(2.0, closed=False))
    assert writer.copy_from(source) is False
    source.write_bytes(wav(2.0))
    assert writer.copy_from(source) is True
    saved = writer.commit()
    assert saved.path.read_bytes() == source.read_bytes()
    assert saved.duration_s == pytest.approx(2.0)


def test_a_full_disk_fails_the_write_and_leaves_nothing(tmp_path: Path) -> None:
    # The part file leads to /dev/full: every write that reaches it fails with ENOSPC.
    (tmp_path / "call.wav.part").symlink_to("/dev/full")
    writer = audio.AudioWriter(tmp_path, "call.wav")
    with pytest.raises(OSError) as failed:
        in_chunks(writer, wav(1.0))
        writer.commit()
    assert failed.value.errno == errno.ENOSPC
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def test_wav_file_duration_reads_the_header_only(tmp_path: Path) -> None:
    path = tmp_path / "p.wav"
    path.write_bytes(wav(1.25, rate=16000))
    assert audio.wav_file_duration(path) == pytest.approx(1.25)
    path.write_bytes(b"not a wav at all")
    assert audio.wav_file_duration(path) == 0.0
