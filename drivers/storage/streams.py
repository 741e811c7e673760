"""Byte streams shared by every backend: the chunk size, a file object over an iterator of chunks, and the
reverse (a file read in chunks)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1 << 20
"""Plaintext chunk size of the encryption and the read size of every stream."""
FILE_MODE = 0o600
"""The mode of every file the local store writes (a backup's objects, its manifest, a fetched object)."""
DIR_MODE = 0o700
"""The mode of every folder the local store creates."""


def open_private(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for writing (created or truncated) with mode :data:`FILE_MODE`, set with ``fchmod`` so
    neither the caller's umask nor an earlier file's mode matters; a symlink at ``path`` is refused."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(Path(path), flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


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
