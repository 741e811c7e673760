"""Client-side encryption of backup objects (optional): AES-256-GCM in :data:`CHUNK`-sized chunks.

Each chunk is sealed under a 12-byte nonce (8 random bytes per object + a 4-byte counter); the associated data
binds the chunk counter and a "last chunk" flag, so reordering, dropping or truncating chunks fails
authentication. Stream layout: magic ``HXAE1\\0``, the chunk size (4 bytes), the nonce prefix (8 bytes), then
the sealed chunks. The key never leaves this process; only its fingerprint (:func:`key_fingerprint`) is
recorded in a manifest.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterator

from pydantic import SecretStr

from drivers.storage.streams import CHUNK
from helix_ops.errors import BackupIntegrityError, ConfigError, DriverError

MAGIC = b"HXAE1\0"


def parse_key(key: SecretStr | bytes | str | None) -> bytes | None:
    """A 32-byte AES key from raw bytes or base64 text (``openssl rand -base64 32``); ``None`` stays None."""
    if key is None:
        return None
    raw: bytes | str = key.get_secret_value() if isinstance(key, SecretStr) else key
    if isinstance(raw, str):
        try:
            raw = base64.b64decode(raw.strip(), validate=True)
        except ValueError:
            raise ConfigError("encryption_key", "is not base64 (expected 32 random bytes, base64-encoded)") from None
    if len(raw) != 32:
        raise ConfigError("encryption_key", f"must be 32 bytes (AES-256), got {len(raw)}")
    return raw


def key_fingerprint(key: bytes) -> str:
    """A short, non-secret name of a key (so a restore can say "wrong key" instead of "corrupt")."""
    return hashlib.sha256(b"helix-ops backup key v1\0" + key).hexdigest()[:16]


def _aad(counter: int, last: bool) -> bytes:
    return struct.pack(">QB", counter, 1 if last else 0)


class Encryptor:
    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._prefix = os.urandom(8)
        self._counter = 0
        self._buf = bytearray()
        self._started = False

    def _seal(self, data: bytes, last: bool) -> bytes:
        nonce = self._prefix + struct.pack(">I", self._counter)
        out = self._aead.encrypt(nonce, data, _aad(self._counter, last))
        self._counter += 1
        if self._counter >= 1 << 32:
            raise DriverError("object too large for one encryption stream")
        return out

    def _header(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return MAGIC + struct.pack(">I", CHUNK) + self._prefix

    def update(self, data: bytes) -> bytes:
        self._buf += data
        out = [self._header()]
        # Keep at least one byte buffered so the last chunk is always sealed by finish() with the last flag.
        while len(self._buf) > CHUNK:
            out.append(self._seal(bytes(self._buf[:CHUNK]), False))
            del self._buf[:CHUNK]
        return b"".join(out)

    def finish(self) -> bytes:
        out = self._header() + self._seal(bytes(self._buf), True)
        self._buf.clear()
        return out


def decrypt(chunks: Iterator[bytes], key: bytes) -> Iterator[bytes]:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    buf = bytearray()
    header_len = len(MAGIC) + 4 + 8
    it = iter(chunks)
    while len(buf) < header_len:
        nxt = next(it, None)
        if nxt is None:
            raise BackupIntegrityError("encrypted object is truncated (no header)")
        buf += nxt
    if bytes(buf[:len(MAGIC)]) != MAGIC:
        raise BackupIntegrityError("object is not a helix-ops encrypted stream")
    (size,) = struct.unpack(">I", buf[len(MAGIC):len(MAGIC) + 4])
    prefix = bytes(buf[len(MAGIC) + 4:header_len])
    del buf[:header_len]
    sealed = size + 16
    counter = 0

    def open_(data: bytes, last: bool) -> bytes:
        try:
            return aead.decrypt(prefix + struct.pack(">I", counter), data, _aad(counter, last))
        except InvalidTag:
            raise BackupIntegrityError(
                f"encrypted chunk {counter} does not authenticate: wrong key, or the object was altered or "
                "truncated") from None

    for piece in it:
        buf += piece
        while len(buf) > sealed:
            yield open_(bytes(buf[:sealed]), False)
            del buf[:sealed]
            counter += 1
    if len(buf) < 16:
        raise BackupIntegrityError("encrypted object is truncated")
    yield open_(bytes(buf), True)
