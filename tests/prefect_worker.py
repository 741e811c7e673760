"""What the end-to-end tests (``tests/e2e``) and the browser tests (``tests/ui``) share: ``local``'s deployments
of prefect.yaml registered on the session's Prefect server, a process worker on the ``local`` work queue
(the ``worker`` fixture, imported by each folder's conftest), a command runner and the newest artifact of a key."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from helix_ops.schedules import deployments_of
from testbed.paths import REPO

BIN = Path(sys.executable).parent


def sh(argv, env, timeout=600):
    out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{argv[:4]} exited {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def latest_artifact(api: str, key: str) -> str:
    r = httpx.post(f"{api}/artifacts/latest/filter", json={"artifacts": {"key": {"any_": [key]}}}, timeout=10)
    r.raise_for_status()
    return r.json()[0]["data"]


def client_env(prefect_server) -> dict[str, str]:
    """The environment of a Prefect client (CLI, worker) of ``prefect_server``; workers poll every second."""
    return {**os.environ, **prefect_server.env(), "HELIX_OPS_HOME": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5"}


def deployment_run(env: dict[str, str], deployment: str, params: dict, watch_timeout_s: int = 900,
                   while_running: Callable[[], object] | None = None) -> str:
    """``prefect deployment run <deployment> --params … --watch``, as an operator types it; returns its output.
    ``while_running`` is called once the run is asked for (an approval, say). On anything but Completed the test
    fails with the run's last log lines."""
    argv = [str(BIN / "prefect"), "deployment", "run", deployment, "--params", json.dumps(params), "--watch",
            "--watch-timeout", str(watch_timeout_s)]
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if while_running:
            while_running()
        stdout, _ = proc.communicate(timeout=watch_timeout_s + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0 or "Completed" not in stdout:
        run_id = re.search(r"UUID: ([0-9a-f-]{36})", stdout)
        logs = subprocess.run([str(BIN / "prefect"), "flow-run", "logs", run_id.group(1), "--tail", "60"],
                              env=env, capture_output=True, text=True, timeout=60).stdout if run_id else ""
        pytest.fail(f"{deployment} did not complete (exit {proc.returncode}):\n{logs[-6000:] or stdout[-3000:]}")
    return stdout


@contextmanager
def worker_process(env: dict[str, str], queues: list[str], log_path: Path) -> Iterator[subprocess.Popen]:
    """A process worker of the ``helix-ops`` pool on ``queues`` for the body, its output in ``log_path``."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "helix-ops",
                                 *[a for q in queues for a in ("--work-queue", q)]],
                                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def worker(prefect_server, bed):
    """``local``'s deployments registered on ``prefect_server`` (the one of the requesting folder: tests/ui's
    serves the UI) and a worker on the ``local`` queue; yields the environment of a Prefect client."""
    env = client_env(prefect_server)
    sh([str(BIN / "prefect"), "work-pool", "create", "helix-ops", "--type", "process", "--overwrite"], env)
    # only local's deployments, and a worker on local's queue: nothing of staging or prod is registered or run
    names = deployments_of(yaml.safe_load((REPO / "prefect.yaml").read_text()), "local")
    sh([str(BIN / "prefect"), "--no-prompt", "deploy", *[a for n in names for a in ("--name", n)]], env)
    r = httpx.post(f"{env['PREFECT_API_URL']}/deployments/filter", json={"limit": 200}, timeout=10)
    r.raise_for_status()
    mine = [d for d in r.json() if d["work_pool_name"] == "helix-ops"]
    assert len(mine) == len(names) and {(d["name"], d["work_queue_name"]) for d in mine} == {("local", "local")}
    backup = [d for d in mine if d["entrypoint"].endswith(":backup_helix")][0]["schedules"]
    assert sorted((s["schedule"]["cron"], s["active"], s["parameters"]["components"][0]) for s in backup) == \
        [("*/30 * * * *", False, "redis"), ("0 * * * *", False, "neo4j")]  # deployments/local.yaml, inactive
    with worker_process(env, ["local"], bed.run_dir / "worker.log"):
        yield env
