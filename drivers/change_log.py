"""The durable change history: one JSON object per change record in the environment's backup store.

The gate's records (``tasks/records.py``) are appended to a JSON-lines file on the worker, which a Kubernetes
flow-run pod takes with it. This module keeps a copy where the backups are, so the history outlives the worker:

* a local folder: ``<backup.storage.path>/changes/<env>/<name>.json`` (folders 0700, files 0600, written to a
  temporary file, fsynced and renamed, like the store's manifests);
* S3: ``s3://<bucket>/<prefix>changes/<env>/<name>.json`` (one PUT).

``<name>`` is the record's UTC time to the microsecond and a random suffix (``20260102T020304.123456Z-9f3a…``):
names sort by time, and two writers (two runs, two workers) never write the same object, so nothing is ever
read-modified-written. ``changes`` is not a backup id, so backup listing, retention and the orphan sweep never
see these objects.

The records are plain JSON (not encrypted with the backup key, like the manifests): they hold who, when, the
plan and the result of a change, never a secret. Only the store's public attributes are used (``LocalStore.root``;
``S3Store.client``, ``bucket``, ``prefix``).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any

from drivers.storage import BackupStore, LocalStore, S3Store
from drivers.storage.local import private_dir, refuse_shared_folder, write_atomically
from helix_ops.errors import ConfigError, DriverError

PREFIX = "changes"
RECORD_LIMIT = 1 << 20
"""A record larger than this (1 MiB) is not read back (it is not one the gate wrote)."""
_ENV = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{12}\.json\Z")


def _env(environment: str) -> str:
    if not isinstance(environment, str) or not _ENV.match(environment):
        raise ConfigError("environment", f"{environment!r} is not an environment name")
    return environment


def record_name(at: datetime | None = None) -> str:
    """``<UTC time to the µs>-<12 random hex>.json``: sorts by time, unique per writer."""
    at = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{at.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:12]}.json"


class ChangeLog:
    """The change records of one store (local folder or S3), per environment."""

    def __init__(self, store: BackupStore) -> None:
        if not isinstance(store, LocalStore | S3Store):
            raise ConfigError("backup.storage", f"no change history on a {type(store).__name__}")
        self.store = store

    @property
    def where(self) -> str:
        return f"{self.store.where.rstrip('/')}/{PREFIX}/"

    def append(self, environment: str, record: dict[str, Any], at: datetime | None = None) -> str:
        """Write ``record`` as a new object; returns where (a path or an ``s3://`` URL)."""
        data = json.dumps(record, sort_keys=True).encode()
        name = record_name(at)
        env = _env(environment)
        if isinstance(self.store, LocalStore):
            return self._append_local(env, name, data)
        key = f"{self.store.prefix}{PREFIX}/{env}/{name}"
        self._s3(f"writing {key}", lambda: self.store.client.put_object(  # type: ignore[union-attr]
            Bucket=self.store.bucket, Key=key, Body=data))  # type: ignore[union-attr]
        return f"s3://{self.store.bucket}/{key}"  # type: ignore[union-attr]

    def _append_local(self, env: str, name: str, data: bytes) -> str:
        root = self.store.root  # type: ignore[union-attr]
        try:
            refuse_shared_folder(private_dir(root))
            refuse_shared_folder(private_dir(root / PREFIX))
            folder = root / PREFIX / env
            refuse_shared_folder(private_dir(folder))
            write_atomically(folder, name, data)
        except OSError as exc:
            raise DriverError(f"cannot write change records to {root}: {exc.strerror or exc}",
                              hint="check backup.storage.path and its permissions") from exc
        return str(folder / name)

    def names(self, environment: str) -> list[str]:
        """The record objects' names of ``environment``, oldest first."""
        env = _env(environment)
        if isinstance(self.store, LocalStore):
            folder = self.store.root / PREFIX / env
            if not folder.is_dir():
                return []
            return sorted(p.name for p in folder.iterdir() if _NAME.match(p.name))
        prefix = f"{self.store.prefix}{PREFIX}/{env}/"
        client, bucket = self.store.client, self.store.bucket
        pages = self._s3("listing change records", lambda: list(
            client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)))
        keys = [o["Key"][len(prefix):] for page in pages for o in page.get("Contents", [])]
        return sorted(k for k in keys if _NAME.match(k))

    def read(self, environment: str, name: str) -> dict[str, Any]:
        """One record; :class:`ValueError` when it is not a JSON object (or too large)."""
        env = _env(environment)
        if not _NAME.match(name):
            raise ConfigError("record", f"{name!r} is not a change record's name")
        if isinstance(self.store, LocalStore):
            with open(self.store.root / PREFIX / env / name, "rb") as f:
                data = f.read(RECORD_LIMIT + 1)
        else:
            key = f"{self.store.prefix}{PREFIX}/{env}/{name}"
            client, bucket = self.store.client, self.store.bucket
            body = self._s3(f"reading {key}", lambda: client.get_object(Bucket=bucket, Key=key)["Body"])
            try:
                data = body.read(RECORD_LIMIT + 1)
            finally:
                body.close()
        if len(data) > RECORD_LIMIT:
            raise ValueError(f"{name}: larger than {RECORD_LIMIT} bytes")
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict):
            raise ValueError(f"{name}: not a JSON object")
        return doc

    def list(self, environment: str, limit: int | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """The newest ``limit`` records (all when None), newest first, each with ``_name`` set; and one line per
        record that could not be read (skipped)."""
        names = self.names(environment)[::-1]
        if limit is not None:
            names = names[:limit]
        out, skipped = [], []
        for name in names:
            try:
                out.append({**self.read(environment, name), "_name": name})
            except (ValueError, OSError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                skipped.append(f"{name}: {type(exc).__name__}: {exc}")
        return out, skipped

    def _s3(self, doing: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:
            if type(exc).__module__.startswith(("botocore", "boto3", "urllib3")):
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                raise DriverError(f"S3 {self.where}: {type(exc).__name__}{' ' + code if code else ''} while {doing}",
                                  hint="is the endpoint reachable, the bucket there and the storage block's keys "
                                       "right?") from exc
            raise
