"""Backup storage blocks: a local folder (:class:`LocalBackupStorage`) or an S3 bucket (prefect-aws).

S3 reuses prefect-aws: an ``AwsCredentials`` block (access key, region, ``endpoint_url`` for S3-compatible
servers such as S3Proxy or MinIO) and an ``S3Bucket`` block (bucket, folder) that references it. Both are
saved under the descriptor's ``credentials.storage`` name (block names are unique per block type).

Example::

    from blocks.storage import save_s3_storage, load_backup_storage
    save_s3_storage("helix-staging-s3", bucket="helix-backups", access_key_id="AKIA...",
                    secret_access_key=SecretStr("..."), endpoint_url="http://127.0.0.1:9000")
    storage = load_backup_storage(descriptor)   # S3Bucket or LocalBackupStorage
"""

from __future__ import annotations

from pathlib import Path

from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters
from pydantic import Field, SecretStr

from blocks.credentials import HelixBlock
from helix_ops.descriptor import Descriptor, LocalStorage
from helix_ops.errors import ConfigError


class LocalBackupStorage(HelixBlock):
    """Backups in a local (or mounted) folder: ``path``, absolute.

    Example::

        LocalBackupStorage(path="/var/lib/helix-ops/backups").save("helix-local-backups")
    """

    _block_type_name = "Helix Local Backup Storage"
    _block_type_slug = "helix-local-backup-storage"
    _description = "A folder that holds Helix backups."

    path: str = Field(pattern=r"^/", description="Absolute path of the backup folder.")

    @property
    def folder(self) -> Path:
        """``path`` as a :class:`~pathlib.Path`."""
        return Path(self.path)


def s3_storage_blocks(
    bucket: str,
    *,
    prefix: str = "",
    access_key_id: str | None = None,
    secret_access_key: SecretStr | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
) -> tuple[AwsCredentials, S3Bucket]:
    """Build (unsaved) prefect-aws blocks for an S3 bucket; without keys boto's default chain is used.

    ``endpoint_url`` points at an S3-compatible server (``http://127.0.0.1:9000``). ``profile`` names a profile
    of the worker's AWS config files (``~/.aws/config``, ``AWS_CONFIG_FILE``). The backup flows' client is
    prefect-aws's own (``drivers.storage.s3_client_for``), so a session token or an assumed role set on the
    ``AwsCredentials`` block (UI or code) is used too.
    """
    if (access_key_id is None) != (secret_access_key is None):
        raise ConfigError("storage", "give both the access key id and the secret access key, or neither")
    params = AwsClientParameters(endpoint_url=endpoint_url) if endpoint_url else AwsClientParameters()
    creds = AwsCredentials(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region,
        profile_name=profile,
        aws_client_parameters=params,
    )
    return creds, S3Bucket(bucket_name=bucket, credentials=creds, bucket_folder=prefix)


def save_s3_storage(name: str, bucket: str, *, overwrite: bool = False, **settings: object) -> S3Bucket:
    """Save ``AwsCredentials`` and ``S3Bucket`` blocks, both called ``name``; returns the bucket block.

    ``settings`` are :func:`s3_storage_blocks`'s keyword arguments.
    """
    creds, bucket_block = s3_storage_blocks(bucket, **settings)  # type: ignore[arg-type]
    creds.save(name, overwrite=overwrite)
    bucket_block.save(name, overwrite=overwrite)
    return bucket_block


def load_backup_key(descriptor: Descriptor) -> SecretStr | None:
    """The environment's backup encryption key (``credentials.backup_key``, a Prefect ``Secret`` block), or
    None when backups are not encrypted. The key is checked (32 bytes, base64) here, before any backup starts."""
    name = descriptor.credentials.backup_key
    if name is None:
        return None
    from prefect.blocks.system import Secret

    from drivers.storage import parse_key

    try:
        value = Secret.load(name).get()
    except ValueError:
        raise ConfigError("credentials.backup_key", f"there is no Secret block named {name!r}: create it with "
                          f"Secret(value=<openssl rand -base64 32>).save({name!r})") from None
    key = SecretStr(str(value))
    parse_key(key)  # ConfigError naming encryption_key if it is not 32 bytes of base64
    return key


def load_backup_storage(descriptor: Descriptor) -> LocalBackupStorage | S3Bucket:
    """The backup storage of an environment.

    S3: the ``S3Bucket`` block named ``credentials.storage``. Local: the ``LocalBackupStorage`` block of that
    name if there is one, else a block built (not saved) from ``backup.storage.path``.
    """
    storage = descriptor.backup.storage
    name = descriptor.credentials.storage
    if isinstance(storage, LocalStorage):
        if name is None:
            return LocalBackupStorage(path=storage.path)
        return LocalBackupStorage.load(name)
    if name is None:
        raise ConfigError("credentials.storage", "S3 backups need the name of the storage block")
    return S3Bucket.load(name)
