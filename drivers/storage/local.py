"""Backups in a local (or mounted) folder: ``root/<backup id>/<object>``.

An object is written to ``<object>.partial`` and renamed on commit; the manifest and other small objects are
written to a temporary file, fsynced and renamed, and the folder is fsynced after.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import SecretStr

from drivers.storage.store import BackupStore, Sink
from drivers.storage.streams import read_chunks
from helix_ops.backup import MANIFEST_NAME, validate_backup_id, validate_object_name
from helix_ops.errors import ConfigError, DriverError


class _FileSink(Sink):
    def __init__(self, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        self.final = final
        self.tmp = final.with_name(final.name + ".partial")
        self.f = open(self.tmp, "wb")  # noqa: SIM115

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
    """Backups in ``root/<backup id>/<object>``."""

    def __init__(self, root: str | os.PathLike[str], key: SecretStr | bytes | str | None = None,
                 level: int = 3) -> None:
        super().__init__(key, level)
        self.root = Path(root)
        if not self.root.is_absolute():
            raise ConfigError("backup.storage.path", f"{root} must be absolute")
        self.where = str(self.root)

    def _dir(self, backup_id: str) -> Path:
        return self.root / validate_backup_id(backup_id)

    def _sink(self, backup_id: str, name: str) -> Sink:
        try:
            return _FileSink(self._dir(backup_id) / name)
        except OSError as exc:
            raise DriverError(f"cannot write to {self.root}: {exc.strerror}", hint="check the folder and its "
                                                                                    "permissions") from exc

    def _get(self, backup_id: str, name: str) -> Iterator[bytes]:
        with open(self._dir(backup_id) / validate_object_name(name) if name != MANIFEST_NAME
                  else self._dir(backup_id) / name, "rb") as f:
            yield from read_chunks(f)

    def _put_small(self, backup_id: str, name: str, data: bytes) -> None:
        folder = self._dir(backup_id)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / name)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

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
