"""Call recordings on disk: the WAV facts we need without decoding audio, atomic saving, and
optional encryption at rest.

A recording is stored once, under a name of our own, owner-only. It is written to disk as it
is downloaded, never held whole in memory, with the SHA-256 of its plain audio taken on the way
and its duration from the WAV header (decoding the whole file to learn its length cost more CPU
than the rest of the call's work together). With a recording key in the environment
(`CONSENT_IVR_RECORDING_KEY`, 32 bytes in base64) the file is AES-256-GCM encrypted; the hash
the evidence keeps is always of the plain audio, so verifying and exporting decrypt (`read`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


@dataclass(frozen=True)
class SavedAudio:
    path: Path
    sha256: str
    duration_s: float
    size: int


CHUNK = 64 * 1024
HEAD = 4096  # a WAV header (fmt and data chunks) fits in the first bytes read of a file


def wav_closed(data: bytes) -> bool:
    """True when the RIFF header's size matches the data (the writer has closed the file)."""
    return len(data) > 44 and _closed(data, len(data))


def _closed(head: bytes, size: int) -> bool:
    return head[:4] == b"RIFF" and int.from_bytes(head[4:8], "little") == size - 8


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


def _duration(head: bytes, length: int) -> float:
    """Seconds of audio in a PCM WAV of `length` bytes, from its fmt and data chunks in `head`;
    0.0 if it is not one."""
    layout = _layout(head)
    if layout is None or not layout[0]:
        return 0.0
    byte_rate, body, size = layout
    return min(size, length - body) / byte_rate


def wav_file_duration(path: Path) -> float:
    """Seconds of audio in a WAV file, from its header (the data is not read)."""
    with path.open("rb") as f:
        return _duration(f.read(HEAD), os.fstat(f.fileno()).st_size)


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


class AudioWriter:
    """A recording written to disk as it arrives, never held whole in memory: into
    folder/name.part (owner read/write only), encrypted on the way when `key` is given, its
    plain audio hashed on the way; `commit` makes it folder/name (fsynced, atomic: never a half
    file under the final name). `restart` starts again from nothing (a download that found the
    file not yet closed); `discard` removes what a failed or abandoned write left."""

    def __init__(self, folder: Path, name: str, key: bytes | None = None) -> None:
        self.folder = folder
        self.path = folder / name
        self._part = folder / f"{name}.part"
        self._key = key
        self._file: BinaryIO | None = None
        self.restart()

    def restart(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._hash = hashlib.sha256()
        self._seal: Any = None
        self.head = b""  # the first bytes of the plain audio: the WAV header is in them
        self.size = 0

    def write(self, chunk: bytes) -> None:
        f = self._file if self._file is not None else self._open()
        self._hash.update(chunk)
        if len(self.head) < HEAD:
            self.head += chunk[: HEAD - len(self.head)]
        self.size += len(chunk)
        f.write(self._seal.update(chunk) if self._seal is not None else chunk)

    def copy_from(self, path: Path) -> bool:
        """Write the file at `path` once it is a closed WAV, in chunks (blocking: in a worker
        thread); whether it was. Until then (not there yet, or its header's sizes not written)
        only its header is read and nothing is written."""
        try:
            source = path.open("rb")
        except OSError:
            return False
        with source:
            head = source.read(HEAD)
            size = os.fstat(source.fileno()).st_size
            if size <= 44 or not _closed(head, size):
                return False
            self.restart()
            self.write(head)
            while chunk := source.read(CHUNK):
                self.write(chunk)
        return self.wav_closed

    @property
    def wav_closed(self) -> bool:
        """True when the RIFF header's size matches what was written (the writer of the WAV,
        Asterisk, has closed it)."""
        return self.size > 44 and _closed(self.head, self.size)

    def commit(self) -> SavedAudio:
        """Blocking (fsync): run it in a worker thread."""
        f = self._file if self._file is not None else self._open()
        if self._seal is not None:
            f.write(self._seal.finalize() + self._seal.tag)
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self._file = None
        self._part.replace(self.path)
        return SavedAudio(
            self.path.resolve(),
            self._hash.hexdigest(),
            _duration(self.head, self.size),
            self.size,
        )

    def discard(self) -> None:
        """Remove the part file of a write that did not commit (nothing after a commit)."""
        if self._file is not None:
            with contextlib.suppress(OSError):  # its buffer cannot be written: no matter
                self._file.close()
            self._file = None
            self._part.unlink(missing_ok=True)

    def _open(self) -> BinaryIO:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        f = os.fdopen(fd, "wb")
        self._file = f
        if self._key is not None:
            nonce = os.urandom(12)
            self._seal = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).encryptor()
            self._seal.authenticate_additional_data(MAGIC)
            f.write(MAGIC + nonce)
        return f
