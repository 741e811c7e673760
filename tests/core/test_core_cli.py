"""The helix-ops CLI: in-process through main(argv) and capsys, plus one real subprocess run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from core_helpers import DEPLOYMENTS, ROOT

from helix_ops.cli import main


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A cwd holding deployments/ like the repository's."""
    shutil.copytree(DEPLOYMENTS, tmp_path / "deployments")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("env", ["local", "staging", "prod"])
def test_validate_each_environment(project, capsys, env):
    assert main(["validate", "--env", env], environ={}) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"ok: {env} (") and err == ""


def test_validate_helix_config_uses_the_given_environment(project, capsys):
    args = ["validate", "--env", "local", "--helix-config", "deployments/helix.config.yaml"]
    assert main(args, environ={}) == 2
    assert capsys.readouterr().err == (
        "helix-ops: error: deployments/helix.config.yaml: graph.uri: environment variable NEO4J_URI is not set\n")
    env = {"NEO4J_URI": "bolt://neo4j:7687", "NEO4J_USER": "neo4j", "NEO4J_PASSWORD": "p",
           "REDIS_HOST": "redis", "REDIS_PORT": "6379", "REDIS_PASSWORD": "r"}
    assert main(args, environ=env) == 0


def test_render_compose_writes_files(project, capsys):
    assert main(["render", "--env", "local", "--target", "compose", "--out", "out"], environ={}) == 0
    out = project / "out"
    doc = yaml.safe_load((out / "docker-compose.yaml").read_text())
    assert doc["name"] == "helix-local" and "nginx" in doc["services"]
    assert "upstream dashboard" in (out / "nginx.conf").read_text()
    assert (out / ".env.example").read_text() == (
        "ANTHROPIC_API_KEY=\nNEO4J_PASSWORD=\nNEXTAUTH_SECRET=\nREDIS_PASSWORD=\n")


def test_render_kubernetes_with_secrets_from_env(project, capsys):
    env = {"NEO4J_PASSWORD": "pw", "REDIS_PASSWORD": "r", "NEXTAUTH_SECRET": "n", "ANTHROPIC_API_KEY": "k"}
    assert main(["render", "--env", "prod", "--out", "k8s", "--secrets-from-env"], environ=env) == 0
    docs = list(yaml.safe_load_all((project / "k8s" / "manifests.yaml").read_text()))
    assert docs[0]["kind"] == "Namespace" and docs[-1]["kind"] == "Ingress"
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert secret["stringData"]["neo4j-auth"] == "neo4j/pw"


def test_render_kubernetes_secret_missing_value_is_invalid_input(project, capsys):
    assert main(["render", "--env", "prod", "--out", "k8s", "--secrets-from-env"], environ={}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "secrets.anthropic-api-key: no value supplied" in err


def test_plan_empty_then_state_file_gives_noops(project, capsys):
    assert main(["plan", "--env", "local", "--json"], environ={}) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["counts"]["create"] == len(plan["changes"]) > 0
    state = {"objects": [{"identity": c["identity"], "spec_hash": c["spec_hash"]} for c in plan["changes"]]}
    (project / "state.json").write_text(json.dumps(state))
    assert main(["plan", "--env", "local", "--state", "state.json"], environ={}) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"0 create, 0 update, 0 delete, {len(plan['changes'])} noop"
    assert all(line.startswith("noop") for line in lines[:-1])


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["plan", "--env", "local", "--state", "missing.json"], "missing.json: (file): cannot read state"),
        (["validate"], "arguments: one of the arguments --env --descriptor is required"),
        (["validate", "--env", "Prod!"], "--env: 'Prod!' is not an environment name"),
        (["render", "--env", "local", "--target", "helm", "--out", "x"], "arguments: argument --target"),
        (["frobnicate"], "arguments: argument command: invalid choice"),
    ],
)
def test_invalid_invocations_exit_2_with_one_line(project, capsys, argv, fragment):
    assert main(argv, environ={}) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and fragment in err and "Traceback" not in err


def test_malformed_state_file(project, capsys):
    (project / "bad.json").write_text("{not json")
    assert main(["plan", "--env", "local", "--state", "bad.json"], environ={}) == 2
    assert "bad.json: line 1: malformed JSON" in capsys.readouterr().err


@pytest.mark.parametrize("command", [None, "validate", "render", "plan"])
def test_help_on_each_command(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"] if command else ["--help"])
    assert info.value.code == 0
    assert "usage: helix-ops" in capsys.readouterr().out


def test_real_subprocess_run_of_the_module(project):
    bad = project / "bad.yaml"
    bad.write_text((DEPLOYMENTS / "prod.yaml").read_text().replace("replicas: 1\n", "replicas: 2\n", 1))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "helix_ops.cli", "validate", "--descriptor", str(bad)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (f"helix-ops: error: {bad}: services.mcp-graph.replicas: mcp-graph is the single "
                           "writer to Neo4j and must run exactly 1 replica, not 2\n")
    ok = subprocess.run([sys.executable, "-m", "helix_ops.cli", "validate", "--env", "prod"],
                        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=project)
    assert ok.returncode == 0, ok.stderr
