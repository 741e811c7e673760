"""The S3 client of backups comes from prefect-aws (``AwsCredentials.get_s3_client``): a session token, a
profile and a custom endpoint reach it, helix-ops's botocore config rides along under the block's own, and
no secret shows in a repr or an error. Against the test bed's real S3Proxy; profiles in real AWS config files
(``AWS_CONFIG_FILE`` / ``AWS_SHARED_CREDENTIALS_FILE`` in a temporary folder)."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest
from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters

from drivers.storage import S3Store, client_config, s3_client, s3_client_for, store_from_block
from helix_ops.backup import Manifest, new_backup_id
from helix_ops.errors import DriverError

NOW = dt.datetime(2025, 3, 10, 2, 0, tzinfo=dt.UTC)


def round_trip(store: S3Store) -> None:
    bid = new_backup_id("test", NOW)
    with store.begin(bid) as w:
        with w.object("data.bin", component="redis", kind="rdb") as obj:
            obj.write(b"helix " * 1000)
        w.commit(Manifest(backup_id=bid, environment="test", project="helix", created_at=NOW, finished_at=NOW,
                          duration_s=0.0, tool="tests", components=("redis",), objects=()))
    assert [m.backup_id for m in store.list()] == [bid]
    assert store.verify(bid, deep=True) == [f"data.bin: {store.read_manifest(bid).objects[0].size} bytes, "
                                            "sha256 ok, content ok"]


def sent_headers(client) -> list[dict[str, str]]:
    """The headers of every request ``client`` sends from now on (boto3's own event hook, after signing)."""
    seen: list[dict[str, str]] = []
    def record(request, **_):
        seen.append({k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})

    client.meta.events.register("before-send.s3.*", record)
    return seen


@pytest.fixture
def bucket(s3_server) -> str:
    name = "bk-" + secrets.token_hex(4)
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def aws_files(tmp_path, monkeypatch):
    """Write a profile into AWS config files of a temporary folder (the process's only AWS config): returns a
    function ``(profile, access_key, secret_key, region)``. Environment keys are set to wrong values, so only
    a named profile can authenticate."""
    config, creds = tmp_path / "aws-config", tmp_path / "aws-credentials"
    config.write_text("")
    creds.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key-not-this")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-not-this")
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)

    def add(profile: str, access_key: str, secret_key: str, region: str) -> None:
        with config.open("a") as f:
            f.write(f"[profile {profile}]\nregion = {region}\n")
        with creds.open("a") as f:
            f.write(f"[{profile}]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n")

    return add


def test_session_token_and_endpoint_reach_the_server(s3_server, bucket):
    token = "helix-session-" + secrets.token_hex(16)
    creds = AwsCredentials(aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key,
                           aws_session_token=token,
                           aws_client_parameters=AwsClientParameters(endpoint_url=s3_server.endpoint))
    store = store_from_block(S3Bucket(bucket_name=bucket, credentials=creds, bucket_folder="tok"))
    assert isinstance(store, S3Store)
    client = store.client
    assert client.meta.endpoint_url == s3_server.endpoint
    headers = sent_headers(client)
    round_trip(store)
    assert headers and all(h["X-Amz-Security-Token"] == token for h in headers)
    assert all(f"Credential={s3_server.access_key}/" in h["Authorization"] for h in headers)
    # helix-ops's config came along: bounded retries, path-style addressing (bucket in the path, not the host)
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (5, 60)
    assert client.meta.config.s3 == {"addressing_style": "path"}
    assert creds.aws_client_parameters.config is None  # the block itself is not changed
    # nothing secret in what a log line would show
    for text in (repr(store), str(store), store.where):
        assert token not in text and s3_server.secret_key not in text
    assert repr(store) == f"S3Store('s3://{bucket}/tok/', encrypting=False)"


def test_plain_settings_client_carries_a_session_token(s3_server, bucket):
    """``s3_client`` (tests, scripts) goes the same way: an unsaved AwsCredentials, prefect-aws's client."""
    from pydantic import SecretStr

    token = "helix-session-" + secrets.token_hex(16)
    client = s3_client(s3_server.endpoint, s3_server.access_key, SecretStr(s3_server.secret_key),
                       session_token=SecretStr(token))
    headers = sent_headers(client)
    round_trip(S3Store(client, bucket, "plain"))
    assert headers and all(h["X-Amz-Security-Token"] == token for h in headers)
    assert all("x-amz-security-token" in h["Authorization"].split("SignedHeaders=")[1] for h in headers)


def test_the_session_token_is_signed(s3_server, bucket):
    """The server checks the token as part of the signature: changed after signing, the request is refused."""
    client = s3_client(s3_server.endpoint, s3_server.access_key, s3_server.secret_key,
                       session_token="helix-session-" + secrets.token_hex(16))

    def tamper(request, **_):
        request.headers["X-Amz-Security-Token"] = "helix-session-changed"

    client.meta.events.register("before-send.s3.*", tamper)
    with pytest.raises(DriverError, match="SignatureDoesNotMatch"):
        S3Store(client, bucket, "tampered").list()


def test_profile_is_honoured(s3_server, bucket, aws_files):
    profile = "helix-backup-" + secrets.token_hex(3)  # prefect-aws caches clients per credentials: a fresh name
    aws_files(profile, s3_server.access_key, s3_server.secret_key, "eu-central-1")
    creds = AwsCredentials(profile_name=profile,
                           aws_client_parameters=AwsClientParameters(endpoint_url=s3_server.endpoint))
    client = s3_client_for(creds)
    assert client.meta.region_name == "eu-central-1"  # the profile's region
    headers = sent_headers(client)
    round_trip(S3Store(client, bucket, "profile"))
    assert headers and all(f"Credential={s3_server.access_key}/" in h["Authorization"] for h in headers)
    assert all("/eu-central-1/s3/" in h["Authorization"] for h in headers)


def test_profile_with_wrong_keys_is_refused_by_the_server(s3_server, bucket, aws_files):
    """The keys are the profile's (not the environment's, not cached from another test): wrong ones fail as
    one DriverError that names the bucket and shows no secret."""
    profile = "helix-wrong-" + secrets.token_hex(3)
    wrong_secret = "wrong-secret-" + secrets.token_hex(8)
    aws_files(profile, s3_server.access_key, wrong_secret, "us-east-1")
    store = S3Store(s3_client(s3_server.endpoint, profile=profile), bucket, "wrong")
    with pytest.raises(DriverError) as err:
        store.list()
    message = f"{err.value}\n{err.value.hint}"
    assert f"s3://{bucket}/wrong/" in message and "SignatureDoesNotMatch" in message
    assert wrong_secret not in message and s3_server.secret_key not in message


def test_block_config_wins_key_by_key():
    merged = client_config({"retries": {"max_attempts": 1}, "read_timeout": 7, "s3": {"use_accelerate_endpoint": False}})
    assert merged["retries"] == {"max_attempts": 1, "mode": "standard"}
    assert merged["s3"] == {"addressing_style": "path", "use_accelerate_endpoint": False}
    assert (merged["read_timeout"], merged["connect_timeout"]) == (7, 5)
    creds = AwsCredentials(aws_access_key_id="k", aws_secret_access_key="s", region_name="eu-west-1",
                           aws_client_parameters=AwsClientParameters(
                               endpoint_url="http://127.0.0.1:9", config={"retries": {"max_attempts": 1},
                                                                          "read_timeout": 7}))
    client = s3_client_for(creds)  # no request is made
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert (client.meta.config.read_timeout, client.meta.config.connect_timeout) == (7, 5)
    assert (client.meta.region_name, client.meta.endpoint_url) == ("eu-west-1", "http://127.0.0.1:9")
