"""Backup storage: a local folder or an S3 bucket, streamed in constant memory.

Every object goes through one pipeline: raw bytes → sha256 (raw) → zstd → optional AES-256-GCM in 1 MiB
chunks → sha256 (stored) → the backend (a ``.partial`` file renamed on close, or an S3 multipart upload).
The manifest (:class:`helix_ops.backup.Manifest`) is written **last** and atomically (rename / single PUT):
a backup without a manifest does not exist for :meth:`BackupStore.list`, retention or restore. Deleting a
backup removes its manifest first.

Modules, by concern (import from here; the names below are the package's interface):

* :mod:`~drivers.storage.store`: :class:`BackupStore` (the pipeline, manifest, list, delete, verify),
  :class:`BackupWriter`, :class:`ObjectWriter` and the :class:`~drivers.storage.store.Sink` a backend writes to
* :mod:`~drivers.storage.crypto`: the optional client-side encryption, :func:`parse_key`, :func:`key_fingerprint`
* :mod:`~drivers.storage.streams`: :data:`CHUNK`, :class:`IterStream`, :func:`read_chunks`
* :mod:`~drivers.storage.local`: :class:`LocalStore` (a folder)
* :mod:`~drivers.storage.s3`: :class:`S3Store`, and the S3 client from prefect-aws (:func:`s3_client_for` a
  credentials block, :func:`s3_client` from plain settings)

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

from typing import Any

from pydantic import SecretStr

from drivers.storage.crypto import key_fingerprint, parse_key
from drivers.storage.local import LocalStore
from drivers.storage.s3 import S3_CLIENT_CONFIG, S3_PART, S3Store, client_config, s3_client, s3_client_for
from drivers.storage.store import BackupStore, BackupWriter, ObjectWriter
from drivers.storage.streams import CHUNK, IterStream, read_chunks

__all__ = [
    "CHUNK", "S3_CLIENT_CONFIG", "S3_PART", "BackupStore", "BackupWriter", "IterStream", "LocalStore",
    "ObjectWriter", "S3Store", "client_config", "key_fingerprint", "parse_key", "read_chunks", "s3_client",
    "s3_client_for", "store_from_block",
]


def store_from_block(block: Any, key: SecretStr | bytes | str | None = None) -> BackupStore:
    """A store from ``blocks.storage.load_backup_storage``'s result: a ``LocalBackupStorage`` block, or a
    prefect-aws ``S3Bucket`` whose credentials block makes the client (:func:`s3_client_for`)."""
    if hasattr(block, "folder") and hasattr(block, "path"):
        return LocalStore(block.path, key=key)
    return S3Store(s3_client_for(block.credentials), block.bucket_name, block.bucket_folder or "", key=key)
