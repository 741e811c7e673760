"""``python -m blocks.bootstrap``: creates the blocks a descriptor names, generates strong distinct secrets,
is idempotent, takes values from environment variables only, never prints a value, and refuses bad input
with exit 2 and one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blocks import AnthropicCredentials, HelixAppSecrets, Neo4jCredentials, RedisCredentials
from blocks.bootstrap import main
from tests.blocks.conftest import REPO, assert_no_secret

SUPPLIED = {
    "HELIX_NEO4J_PASSWORD": "neo4j-supplied-Zq8Zq8",
    "HELIX_REDIS_PASSWORD": "redis-supplied-Zq8Zq8",
    "HELIX_NEXTAUTH_SECRET": "nextauth-supplied-Zq8Zq8-0123456789abcdef",
    "HELIX_ANTHROPIC_API_KEY": "sk-ant-supplied-Zq8Zq8",
}


def _values(descriptor) -> dict[str, str]:
    """The secret values now stored in the blocks of ``descriptor``."""
    c = descriptor.credentials
    anthropic = AnthropicCredentials.load(c.anthropic)
    return {
        "neo4j": Neo4jCredentials.load(c.neo4j).password.get_secret_value(),
        "redis": RedisCredentials.load(c.redis).password.get_secret_value(),
        "nextauth": HelixAppSecrets.load(c.dashboard).nextauth_secret.get_secret_value(),
        "anthropic": anthropic.api_key.get_secret_value(),
    }


def _run(capsys, argv, environ=None):
    code = main(argv, environ or {})
    out, err = capsys.readouterr()
    return code, out, err


def test_bootstrap_creates_every_named_block_with_strong_distinct_secrets(local_descriptor, capsys, all_logs):
    code, out, err = _run(capsys, ["--env", "local"])
    assert code == 0, err
    c = local_descriptor.credentials
    lines = out.splitlines()
    assert lines[:4] == [
        f"created {c.neo4j} (helix-neo4j-credentials): password generated",
        f"created {c.redis} (helix-redis-credentials): password generated",
        f"created {c.dashboard} (helix-app-secrets): nextauth_secret generated",
        f"created {c.anthropic} (helix-anthropic-credentials): api_key generated; "
        "placeholder key: set HELIX_ANTHROPIC_API_KEY and rerun with --overwrite",
    ]
    assert lines[4] == "environment local: 4 created"
    values = _values(local_descriptor)
    assert all(len(v) >= 32 for v in values.values()), {k: len(v) for k, v in values.items()}
    assert len(set(values.values())) == 4
    assert Neo4jCredentials.load(c.neo4j).user == "neo4j"
    assert AnthropicCredentials.load(c.anthropic).placeholder is True
    assert RedisCredentials.load(c.redis).sentinel_master_name is None  # local runs a single Redis
    assert_no_secret([out, err, all_logs.text, *(r.getMessage() for r in all_logs.records)], values.values())


def test_second_bootstrap_keeps_everything(local_descriptor, capsys):
    assert _run(capsys, ["--env", "local"])[0] == 0
    first = _values(local_descriptor)
    stamps = HelixAppSecrets.load(local_descriptor.credentials.dashboard).rotated_at
    code, out, err = _run(capsys, ["--env", "local"])
    assert code == 0, err
    assert out.splitlines()[-1] == "environment local: nothing changed, all 4 blocks kept"
    assert all(line.startswith("kept ") and line.endswith(": exists") for line in out.splitlines()[:-1])
    assert _values(local_descriptor) == first
    assert HelixAppSecrets.load(local_descriptor.credentials.dashboard).rotated_at == stamps
    assert_no_secret([out, err], first.values())


def test_values_from_environment_variables_are_used_and_never_printed(local_descriptor, capsys, all_logs):
    code, out, err = _run(capsys, ["--env", "local"], {**SUPPLIED, "HELIX_NEO4J_USER": "helix_admin"})
    assert code == 0, err
    assert _values(local_descriptor) == {
        "neo4j": SUPPLIED["HELIX_NEO4J_PASSWORD"], "redis": SUPPLIED["HELIX_REDIS_PASSWORD"],
        "nextauth": SUPPLIED["HELIX_NEXTAUTH_SECRET"], "anthropic": SUPPLIED["HELIX_ANTHROPIC_API_KEY"],
    }
    assert Neo4jCredentials.load(local_descriptor.credentials.neo4j).user == "helix_admin"
    assert AnthropicCredentials.load(local_descriptor.credentials.anthropic).placeholder is False
    assert "generated" not in out
    assert_no_secret([out, err, all_logs.text], SUPPLIED.values())


def test_supplied_values_do_not_replace_existing_blocks_without_overwrite(local_descriptor, capsys):
    assert _run(capsys, ["--env", "local"])[0] == 0
    before = _values(local_descriptor)
    code, out, _ = _run(capsys, ["--env", "local"], {"HELIX_REDIS_PASSWORD": SUPPLIED["HELIX_REDIS_PASSWORD"]})
    assert code == 0
    assert f"kept {local_descriptor.credentials.redis} (helix-redis-credentials): HELIX_REDIS_PASSWORD ignored: " \
           "block exists (use --overwrite)" in out.splitlines()
    assert _values(local_descriptor) == before


def test_overwrite_applies_supplied_values_only_and_is_idempotent(local_descriptor, capsys):
    assert _run(capsys, ["--env", "local"])[0] == 0
    before = _values(local_descriptor)
    stamp = RedisCredentials.load(local_descriptor.credentials.redis).rotated_at
    env = {"HELIX_REDIS_PASSWORD": SUPPLIED["HELIX_REDIS_PASSWORD"],
           "HELIX_ANTHROPIC_API_KEY": SUPPLIED["HELIX_ANTHROPIC_API_KEY"]}
    code, out, err = _run(capsys, ["--env", "local", "--overwrite"], env)
    assert code == 0, err
    c = local_descriptor.credentials
    assert out.splitlines() == [
        f"kept {c.neo4j} (helix-neo4j-credentials): unchanged",
        f"updated {c.redis} (helix-redis-credentials): password changed",
        f"kept {c.dashboard} (helix-app-secrets): unchanged",
        f"updated {c.anthropic} (helix-anthropic-credentials): api_key, placeholder changed",
        "environment local: 2 updated, 2 kept",
    ]
    after = _values(local_descriptor)
    assert after == {**before, "redis": env["HELIX_REDIS_PASSWORD"], "anthropic": env["HELIX_ANTHROPIC_API_KEY"]}
    assert RedisCredentials.load(c.redis).rotated_at > stamp
    assert AnthropicCredentials.load(c.anthropic).placeholder is False
    code, out, _ = _run(capsys, ["--env", "local", "--overwrite"], env)
    assert code == 0
    assert out.splitlines()[-1] == "environment local: nothing changed, all 4 blocks kept"
    assert _values(local_descriptor) == after


def test_rotate_generates_new_secrets_but_keeps_a_real_api_key(local_descriptor, capsys):
    key = {"HELIX_ANTHROPIC_API_KEY": SUPPLIED["HELIX_ANTHROPIC_API_KEY"]}
    assert _run(capsys, ["--env", "local"], key)[0] == 0
    before = _values(local_descriptor)
    code, out, err = _run(capsys, ["--env", "local", "--rotate"])
    assert code == 0, err
    after = _values(local_descriptor)
    for name in ("neo4j", "redis", "nextauth"):
        assert after[name] != before[name] and len(after[name]) >= 32
    assert after["anthropic"] == before["anthropic"]
    assert out.splitlines()[-1] == "environment local: 3 rotated, 1 kept"
    assert_no_secret([out, err], [*before.values(), *after.values()])


def test_s3_environment_gets_aws_credentials_and_bucket(env_root, suffix, capsys):
    from prefect_aws import AwsCredentials, S3Bucket

    env = {"HELIX_S3_ACCESS_KEY_ID": "helixkey", "HELIX_S3_SECRET_ACCESS_KEY": "s3-secret-Zq8Zq8"}
    code, out, err = _run(capsys, ["--env", "staging"], env)
    assert code == 0, err
    name = f"helix-staging-s3-{suffix}"
    assert f"created {name} (aws-credentials)" in out.splitlines()
    assert f"created {name} (s3-bucket)" in out.splitlines()
    assert AwsCredentials.load(name).aws_secret_access_key.get_secret_value() == "s3-secret-Zq8Zq8"
    assert S3Bucket.load(name).bucket_name == "helix-staging-backups"
    assert_no_secret([out, err], ["s3-secret-Zq8Zq8"])
    assert _run(capsys, ["--env", "staging"], env)[1].splitlines()[-1] == \
        "environment staging: nothing changed, all 6 blocks kept"
    # new keys with --overwrite: the bucket block references the credentials block, so it sees them too
    new = {"HELIX_S3_ACCESS_KEY_ID": "helixkey2", "HELIX_S3_SECRET_ACCESS_KEY": "s3-secret-2-Zq8Zq8"}
    code, out, _ = _run(capsys, ["--env", "staging", "--overwrite"], new)
    assert code == 0
    assert f"updated {name} (aws-credentials): aws_access_key_id, aws_secret_access_key changed" in out.splitlines()
    assert f"kept {name} (s3-bucket): unchanged" in out.splitlines()
    bucket_creds = S3Bucket.load(name).credentials
    assert bucket_creds.aws_access_key_id == "helixkey2"
    assert bucket_creds.aws_secret_access_key.get_secret_value() == "s3-secret-2-Zq8Zq8"


BAD_INPUT = [
    (["--env", "nosuch"], {}, "unknown environment 'nosuch'"),
    (["--env", "Bad_Name"], {}, "is not an environment name"),
    (["--descriptor", "/nonexistent/helix.yaml"], {}, "cannot read descriptor"),
    ([], {}, "one of the arguments --env --descriptor is required"),
    (["--env", "local", "--rotate", "--overwrite"], {}, "not allowed with argument"),
    (["--env", "local", "--password", "x"], {}, "unrecognized arguments"),
    (["--env", "local"], {"HELIX_NEXTAUTH_SECRET": "short-Zq8"}, "HELIX_NEXTAUTH_SECRET: must be at least 32"),
    (["--env", "local"], {"HELIX_NEO4J_PASSWORD": "has space Zq8"}, "HELIX_NEO4J_PASSWORD: must be printable"),
    (["--env", "local"], {"HELIX_REDIS_PASSWORD": "quote'Zq8Zq8"}, "HELIX_REDIS_PASSWORD: must be printable"),
    (["--env", "local"], {"HELIX_REDIS_PASSWORD": ""}, "HELIX_REDIS_PASSWORD: is set but empty"),
    (["--env", "local"], {"HELIX_NEO4J_PASSWORD": "-starts-like-an-option-Zq8"},
     "HELIX_NEO4J_PASSWORD: must not start with '-'"),
    (["--env", "local"], {"HELIX_NEO4J_USER": "no/slash"}, "HELIX_NEO4J_USER: must match"),
    (["--env", "staging"], {"HELIX_S3_SECRET_ACCESS_KEY": "s3-secret-Zq8Zq8"}, "together"),
]


@pytest.mark.parametrize("argv,environ,message", BAD_INPUT, ids=[m for _, _, m in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_and_creates_nothing(env_root, local_descriptor, capsys, argv, environ,
                                                             message):
    code, out, err = _run(capsys, argv, environ)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("blocks.bootstrap: error: ")
    assert message in err
    assert_no_secret([err], [v for v in environ.values() if v])
    with pytest.raises(ValueError, match="Unable to find block document"):
        Neo4jCredentials.load(local_descriptor.credentials.neo4j)


def test_environment_name_must_match_the_file(env_root, capsys):
    (env_root / "deployments" / "other.yaml").write_text(
        (env_root / "deployments" / "staging.yaml").read_text(), encoding="utf-8"
    )
    code, _, err = _run(capsys, ["--env", "other"])
    assert code == 2
    assert "environment: is 'staging', expected 'other'" in err


def _subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIX_")}
    env.update(extra, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(REPO))
    return env


def test_module_entry_point_end_to_end(env_root, local_descriptor):
    """The real command in a child process, against the session's API; secrets from the environment."""
    argv = [sys.executable, "-m", "blocks.bootstrap", "--env", "local"]
    env = _subprocess_env({"HELIX_NEO4J_PASSWORD": SUPPLIED["HELIX_NEO4J_PASSWORD"]})
    first = subprocess.run(argv, cwd=env_root, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    values = _values(local_descriptor)
    assert values["neo4j"] == SUPPLIED["HELIX_NEO4J_PASSWORD"]
    assert first.stdout.splitlines()[-1] == "environment local: 4 created"
    second = subprocess.run(argv, cwd=env_root, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == "environment local: nothing changed, all 4 blocks kept"
    assert _values(local_descriptor) == values
    assert_no_secret([first.stdout, first.stderr, second.stdout, second.stderr], values.values())


def test_module_entry_point_bad_env_exits_2_with_one_line(tmp_path):
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "local.yaml").write_text(Path(REPO / "deployments/local.yaml").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "blocks.bootstrap", "--env", "nosuch"], cwd=tmp_path,
        env=_subprocess_env({}), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "blocks.bootstrap: error: --env: unknown environment 'nosuch': no deployments/nosuch.yaml (known: local)\n"
    )


def test_bad_input_is_rejected_before_prefect_is_imported(tmp_path):
    """A typo costs a second, not the many seconds importing Prefect takes on these machines."""
    code = (
        "import sys\n"
        "from blocks.bootstrap import main\n"
        "rc = main(['--env', 'local'], {'HELIX_NEXTAUTH_SECRET': 'short'})\n"
        "assert rc == 2, rc\n"
        "loaded = sorted(m for m in sys.modules if m == 'prefect' or m.startswith(('prefect.', 'prefect_')))\n"
        "print(loaded)\n"
    )
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "local.yaml").write_text(Path(REPO / "deployments/local.yaml").read_text())
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_subprocess_env({}),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"
    assert result.stderr == "blocks.bootstrap: error: HELIX_NEXTAUTH_SECRET: must be at least 32 characters\n"


def test_a_generated_secret_never_starts_like_an_option(monkeypatch):
    """``token_urlsafe`` starts with ``-`` once in 64 draws; such a value is drawn again (NEO4J_AUTH's password
    goes to ``neo4j-admin dbms set-initial-password`` as an argument: a CI run's Neo4j never started on one)."""
    from blocks import inputs

    draws = iter(["-" + "a" * 42, "-" + "b" * 42, "c" * 43])
    monkeypatch.setattr(inputs._random, "token_urlsafe", lambda n: next(draws))
    assert inputs.generate_secret() == "c" * 43
