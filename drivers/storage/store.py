"""The backend-independent part of backup storage: writing objects through the pipeline, the manifest last,
listing, deleting, reading back and verifying. :class:`BackupStore` leaves five primitives to a backend
(:mod:`drivers.storage.local`, :mod:`drivers.storage.s3`); a backend writes through a :class:`Sink`.

Every object goes through one pipeline: raw bytes → sha256 (raw) → zstd → optional AES-256-GCM in 1 MiB
chunks (:mod:`drivers.storage.crypto`) → sha256 (stored) → the backend's sink. The manifest
(:class:`helix_ops.backup.Manifest`) is written **last** and atomically: a backup without a manifest does not
exist for :meth:`BackupStore.list`, retention or restore. Deleting a backup removes its manifest first.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zstandard
from pydantic import SecretStr

from drivers.storage.crypto import Encryptor, decrypt, key_fingerprint, parse_key
from drivers.storage.streams import CHUNK, IterStream, open_private, read_chunks
from helix_ops.backup import MANIFEST_NAME, Manifest, ObjectEntry, validate_backup_id, validate_object_name
from helix_ops.errors import BackupIntegrityError, ConfigError, DriverError


class Sink:
    """Where one object's stored bytes go: ``write`` them, then ``commit`` (the object appears) or ``abort``."""

    def write(self, data: bytes) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class ObjectWriter:
    """Writes one object: ``write(bytes)`` raw data, ``close()`` → :class:`ObjectEntry`. Constant memory."""

    def __init__(self, name: str, component: str, kind: str, sink: Sink, key: bytes | None, level: int) -> None:
        self.name, self.component, self.kind = name, component, kind
        self._sink = sink
        self._raw = hashlib.sha256()
        self._stored = hashlib.sha256()
        self._raw_size = 0
        self._size = 0
        self._zstd = zstandard.ZstdCompressor(level=level).compressobj()
        self._enc = Encryptor(key) if key else None
        self.entry: ObjectEntry | None = None

    def _emit(self, data: bytes) -> None:
        if self._enc is not None:
            data = self._enc.update(data)
        if data:
            self._stored.update(data)
            self._size += len(data)
            self._sink.write(data)

    def write(self, data: bytes) -> int:
        if not data:
            return 0
        self._raw.update(data)
        self._raw_size += len(data)
        self._emit(self._zstd.compress(data))
        return len(data)

    def close(self) -> ObjectEntry:
        if self.entry is not None:
            return self.entry
        self._emit(self._zstd.flush())
        if self._enc is not None:
            tail = self._enc.finish()
            self._stored.update(tail)
            self._size += len(tail)
            self._sink.write(tail)
        self._sink.commit()
        self.entry = ObjectEntry(
            name=self.name, component=self.component, kind=self.kind, size=self._size,
            sha256=self._stored.hexdigest(), raw_size=self._raw_size, raw_sha256=self._raw.hexdigest(),
            compression="zstd", encryption="aes-256-gcm-chunked" if self._enc else "none")  # type: ignore[arg-type]
        return self.entry


class BackupWriter:
    """Objects of one backup being written; :meth:`commit` writes the manifest (last)."""

    def __init__(self, store: BackupStore, backup_id: str, key: bytes | None, level: int) -> None:
        self.store = store
        self.backup_id = backup_id
        self._key = key
        self._level = level
        self.entries: list[ObjectEntry] = []
        self.committed: Manifest | None = None

    @contextmanager
    def object(self, name: str, component: str, kind: str) -> Iterator[ObjectWriter]:
        """Stream one object; on an exception in the body the partial object is discarded."""
        validate_object_name(name)
        if any(e.name == name for e in self.entries):
            raise ConfigError("object", f"{name} written twice in backup {self.backup_id}")
        sink = self.store._sink(self.backup_id, name)
        writer = ObjectWriter(name, component, kind, sink, self._key, self._level)
        try:
            yield writer
            self.entries.append(writer.close())
        except BaseException:
            sink.abort()
            raise

    def put_file(self, name: str, component: str, kind: str, path: str | os.PathLike[str]) -> ObjectEntry:
        with self.object(name, component, kind) as w, open(path, "rb") as f:
            for chunk in read_chunks(f):
                w.write(chunk)
        return self.entries[-1]

    def commit(self, manifest: Manifest) -> Manifest:
        """Write the manifest (with this writer's objects and encryption flag) last; returns it."""
        if manifest.backup_id != self.backup_id:
            raise ConfigError("manifest.backup_id", f"{manifest.backup_id} is not {self.backup_id}")
        final = manifest.model_copy(update={
            "objects": tuple(self.entries), "encrypted": self._key is not None,
            "key_fingerprint": key_fingerprint(self._key) if self._key else None})
        final = Manifest.model_validate(final.model_dump())  # re-validate the whole thing
        self.store._put_manifest(final)
        self.committed = final
        return final

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        # Without a commit the backup does not exist; leave partial objects for retention's orphan sweep
        # (a killed process leaves them anyway), but remove them now when we can.
        if self.committed is None:
            try:
                self.store._delete_objects(self.backup_id)
            except Exception:  # noqa: BLE001 - best effort; the missing manifest is what matters
                pass


class BackupStore:
    """Common logic of the local and S3 backends (subclasses implement the ``_`` primitives)."""

    where: str = ""

    def __init__(self, key: SecretStr | bytes | str | None = None, level: int = 3) -> None:
        self._key = parse_key(key)
        self.level = level

    # primitives
    def _sink(self, backup_id: str, name: str) -> Sink: raise NotImplementedError
    def _get(self, backup_id: str, name: str) -> Iterator[bytes]: raise NotImplementedError
    def _put_small(self, backup_id: str, name: str, data: bytes) -> None: raise NotImplementedError
    def _ids(self) -> dict[str, set[str]]: raise NotImplementedError
    def _delete_objects(self, backup_id: str, names: list[str] | None = None) -> None: raise NotImplementedError

    def __repr__(self) -> str:
        # where and whether it encrypts: never the key, nor (S3) the client and its credentials
        return f"{type(self).__name__}({self.where!r}, encrypting={self.encrypting})"

    @property
    def encrypting(self) -> bool:
        return self._key is not None

    def begin(self, backup_id: str) -> BackupWriter:
        """Start writing backup ``backup_id`` (validated); refuses an id that already has a manifest."""
        validate_backup_id(backup_id)
        if MANIFEST_NAME in self._ids().get(backup_id, set()):
            raise ConfigError("backup_id", f"backup {backup_id} already exists in {self.where}")
        self.check_writable(backup_id)
        return BackupWriter(self, backup_id, self._key, self.level)

    def check_writable(self, backup_id: str) -> None:
        """Write and delete a tiny probe object under ``backup_id``: a store that cannot take the backup fails
        here, before a caller pauses writers or reads a database."""
        probe = ".write-check"
        try:
            self._put_small(backup_id, probe, b"")
            self._delete_objects(backup_id, [probe])
        except OSError as exc:
            raise DriverError(f"cannot write backups to {self.where}: {exc.strerror or exc}",
                              hint="point backup.storage.path at a folder this worker can create and write") from exc

    def _put_manifest(self, manifest: Manifest) -> None:
        self._put_small(manifest.backup_id, MANIFEST_NAME, manifest.to_json())

    def write_manifest(self, manifest: Manifest) -> None:
        """Replace the manifest of an existing backup (e.g. to record a verification)."""
        self.read_manifest(manifest.backup_id)
        self._put_manifest(manifest)

    def read_manifest(self, backup_id: str) -> Manifest:
        validate_backup_id(backup_id)
        if MANIFEST_NAME not in self._ids().get(backup_id, set()):
            raise ConfigError("backup_id", f"backup {backup_id} does not exist in {self.where} (no manifest)")
        data = b"".join(self._get(backup_id, MANIFEST_NAME))
        try:
            m = Manifest.from_json(data)
        except ConfigError as exc:
            raise BackupIntegrityError(f"backup {backup_id}: {exc}") from None
        if m.backup_id != backup_id:
            raise BackupIntegrityError(f"manifest under {backup_id} names {m.backup_id}")
        return m

    def list(self) -> list[Manifest]:
        """Every complete backup (one with a readable manifest), oldest first."""
        out = []
        for bid, names in sorted(self._ids().items()):
            if MANIFEST_NAME in names:
                try:
                    out.append(self.read_manifest(bid))
                except BackupIntegrityError:
                    continue
        return sorted(out, key=lambda m: (m.created_at, m.backup_id))

    def orphans(self) -> list[str]:
        """Ids with objects but no manifest (incomplete: a crashed or failed run)."""
        return sorted(bid for bid, names in self._ids().items() if MANIFEST_NAME not in names)

    def delete(self, backup_id: str) -> None:
        """Delete a backup: the manifest first (it stops existing), then its objects."""
        validate_backup_id(backup_id)
        names = self._ids().get(backup_id, set())
        if MANIFEST_NAME in names:
            self._delete_objects(backup_id, [MANIFEST_NAME])
        self._delete_objects(backup_id)

    def stored_chunks(self, backup_id: str, entry: ObjectEntry) -> Iterator[bytes]:
        """The object's bytes as stored, checked against the manifest's size and sha256 at the end."""
        digest = hashlib.sha256()
        size = 0
        try:
            for chunk in self._get(backup_id, entry.name):
                digest.update(chunk)
                size += len(chunk)
                yield chunk
        except FileNotFoundError:
            raise BackupIntegrityError(f"backup {backup_id}: object {entry.name} is missing") from None
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise BackupIntegrityError(
                f"backup {backup_id}: object {entry.name} does not match its manifest "
                f"(size {size} vs {entry.size}, sha256 {digest.hexdigest()[:12]}… vs {entry.sha256[:12]}…)")

    def raw_chunks(self, backup_id: str, entry: ObjectEntry) -> Iterator[bytes]:
        """The object's original content (decrypted, decompressed), raw sha256 and size checked at the end."""
        stream: Iterator[bytes] = self.stored_chunks(backup_id, entry)
        if entry.encryption != "none":
            if self._key is None:
                raise ConfigError("encryption_key", f"backup {backup_id} is encrypted: give the key")
            stream = decrypt(stream, self._key)
        # read_to_iter bounds every output piece to write_size (decompressobj may return a whole frame at once)
        pieces = zstandard.ZstdDecompressor().read_to_iter(IterStream(stream), read_size=CHUNK, write_size=CHUNK)
        digest = hashlib.sha256()
        size = 0
        try:
            for out in pieces:
                if out:
                    digest.update(out)
                    size += len(out)
                    yield out
        except zstandard.ZstdError as exc:
            raise BackupIntegrityError(f"backup {backup_id}: object {entry.name} does not decompress: {exc}") from None
        if size != entry.raw_size or digest.hexdigest() != entry.raw_sha256:
            raise BackupIntegrityError(f"backup {backup_id}: object {entry.name} decompresses to other content "
                                       "than was backed up")

    def open_raw(self, backup_id: str, entry: ObjectEntry) -> io.BufferedReader:
        """:meth:`raw_chunks` as a buffered binary file (``readline``, iteration, ``read(n)``)."""
        return io.BufferedReader(IterStream(self.raw_chunks(backup_id, entry)), buffer_size=CHUNK)

    def fetch_to_file(self, backup_id: str, entry: ObjectEntry, path: str | os.PathLike[str]) -> Path:
        with open_private(path) as f:  # the backup's content: owner-only here too
            for chunk in self.raw_chunks(backup_id, entry):
                f.write(chunk)
        return Path(path)

    def verify(self, backup_id: str, deep: bool = False) -> list[str]:
        """Re-read every object of ``backup_id`` and compare with the manifest; ``deep`` also decrypts and
        decompresses (needs the key if encrypted). Returns one line per object; raises
        :class:`BackupIntegrityError` on the first mismatch."""
        m = self.read_manifest(backup_id)
        if deep and m.encrypted and self._key is not None and m.key_fingerprint \
                and key_fingerprint(self._key) != m.key_fingerprint:
            raise ConfigError("encryption_key", f"backup {backup_id} was encrypted with another key "
                                                f"(fingerprint {m.key_fingerprint})")
        lines = []
        for entry in m.objects:
            for _ in (self.raw_chunks if deep else self.stored_chunks)(backup_id, entry):
                pass
            lines.append(f"{entry.name}: {entry.size} bytes, sha256 ok" + (", content ok" if deep else ""))
        return lines
