"""The reuse helpers: S3 (prefect-aws AwsCredentials + S3Bucket, endpoint_url for S3-compatible servers),
the container engine (prefect-docker DockerHost) and loading an environment's backup storage."""

from __future__ import annotations

import uuid

import pytest
from prefect_aws import AwsCredentials, S3Bucket
from prefect_docker import DockerHost
from pydantic import SecretStr

from blocks.engine import load_docker_host, save_docker_host
from blocks.storage import LocalBackupStorage, load_backup_storage, s3_storage_blocks, save_s3_storage
from helix_ops.errors import ConfigError
from tests.blocks.conftest import assert_no_secret


def test_s3_blocks_round_trip_with_endpoint_url():
    name = f"s3-{uuid.uuid4().hex[:10]}"
    save_s3_storage(
        name, "helix-backups", prefix="local/", access_key_id="helixkey",
        secret_access_key=SecretStr("s3-secret-Zq8Zq8"), region="eu-west-1", endpoint_url="http://127.0.0.1:9123",
    )
    bucket = S3Bucket.load(name)
    creds = AwsCredentials.load(name)
    assert (bucket.bucket_name, bucket.bucket_folder) == ("helix-backups", "local/")
    for c in (bucket.credentials, creds):
        assert c.aws_access_key_id == "helixkey"
        assert c.aws_secret_access_key.get_secret_value() == "s3-secret-Zq8Zq8"
        assert c.region_name == "eu-west-1"
        assert c.aws_client_parameters.endpoint_url == "http://127.0.0.1:9123"
    client = creds.get_s3_client()  # no request is made; the endpoint is what the client will call
    assert client.meta.endpoint_url == "http://127.0.0.1:9123"
    assert_no_secret([repr(bucket), str(bucket), repr(creds)], ["s3-secret-Zq8Zq8"])


def test_s3_blocks_with_a_profile_make_the_backup_client(tmp_path, monkeypatch):
    """A saved block naming a profile (no keys): the backup store's client has the profile's keys and region
    (real AWS config files in a temporary folder) and the block's endpoint."""
    from drivers.storage import store_from_block

    profile = f"helix-{uuid.uuid4().hex[:8]}"
    (tmp_path / "config").write_text(f"[profile {profile}]\nregion = ap-southeast-2\n")
    (tmp_path / "credentials").write_text(f"[{profile}]\naws_access_key_id = PROFILEKEY\n"
                                          "aws_secret_access_key = profile-secret-Zq8\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    save_s3_storage(profile, "helix-backups", profile=profile, endpoint_url="http://127.0.0.1:9123")
    bucket = S3Bucket.load(profile)
    assert bucket.credentials.profile_name == profile and bucket.credentials.aws_access_key_id is None
    client = store_from_block(bucket).client  # no request is made
    assert (client.meta.region_name, client.meta.endpoint_url) == ("ap-southeast-2", "http://127.0.0.1:9123")
    assert client._request_signer._credentials.get_frozen_credentials().access_key == "PROFILEKEY"


def test_s3_keys_go_together():
    with pytest.raises(ConfigError, match="both"):
        s3_storage_blocks("helix-backups", access_key_id="helixkey")
    creds, bucket = s3_storage_blocks("helix-backups")
    assert creds.aws_access_key_id is None and bucket.credentials is creds


def test_docker_host_round_trip():
    name = f"engine-{uuid.uuid4().hex[:10]}"
    save_docker_host(name, "unix:///run/podman/podman.sock", timeout=30)
    host = load_docker_host(name)
    assert isinstance(host, DockerHost)
    assert (host.base_url, host.timeout) == ("unix:///run/podman/podman.sock", 30)
    with pytest.raises(ValueError):
        save_docker_host(name, "tcp://127.0.0.1:2375")  # exists: not replaced without overwrite
    save_docker_host(name, "tcp://127.0.0.1:2375", overwrite=True)
    assert load_docker_host(name).base_url == "tcp://127.0.0.1:2375"


def test_load_backup_storage_local_without_a_block(local_descriptor):
    storage = load_backup_storage(local_descriptor)
    assert isinstance(storage, LocalBackupStorage)
    assert storage.path == "/var/lib/helix-ops/backups"


def test_load_backup_storage_s3_after_bootstrap(env_root, suffix):
    from blocks.bootstrap import main
    from helix_ops.descriptor import load_descriptor

    env = {"HELIX_S3_ACCESS_KEY_ID": "helixkey", "HELIX_S3_SECRET_ACCESS_KEY": "s3-secret-Zq8Zq8"}
    assert main(["--env", "staging"], env) == 0
    storage = load_backup_storage(load_descriptor(env_root / "deployments" / "staging.yaml"))
    assert isinstance(storage, S3Bucket)
    assert (storage.bucket_name, storage.bucket_folder) == ("helix-staging-backups", "staging/")
    assert storage.credentials.aws_secret_access_key.get_secret_value() == "s3-secret-Zq8Zq8"


def _with_backup_key(descriptor, name):
    creds = descriptor.credentials.model_copy(update={"backup_key": name})
    return descriptor.model_copy(update={"credentials": creds})


def test_backup_key_block_encrypts_what_open_store_writes(local_descriptor, suffix, tmp_path):
    """credentials.backup_key names a Secret block: the flows' store (tasks.backup.open_store) encrypts with it,
    restores with the same key read it back, and a store without the key is told it needs one."""
    import base64
    import datetime as dt
    import os

    from prefect.blocks.system import Secret

    from drivers.storage import LocalStore
    from helix_ops.backup import Manifest, new_backup_id
    from helix_ops.errors import ConfigError
    from tasks.backup import open_store

    name = f"helix-local-backup-key-{suffix}"
    Secret(value=base64.b64encode(os.urandom(32)).decode()).save(name)
    desc = _with_backup_key(local_descriptor, name)
    store = open_store(desc, str(tmp_path))
    assert store.encrypting
    now = dt.datetime.now(dt.UTC)
    bid = new_backup_id("local", now, rand="abc123")
    plain = b"graph line\n" * 5000
    with store.begin(bid) as w:
        with w.object("neo4j.jsonl.zst", component="neo4j", kind="logical") as obj:
            obj.write(plain)
        m = w.commit(Manifest(backup_id=bid, environment="local", project="helix", created_at=now, finished_at=now,
                              duration_s=0, tool="test", components=("neo4j",), objects=()))
    assert m.encrypted and m.key_fingerprint and m.key_fingerprint not in str(Secret.load(name).get())
    stored = (tmp_path / bid / "neo4j.jsonl.zst").read_bytes()
    assert b"graph line" not in stored
    with open_store(desc, str(tmp_path)).open_raw(bid, m.objects[0]) as f:
        assert f.read() == plain
    with pytest.raises(ConfigError, match="is encrypted: give the key"):
        LocalStore(tmp_path).open_raw(bid, m.objects[0]).read()


def test_backup_key_block_missing_or_bad_is_one_clear_error(local_descriptor, suffix, tmp_path):
    from prefect.blocks.system import Secret

    from helix_ops.errors import ConfigError
    from tasks.backup import open_store

    backups = tmp_path / "backups"
    backups.mkdir()
    with pytest.raises(ConfigError, match=r"credentials.backup_key.*no Secret block named .*openssl rand"):
        open_store(_with_backup_key(local_descriptor, f"helix-nope-{suffix}"), str(backups))
    Secret(value="c2hvcnQ=").save(f"helix-short-{suffix}")  # 5 bytes
    with pytest.raises(ConfigError, match="must be 32 bytes"):
        open_store(_with_backup_key(local_descriptor, f"helix-short-{suffix}"), str(backups))
    assert list(backups.iterdir()) == []  # nothing written
