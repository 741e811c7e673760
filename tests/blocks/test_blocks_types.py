"""The block classes: save/load round trips through the real Prefect API, slugs, and no secret in any
repr, str, JSON dump or validation error."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from pydantic import SecretStr, ValidationError

from blocks import AnthropicCredentials, HelixAppSecrets, LocalBackupStorage, Neo4jCredentials, RedisCredentials
from blocks.provision import HELIX_BLOCK_TYPES, REUSED_BLOCK_TYPES, register_block_types
from tests.blocks.conftest import assert_no_secret

WHEN = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)

CASES = [
    (Neo4jCredentials, {"user": "neo4j", "password": "n-pass-1-Zq8", "rotated_at": WHEN}, ["password"]),
    (Neo4jCredentials, {"user": "helix_a", "password": "n-pass-2-Zq8", "alternate_user": "helix_b",
                        "alternate_password": "n-pass-3-Zq8", "rotated_at": WHEN},
     ["password", "alternate_password"]),
    (RedisCredentials, {"password": "r-pass-1-Zq8", "rotated_at": WHEN}, ["password"]),
    (RedisCredentials, {"username": "helix", "password": "r-pass-2-Zq8", "sentinel_master_name": "helix",
                        "sentinel_password": "s-pass-1-Zq8", "rotated_at": WHEN}, ["password", "sentinel_password"]),
    (HelixAppSecrets, {"nextauth_secret": "a" * 20 + "-nextauth-Zq8", "rotated_at": WHEN}, ["nextauth_secret"]),
    (AnthropicCredentials, {"api_key": "sk-ant-test-Zq8Zq8", "placeholder": False, "rotated_at": WHEN}, ["api_key"]),
    (LocalBackupStorage, {"path": "/var/lib/helix-ops/backups"}, []),
]


def _plain(block, field):
    value = getattr(block, field)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


@pytest.mark.parametrize("cls,fields,secret_fields", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_block_round_trip_through_the_api(cls, fields, secret_fields):
    name = f"rt-{uuid.uuid4().hex[:10]}"
    cls(**fields).save(name)
    loaded = cls.load(name)
    assert type(loaded) is cls
    assert {f: _plain(loaded, f) for f in fields} == fields
    for field in secret_fields:
        assert isinstance(getattr(loaded, field), SecretStr)
    secrets = [fields[f] for f in secret_fields]
    assert_no_secret([repr(loaded), str(loaded), loaded.model_dump_json(), str(loaded.model_dump())], secrets)


@pytest.mark.parametrize("cls", HELIX_BLOCK_TYPES)
def test_helix_slugs_are_prefixed_and_registered(cls):
    from prefect.client.orchestration import get_client

    assert cls.get_block_type_slug().startswith("helix-")
    slugs = register_block_types()
    assert slugs[: len(HELIX_BLOCK_TYPES)] == [c.get_block_type_slug() for c in HELIX_BLOCK_TYPES]
    assert {"aws-credentials", "s3-bucket", "docker-host"} == {c.get_block_type_slug() for c in REUSED_BLOCK_TYPES}
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug(cls.get_block_type_slug())
    assert block_type.slug == cls.get_block_type_slug()
    assert block_type.description


def test_secret_fields_are_marked_secret_in_the_schema():
    """Prefect obfuscates fields its schema lists as secret (UI, API reads without include_secrets)."""
    assert set(Neo4jCredentials.model_json_schema()["secret_fields"]) == {"password", "alternate_password"}
    assert set(RedisCredentials.model_json_schema()["secret_fields"]) == {"password", "sentinel_password"}
    assert HelixAppSecrets.model_json_schema()["secret_fields"] == ["nextauth_secret"]
    assert AnthropicCredentials.model_json_schema()["secret_fields"] == ["api_key"]


def test_api_read_without_secrets_is_obfuscated():
    from prefect.client.orchestration import get_client

    name = f"obf-{uuid.uuid4().hex[:10]}"
    Neo4jCredentials(password="obfuscate-me-Zq8").save(name)
    with get_client(sync_client=True) as client:
        doc = client.read_block_document_by_name(name, "helix-neo4j-credentials", include_secrets=False)
    assert "obfuscate-me-Zq8" not in str(doc.data)
    assert doc.data["user"] == "neo4j"


@pytest.mark.parametrize(
    "cls,kwargs,where",
    [
        (Neo4jCredentials, {"password": "typo-guard-Zq8", "pasword": "typo-guard-Zq8"}, "pasword"),
        (Neo4jCredentials, {"password": "pair-guard-Zq8", "alternate_user": "b"}, "go together"),
        (Neo4jCredentials, {"password": "pair-guard-Zq8", "alternate_user": "neo4j",
                            "alternate_password": "pair-guard-Zq8"}, "must differ"),
        (Neo4jCredentials, {"user": "bad user", "password": "user-guard-Zq8"}, "user"),
        (RedisCredentials, {"password": 12345678901234}, "password"),
        (HelixAppSecrets, {"nextauth": "missing-field-Zq8"}, "nextauth_secret"),
    ],
)
def test_validation_errors_never_echo_input(cls, kwargs, where):
    with pytest.raises(ValidationError) as info:
        cls(**kwargs)
    text = str(info.value)
    assert where in text
    assert_no_secret([text, repr(info.value.errors(include_input=False))],
                     [str(v) for k, v in kwargs.items() if "pass" in k or "nextauth" in k])


def test_a_block_of_another_type_is_refused():
    with pytest.raises(ValidationError, match="is not 'helix-neo4j-credentials'"):
        Neo4jCredentials(password="x" * 10, block_type_slug="helix-redis-credentials")


def test_rotated_at_defaults_to_now_utc():
    before = datetime.now(timezone.utc)
    block = HelixAppSecrets(nextauth_secret="x" * 32)
    assert before <= block.rotated_at <= datetime.now(timezone.utc)
    assert block.rotated_at.tzinfo is not None


def test_local_backup_storage_needs_an_absolute_path():
    with pytest.raises(ValidationError, match="path"):
        LocalBackupStorage(path="relative/backups")
    assert str(LocalBackupStorage(path="/srv/backups").folder) == "/srv/backups"
