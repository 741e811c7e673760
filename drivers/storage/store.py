"""Backup storage: a local folder or an S3 bucket, streamed in constant memory.

Every object goes through one pipeline: raw bytes → sha256 (raw) → zstd → optional AES-256-GCM in 1 MiB
chunks → sha256 (stored) → the backend (a ``.partial`` file renamed on close, or an S3 multipart upload).
The manifest (:class:`helix_ops.backup.Manifest`) is written **last** and atomically (rename / single PUT):
a backup without a manifest does not exist for :meth:`BackupStore.list`, retention or restore. Deleting a
backup removes its manifest first.

Encryption (optional, client-side): each chunk is sealed with AES-256-GCM under a 12-byte nonce (8 random
bytes per object + a 4-byte counter); the associated data binds the chunk counter and a "last chunk" flag,
so reordering, dropping or truncating chunks fails authentication. The key never leaves this process; only
its fingerprint (first 16 hex of sha256 of a domain-separated key hash) is recorded.

Example::

    store = LocalStore("/var/lib/helix-ops/backups")
    with store.begin("prod-20250102T020000Z-a1b2c3") as w:
        with w.object("redis.rdb.zst", component="redis", kind="rdb") as obj:
            for chunk in chunks:
                obj.write(chunk)
        w.commit(manifest_without_objects)      # fills in objects, writes manifest.json last
    store.verify("prod-20250102T020000Z-a1b2c3")  # re-reads every object and compares sha256 and size
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import zstandard
from pydantic import SecretStr

from helix_ops.backup import MANIFEST_NAME, Manifest, ObjectEntry, validate_backup_id, validate_object_name
from helix_ops.errors import BackupIntegrityError, ConfigError, DriverError

CHUNK = 1 << 20
"""Plaintext chunk size of the encryption and the read size of every stream."""

S3_PART = 8 << 20
"""S3 multipart part size (the only buffer that grows with the data, bounded)."""

_MAGIC = b"HXAE1\0"


# --- encryption ---------------------------------------------------------------------------------------------


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


class _Encryptor:
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
        return _MAGIC + struct.pack(">I", CHUNK) + self._prefix

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


def _decrypt(chunks: Iterator[bytes], key: bytes) -> Iterator[bytes]:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    buf = bytearray()
    header_len = len(_MAGIC) + 4 + 8
    it = iter(chunks)
    while len(buf) < header_len:
        nxt = next(it, None)
        if nxt is None:
            raise BackupIntegrityError("encrypted object is truncated (no header)")
        buf += nxt
    if bytes(buf[:len(_MAGIC)]) != _MAGIC:
        raise BackupIntegrityError("object is not a helix-ops encrypted stream")
    (size,) = struct.unpack(">I", buf[len(_MAGIC):len(_MAGIC) + 4])
    prefix = bytes(buf[len(_MAGIC) + 4:header_len])
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


# --- streams ------------------------------------------------------------------------------------------------


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


class ObjectWriter:
    """Writes one object: ``write(bytes)`` raw data, ``close()`` → :class:`ObjectEntry`. Constant memory."""

    def __init__(self, name: str, component: str, kind: str, sink: _Sink, key: bytes | None, level: int) -> None:
        self.name, self.component, self.kind = name, component, kind
        self._sink = sink
        self._raw = hashlib.sha256()
        self._stored = hashlib.sha256()
        self._raw_size = 0
        self._size = 0
        self._zstd = zstandard.ZstdCompressor(level=level).compressobj()
        self._enc = _Encryptor(key) if key else None
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


class _Sink:
    def write(self, data: bytes) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


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
    def _sink(self, backup_id: str, name: str) -> _Sink: raise NotImplementedError
    def _get(self, backup_id: str, name: str) -> Iterator[bytes]: raise NotImplementedError
    def _put_small(self, backup_id: str, name: str, data: bytes) -> None: raise NotImplementedError
    def _ids(self) -> dict[str, set[str]]: raise NotImplementedError
    def _delete_objects(self, backup_id: str, names: list[str] | None = None) -> None: raise NotImplementedError

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
            stream = _decrypt(stream, self._key)
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
        with open(path, "wb") as f:
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


# --- local folder -------------------------------------------------------------------------------------------


class _FileSink(_Sink):
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

    def _sink(self, backup_id: str, name: str) -> _Sink:
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


# --- S3 -----------------------------------------------------------------------------------------------------


def _s3_error(exc: Exception, doing: str, where: str) -> DriverError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""
    return DriverError(f"S3 {where}: {type(exc).__name__}{' ' + code if code else ''} while {doing}",
                       hint="is the endpoint reachable, the bucket there and the storage block's keys right?")


class _S3Sink(_Sink):
    def __init__(self, store: S3Store, key: str) -> None:
        self.store, self.key = store, key
        self.buf = bytearray()
        self.parts: list[dict[str, Any]] = []
        self.upload_id: str | None = None

    def _flush_part(self) -> None:
        c = self.store.client
        if self.upload_id is None:
            self.upload_id = self.store._call("starting an upload", lambda: c.create_multipart_upload(
                Bucket=self.store.bucket, Key=self.key)["UploadId"])
        n = len(self.parts) + 1
        body = bytes(self.buf)
        etag = self.store._call(f"uploading part {n}", lambda: c.upload_part(
            Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=n, Body=body)["ETag"])
        self.parts.append({"ETag": etag, "PartNumber": n})
        self.buf.clear()

    def write(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= S3_PART:
            self._flush_part()

    def commit(self) -> None:
        c = self.store.client
        if self.upload_id is None:  # small object: one PUT
            body = bytes(self.buf)
            self.store._call("uploading", lambda: c.put_object(Bucket=self.store.bucket, Key=self.key, Body=body))
            return
        if self.buf:
            self._flush_part()
        self.store._call("completing an upload", lambda: c.complete_multipart_upload(
            Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}))

    def abort(self) -> None:
        if self.upload_id is not None:
            try:
                self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key,
                                                         UploadId=self.upload_id)
            except Exception:  # noqa: BLE001 - best effort
                pass


class S3Store(BackupStore):
    """Backups under ``s3://bucket/<prefix><backup id>/<object>`` (any S3-compatible endpoint).

    ``client`` is a boto3 S3 client (see :func:`s3_client`); its retry configuration bounds how long an
    unreachable endpoint is tried.
    """

    def __init__(self, client: Any, bucket: str, prefix: str = "", key: SecretStr | bytes | str | None = None,
                 level: int = 3) -> None:
        super().__init__(key, level)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if ".." in prefix or prefix.startswith("/"):
            raise ConfigError("backup.storage.prefix", f"{prefix!r} must be relative and hold no '..'")
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.where = f"s3://{bucket}/{prefix}"

    def _call(self, doing: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            if type(exc).__module__.startswith(("botocore", "boto3", "urllib3")):
                raise _s3_error(exc, doing, self.where) from exc
            raise

    def _s3key(self, backup_id: str, name: str) -> str:
        return f"{self.prefix}{validate_backup_id(backup_id)}/{name}"

    def _sink(self, backup_id: str, name: str) -> _Sink:
        return _S3Sink(self, self._s3key(backup_id, name))

    def _get(self, backup_id: str, name: str) -> Iterator[bytes]:
        key = self._s3key(backup_id, name)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from None
            raise _s3_error(exc, f"reading {key}", self.where) from exc
        try:
            yield from body.iter_chunks(CHUNK)
        except Exception as exc:
            raise _s3_error(exc, f"reading {key}", self.where) from exc
        finally:
            body.close()

    def _put_small(self, backup_id: str, name: str, data: bytes) -> None:
        key = self._s3key(backup_id, name)
        self._call(f"writing {key}", lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data))

    def _ids(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        pages = self._call("listing backups", lambda: list(self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix)))
        for page in pages:
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(self.prefix):]
                if "/" not in rest:
                    continue
                bid, name = rest.split("/", 1)
                try:
                    validate_backup_id(bid)
                except ConfigError:
                    continue
                out.setdefault(bid, set()).add(name)
        return out

    def _delete_objects(self, backup_id: str, names: list[str] | None = None) -> None:
        if names is None:
            names = sorted(self._ids().get(backup_id, set()))
        for n in names:
            key = self._s3key(backup_id, n)
            self._call(f"deleting {key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=key))


def s3_client(endpoint_url: str | None, access_key: str | None, secret_key: SecretStr | str | None,
              region: str | None = None, max_attempts: int = 3, connect_timeout_s: float = 5,
              read_timeout_s: float = 60) -> Any:
    """A boto3 S3 client with bounded retries and timeouts (path-style addressing for S3-compatible servers)."""
    import boto3
    from botocore.config import Config

    secret = secret_key.get_secret_value() if isinstance(secret_key, SecretStr) else secret_key
    return boto3.client(
        "s3", endpoint_url=endpoint_url, aws_access_key_id=access_key, aws_secret_access_key=secret,
        region_name=region or "us-east-1",
        config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=connect_timeout_s,
                      read_timeout=read_timeout_s, s3={"addressing_style": "path"},
                      request_checksum_calculation="when_required", response_checksum_validation="when_required"))


def store_from_block(block: Any, key: SecretStr | bytes | str | None = None) -> BackupStore:
    """A store from ``blocks.storage.load_backup_storage``'s result (LocalBackupStorage or prefect-aws S3Bucket)."""
    if hasattr(block, "folder") and hasattr(block, "path"):
        return LocalStore(block.path, key=key)
    creds = block.credentials
    params = creds.aws_client_parameters
    client = s3_client(getattr(params, "endpoint_url", None), creds.aws_access_key_id,
                       creds.aws_secret_access_key, creds.region_name)
    return S3Store(client, block.bucket_name, block.bucket_folder or "", key=key)
