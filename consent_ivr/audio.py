"""Call recordings on disk: the WAV facts we need without decoding audio, atomic saving, and
optional encryption at rest.

A recording is stored once, under a name of our own, owner-only, with its SHA-256 and its
duration taken from the WAV header (decoding the whole file to learn its length cost more CPU
than the rest of the call's work together). With a recording key in the environment
(`CONSENT_IVR_RECORDING_KEY`, 32 bytes in base64) the file is AES-256-GCM encrypted; the hash
the evidence keeps is always of the plain audio, so verifying and exporting decrypt (`read`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


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


def _layout(head: bytes) -> tuple[int, int, int] | None:
    """(byte rate, offset of the audio, its declared size) from a WAV's first bytes."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk == b"fmt " and size >= 16:
            _, _, _, byte_rate = struct.unpack("<HHII", head[body : body + 12])
        elif chunk == b"data":
            return byte_rate, body, size
        pos = body + size + (size & 1)
    return None


def wav_duration(data: bytes) -> float:
    """Seconds of audio in a PCM WAV, from its fmt and data chunks; 0.0 if it is not one."""
    layout = _layout(data)
    if layout is None or not layout[0]:
        return 0.0
    byte_rate, body, size = layout
    return min(size, len(data) - body) / byte_rate


def wav_file_duration(path: Path) -> float:
    """Seconds of audio in a WAV file, from its header (the data is not read)."""
    with path.open("rb") as f:
        layout = _layout(f.read(4096))
    if layout is None or not layout[0]:
        return 0.0
    byte_rate, body, size = layout
    return min(size, path.stat().st_size - body) / byte_rate


KEY_ENV = "CONSENT_IVR_RECORDING_KEY"
MAGIC = b"CIVR-AESGCM-1\n"  # an encrypted recording starts with this, then a 12-byte nonce


class RecordingKeyError(ValueError):
    """The recording key is malformed, or a file cannot be decrypted with it."""


def recording_key(env: dict[str, str] | None = None) -> bytes | None:
    """The key recordings are encrypted with, from the environment; None: not encrypted."""
    text = (os.environ if env is None else env).get(KEY_ENV)
    if not text:
        return None
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise RecordingKeyError(f"{KEY_ENV}: expected 32 bytes in base64 (44 characters)")
    return key


def encrypt(data: bytes, key: bytes) -> bytes:
    nonce = os.urandom(12)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, data, MAGIC)


def decrypt(blob: bytes, key: bytes | None) -> bytes:
    """The plain audio of a stored recording (unchanged when it is not encrypted)."""
    if not blob.startswith(MAGIC):
        return blob
    if key is None:
        raise RecordingKeyError(f"the recording is encrypted: set {KEY_ENV}")
    nonce, sealed = blob[len(MAGIC) : len(MAGIC) + 12], blob[len(MAGIC) + 12 :]
    try:
        return AESGCM(key).decrypt(nonce, sealed, MAGIC)
    except InvalidTag:
        raise RecordingKeyError("the recording does not decrypt with this key") from None


def read(path: Path, key: bytes | None = None) -> bytes:
    """A stored recording's plain audio (decrypted with the environment's key if needed)."""
    return decrypt(path.read_bytes(), key if key is not None else recording_key())


def save(folder: Path, name: str, data: bytes, key: bytes | None = None) -> SavedAudio:
    """Write `data` as folder/name atomically (never a half file under the final name), owner
    read/write only, encrypted when `key` is given; the hash and duration of the plain audio."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(encrypt(data, key) if key is not None else data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return SavedAudio(
        path.resolve(), hashlib.sha256(data).hexdigest(), wav_duration(data), len(data)
    )
