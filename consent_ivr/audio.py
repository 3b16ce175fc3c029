"""Call recordings on disk: the WAV facts we need without decoding audio, and atomic saving.

A recording is stored once, under a name of our own, with its SHA-256 and its duration taken
from the WAV header (decoding the whole file to learn its length cost more CPU than the rest of
the call's work together).
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SavedAudio:
    path: Path
    sha256: str
    duration_s: float
    size: int


def wav_closed(data: bytes) -> bool:
    """True when the RIFF header's size matches the data (the writer has closed the file)."""
    return (
        len(data) > 44
        and data[:4] == b"RIFF"
        and int.from_bytes(data[4:8], "little") == len(data) - 8
    )


def wav_duration(data: bytes) -> float:
    """Seconds of audio in a PCM WAV, from its fmt and data chunks; 0.0 if it is not one."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0.0
    pos, byte_rate = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk == b"fmt " and size >= 16:
            _, _, _, byte_rate = struct.unpack("<HHII", data[body : body + 12])
        elif chunk == b"data":
            size = min(size, len(data) - body)
            return size / byte_rate if byte_rate else 0.0
        pos = body + size + (size & 1)
    return 0.0


def save(folder: Path, name: str, data: bytes) -> SavedAudio:
    """Write `data` as folder/name atomically (never a half file under the final name), owner
    read/write only."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return SavedAudio(
        path.resolve(), hashlib.sha256(data).hexdigest(), wav_duration(data), len(data)
    )
