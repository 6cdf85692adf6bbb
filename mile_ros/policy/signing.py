"""Who may replace a robot's policy: checkpoints signed with a key the trainer and stations share.

The signature is HMAC-SHA256 over the bytes delivered on `policy/checkpoint` (the archive of
`checkpoint_to_bytes`), written `hmac-sha256:<64 hex digits>`; it travels in the same message
(`interfaces.checkpoint_msg`), so a byte changed after signing, or a key other than the station's,
fails the check before the archive is even unpacked.

The key is the content of a key file (surrounding whitespace removed), e.g. the 64 hex digits of
`python -c 'import secrets; print(secrets.token_hex(32))' > key`. The trainer names it with
`train --key-file`, a policy server with its parameter `checkpoint_key_file`. A key is never
printed, logged, written into a bag or into a checkpoint: messages name the file only. ROS-free.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import stat
import string
from pathlib import Path

from mile_ros.params import ConfigError

SCHEME = "hmac-sha256"
MIN_KEY_BYTES = 16
MAKE_KEY = ("python -c 'import secrets; print(secrets.token_hex(32))' > KEYFILE; "
            "chmod 600 KEYFILE")

__all__ = ["SCHEME", "SignatureError", "read_key", "loose_permissions", "sign",
           "verify_signature"]


class SignatureError(ValueError):
    """A delivered checkpoint whose signature does not allow it; the message says why."""


def read_key(path: str | os.PathLike, what: str) -> bytes:
    """Return the key in the key file `path`.

    Problems raise a ConfigError that starts with `what` (the parameter or option naming the
    file) and names the file, never its content.
    """
    where = f"{what} ({str(path)!r})"
    try:
        key = Path(path).read_bytes().strip()
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such key file (make one: {MAKE_KEY})") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read the key file "
                          f"({e.strerror or type(e).__name__})") from None
    if not key:
        raise ConfigError(f"{where}: the key file is empty (make a key: {MAKE_KEY})")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{where}: the key file holds a key shorter than {MIN_KEY_BYTES} "
                          f"bytes (make one: {MAKE_KEY})")
    return key


def loose_permissions(path: str | os.PathLike) -> str | None:
    """Return a warning when others than its owner may read the key file, else None."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"key file {path} may be read by others (mode {stat.S_IMODE(mode):o}); "
                f"chmod 600 {path}")
    return None


def sign(data: bytes, key: bytes) -> str:
    """Return the signature of the delivered bytes `data`: 'hmac-sha256:<hex digest>'."""
    return f"{SCHEME}:{hmac.new(key, bytes(data), hashlib.sha256).hexdigest()}"


def _digest_of(signature: str) -> str:
    scheme, _, digest = signature.partition(":")
    digest = digest.strip().lower()
    if scheme != SCHEME or len(digest) != 64 or not set(digest) <= set(string.hexdigits):
        raise SignatureError(f"bad signature: {signature[:80]!r} is not an {SCHEME} signature")
    return digest


def verify_signature(data: bytes, signature: str | None, key: bytes | None,
                     allow_unsigned: bool) -> str:
    """Check that `data` may replace the running policy; return a note on what was checked.

    `signature` is the one delivered with the bytes (None: unsigned), `key` the station's (None:
    it has none). Raises SignatureError, its message starting "unsigned checkpoint" or "bad
    signature", unless the signature is right, or there is none to check and `allow_unsigned`.
    """
    if not signature:
        if allow_unsigned:
            return "unsigned, accepted: allow_unsigned is true"
        raise SignatureError("unsigned checkpoint: this policy server accepts only checkpoints "
                             "signed with its key (train --key-file); allow_unsigned is false")
    digest = _digest_of(signature)
    if key is None:
        if allow_unsigned:
            return "signature not checked (no checkpoint_key_file), accepted: allow_unsigned"
        raise SignatureError("bad signature: this policy server has no checkpoint_key_file to "
                             "check it with, and allow_unsigned is false")
    expected = hmac.new(key, bytes(data), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest):
        raise SignatureError(f"bad signature: the {SCHEME} does not match this station's key "
                             "(signed with another key, or altered after signing)")
    return "signature verified"
