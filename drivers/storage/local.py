"""Backups in a local (or mounted) folder: ``root/<backup id>/<object>``.

An object is written to ``<object>.partial`` and renamed on commit; the manifest and other small objects are
written to a temporary file, fsynced and renamed, and the folder is fsynced after.

**Owner-only at rest.** A backup holds the whole graph and the Redis dataset, so everything this store creates
is its owner's alone: every file 0600, every folder it makes (the root and its missing parents included) 0700.
The store sets these modes itself on each file and folder it creates (:data:`FILE_MODE`, :data:`DIR_MODE`,
applied with ``fchmod``/``chmod`` after creation): the result is what a ``077`` umask gives, whatever umask the
caller runs under, without changing the process's umask (shared by every thread of a worker). It refuses to
write into a folder (the root or a backup's folder) that its group or others can write to: they could replace
or plant a backup (even with the sticky bit, a planted ``<id>/manifest.json`` would be listed and restored).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import SecretStr

from drivers.storage.store import BackupStore, Sink
from drivers.storage.streams import DIR_MODE, FILE_MODE, open_private, read_chunks
from helix_ops.backup import MANIFEST_NAME, validate_backup_id, validate_object_name
from helix_ops.errors import ConfigError, DriverError

__all__ = ["DIR_MODE", "FILE_MODE", "LocalStore", "private_dir", "refuse_shared_folder"]


def refuse_shared_folder(folder: Path, field: str = "backup.storage.path") -> None:
    """Raise :class:`ConfigError` when ``folder``'s group or others can write to it (naming the fix)."""
    mode = folder.stat().st_mode
    who = [w for bit, w in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "every user")) if mode & bit]
    if who:
        raise ConfigError(field, f"refusing to write backups into {folder}: {' and '.join(who)} can write to it "
                                 f"(mode {stat.S_IMODE(mode):04o}); fix: chmod go-w {folder} (or use a folder only "
                                 "this worker's user can write)")


def private_dir(folder: Path) -> Path:
    """Create ``folder`` and its missing parents with mode 0700 (set explicitly, whatever the umask)."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made by another process in between: checked by the caller
            continue
        os.chmod(d, DIR_MODE)
    return folder


class _FileSink(Sink):
    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(final.name + ".partial")
        self.f = open_private(self.tmp)

    def write(self, data: bytes) -> None:
        self.f.write(data)

    def commit(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


class LocalStore(BackupStore):
    """Backups in ``root/<backup id>/<object>``, owner-only (files 0600, folders 0700; see the module)."""

    def __init__(self, root: str | os.PathLike[str], key: SecretStr | bytes | str | None = None,
                 level: int = 3) -> None:
        super().__init__(key, level)
        self.root = Path(root)
        if not self.root.is_absolute():
            raise ConfigError("backup.storage.path", f"{root} must be absolute")
        self.where = str(self.root)

    def _dir(self, backup_id: str) -> Path:
        return self.root / validate_backup_id(backup_id)

    def _writable_dir(self, backup_id: str) -> Path:
        """The backup's folder, made 0700 (with the root) when missing; refused when others can write to the
        root or to it."""
        refuse_shared_folder(private_dir(self.root))
        folder = self._dir(backup_id)
        refuse_shared_folder(private_dir(folder))
        return folder

    def _sink(self, backup_id: str, name: str) -> Sink:
        try:
            return _FileSink(self._writable_dir(backup_id) / name)
        except OSError as exc:
            raise DriverError(f"cannot write to {self.root}: {exc.strerror}", hint="check the folder and its "
                                                                                    "permissions") from exc

    def _get(self, backup_id: str, name: str) -> Iterator[bytes]:
        with open(self._dir(backup_id) / validate_object_name(name) if name != MANIFEST_NAME
                  else self._dir(backup_id) / name, "rb") as f:
            yield from read_chunks(f)

    def _put_small(self, backup_id: str, name: str, data: bytes) -> None:
        write_atomically(self._writable_dir(backup_id), name, data)

    def _ids(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        if not self.root.is_dir():
            return out
        for d in self.root.iterdir():
            try:
                validate_backup_id(d.name)
            except ConfigError:
                continue
            if d.is_dir():
                out[d.name] = {p.name for p in d.iterdir()}
        return out

    def _delete_objects(self, backup_id: str, names: list[str] | None = None) -> None:
        folder = self._dir(backup_id)
        if names is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            for n in names:
                (folder / n).unlink(missing_ok=True)


def write_atomically(folder: Path, name: str, data: bytes) -> Path:
    """``data`` as ``folder/name``, mode 0600, all or nothing: a temporary file fsynced, renamed, and the folder
    fsynced (a crash leaves the old object or the new one, never half of one)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")  # created 0600
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return folder / name
