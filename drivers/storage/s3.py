"""Backups in an S3 bucket (any S3-compatible endpoint): ``s3://bucket/<prefix><backup id>/<object>``.

An object is sent as one PUT when it is small, else as a multipart upload of :data:`S3_PART` parts (aborted
when the object is); the manifest is one PUT after every upload completed.

The boto3 client comes from prefect-aws (:func:`s3_client_for`): the ``AwsCredentials`` block's keys, session
token, profile, region, assumed role and ``aws_client_parameters`` (``endpoint_url`` for S3Proxy or MinIO,
``verify``, …) are used as prefect-aws uses them. What helix-ops adds is a botocore config
(:data:`S3_CLIENT_CONFIG`: bounded retries and timeouts, path-style addressing, checksums only when required),
under the block's own ``aws_client_parameters.config``.

Secrets: nothing here logs or formats a credential. prefect-aws keeps ``aws_session_token`` as plain text in
the block (not a ``SecretStr``), so an ``AwsCredentials`` with a token must not be printed; :class:`S3Store`
holds only the client, and its repr and errors name the bucket and prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import SecretStr

from drivers.storage.store import BackupStore, Sink
from drivers.storage.streams import CHUNK
from helix_ops.backup import validate_backup_id
from helix_ops.errors import ConfigError, DriverError

S3_PART = 8 << 20
"""S3 multipart part size (the only buffer that grows with the data, bounded)."""

S3_CLIENT_CONFIG: Mapping[str, Any] = {
    "retries": {"max_attempts": 3, "mode": "standard"},  # 1 try + 3 retries: an unreachable endpoint fails soon
    "connect_timeout": 5,
    "read_timeout": 60,
    "s3": {"addressing_style": "path"},  # S3-compatible servers rarely have per-bucket host names
    # S3Proxy and older MinIO predate the CRC checksums newer botocore sends and asks for by default.
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}
"""What helix-ops adds to prefect-aws's S3 client: botocore ``Config`` keyword arguments. A block's own
``aws_client_parameters.config`` wins key by key (``retries`` and ``s3`` are merged one level down)."""


def _s3_error(exc: Exception, doing: str, where: str) -> DriverError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""
    return DriverError(f"S3 {where}: {type(exc).__name__}{' ' + code if code else ''} while {doing}",
                       hint="is the endpoint reachable, the bucket there and the storage block's keys right?")


class _S3Sink(Sink):
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

    ``client`` is a boto3 S3 client (see :func:`s3_client_for`); its retry configuration bounds how long an
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

    def _sink(self, backup_id: str, name: str) -> Sink:
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


def client_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`S3_CLIENT_CONFIG` under ``config`` (a block's ``aws_client_parameters.config``): ``config`` wins
    key by key, and inside ``retries`` and ``s3`` too."""
    merged = {k: dict(v) if isinstance(v, Mapping) else v for k, v in S3_CLIENT_CONFIG.items()}
    for k, v in (config or {}).items():
        base = merged.get(k)
        merged[k] = {**base, **v} if isinstance(base, dict) and isinstance(v, Mapping) else v
    return merged


def s3_client_for(credentials: Any) -> Any:
    """The boto3 S3 client prefect-aws makes from ``credentials`` (an ``AwsCredentials`` or ``MinIOCredentials``
    block, e.g. an ``S3Bucket``'s ``credentials``) with :func:`client_config` as its botocore config.

    Keys, session token, profile, region, assumed role, endpoint_url, verify: all as prefect-aws reads them
    (``get_s3_client``). The block itself is not changed: a copy carries the merged config. prefect-aws caches
    the client per credentials, so equal blocks share one (boto3 clients are thread-safe).
    """
    params = credentials.aws_client_parameters
    tuned = params.model_copy(update={"config": client_config(params.config)})
    return credentials.model_copy(update={"aws_client_parameters": tuned}).get_s3_client()


def s3_client(endpoint_url: str | None = None, access_key: str | None = None,
              secret_key: SecretStr | str | None = None, region: str | None = None, max_attempts: int = 3,
              connect_timeout_s: float = 5, read_timeout_s: float = 60, *,
              session_token: SecretStr | str | None = None, profile: str | None = None) -> Any:
    """:func:`s3_client_for` an unsaved ``AwsCredentials`` of these settings (tests, scripts). Without keys or
    ``profile``, boto's default chain (environment, ``~/.aws``, instance role) supplies the credentials; without
    ``region``, the profile's or the environment's region (S3 falls back to us-east-1)."""
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    def reveal(value: SecretStr | str | None) -> str | None:
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    config = {"retries": {"max_attempts": max_attempts, "mode": "standard"}, "connect_timeout": connect_timeout_s,
              "read_timeout": read_timeout_s}
    creds = AwsCredentials(
        aws_access_key_id=access_key, aws_secret_access_key=reveal(secret_key),
        aws_session_token=reveal(session_token), profile_name=profile, region_name=region,
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url, config=config))
    return s3_client_for(creds)
