"""Ed25519 keys that sign the ledger's checkpoints.

The private key is read from the environment only (``evidence.signing_key_env``, by default
``CONSENT_IVR_SIGNING_KEY``), as the base64 of its 32-byte seed; it is never written to a file,
a log line or an error message. Public keys are the base64 of their 32 raw bytes and are listed
in the config (``evidence.public_keys``: the current key first, then retired ones), in every
checkpoint (by key id: a short hash of the public key) and in every exported bundle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consent_ivr.config import Config, ConfigError

log = logging.getLogger(__name__)

_RAW = serialization.Encoding.Raw
_GENERATE = "generate one with `consent-ivr keys generate`"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str, size: int) -> bytes:
    """`text` as `size` raw bytes, or ValueError (which never repeats the text)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != size:
        raise ValueError(f"{len(raw)} bytes where an Ed25519 key has {size}")
    return raw


def public_of(key: Ed25519PrivateKey) -> str:
    return _b64(key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw))


def key_id(public: str) -> str:
    """The short name of a public key in checkpoints: 16 hex digits of its SHA-256."""
    return hashlib.sha256(_unb64(public, 32)).hexdigest()[:16]


def generate() -> tuple[str, str]:
    """A new key pair: (private, public), both base64."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return _b64(seed), public_of(key)


@dataclass(frozen=True)
class Signer:
    """The signing key of this process; its repr never shows the key."""

    public: str
    key_id: str
    _key: Ed25519PrivateKey = field(repr=False)

    def sign(self, message: bytes) -> str:
        return _b64(self._key.sign(message))


def trusted(config: Config) -> dict[str, str]:
    """The configured public keys by key id; ConfigError names a malformed entry."""
    keys = {}
    for i, text in enumerate(config.evidence.public_keys):
        try:
            keys[key_id(text)] = text.strip()
        except ValueError as e:
            raise ConfigError(
                f"evidence.public_keys[{i}]: not an Ed25519 public key ({e}); {_GENERATE}"
            ) from None
    return keys


def signer(
    config: Config, env: Mapping[str, str] | None = None, *, warn: bool = True
) -> Signer | None:
    """The signing key from the environment, None (with a warning) when there is none.

    ConfigError when a public key is malformed, when the variable holds no valid key, or a key
    whose public half is not in ``evidence.public_keys`` (its signatures would not verify)."""
    trusted_keys = trusted(config)
    name = config.evidence.signing_key_env
    text = (os.environ if env is None else env).get(name)
    if not text:
        if not warn:
            return None
        log.warning(
            "no signing key in $%s: checkpoints are written unsigned, so a database rewritten "
            "from scratch is caught only against the checkpoint file %s; %s",
            name,
            config.evidence.checkpoints,
            _GENERATE,
        )
        return None
    try:
        key = Ed25519PrivateKey.from_private_bytes(_unb64(text, 32))
    except ValueError as e:
        raise ConfigError(f"${name}: not an Ed25519 private key ({e}); {_GENERATE}") from None
    public = public_of(key)
    kid = key_id(public)
    if kid not in trusted_keys:
        raise ConfigError(
            f"${name}: its public key {public} (key id {kid}) is not in evidence.public_keys; "
            f"add it there (first in the list) or its signatures will not verify"
        )
    return Signer(public, kid, key)


def verify(public: str, message: bytes, signature: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(_unb64(public, 32))
        key.verify(_unb64(signature, 64), message)
    except (ValueError, InvalidSignature):
        return False
    return True
