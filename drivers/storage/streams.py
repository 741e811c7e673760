"""Byte streams shared by every backend: the chunk size, a file object over an iterator of chunks, and the
reverse (a file read in chunks)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, BinaryIO

CHUNK = 1 << 20
"""Plaintext chunk size of the encryption and the read size of every stream."""


class IterStream(io.RawIOBase):
    """A read-only file object over an iterator of byte chunks (for tarfile, line readers, …)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            nxt = next(self._it, None)
            if nxt is None:
                return 0
            self._buf = nxt
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def read_chunks(f: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    while True:
        data = f.read(size)
        if not data:
            return
        yield data
