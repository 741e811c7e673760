"""The check tier (``make check``, ``HELIX_TIER=check``) starts no server, and ``-m "not bed"`` selects exactly
the tests without one: a guard enforces it, not a convention (``testbed/tier.py``, ``tests/conftest.py``).

Each case runs a small pytest session in a subprocess, with this repository's ``tests/conftest.py`` as its
conftest, so the hooks and fixtures under test are the real ones."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from testbed.paths import REPO
from testbed.tier import ServerRefused, check_tier, refuse_servers

CASES = '''
import pytest


def test_pure():
    assert 1 + 1 == 2


def test_uses_the_bed(bed):
    bed.redis()


def test_uses_a_server_through_a_fixture(redis_server):
    pass


def test_uses_prefect(prefect_harness):
    pass


def test_starts_the_bed_by_hand():
    from testbed.bed import Bed

    Bed.create()


def test_runs_a_flow_without_a_harness():
    from prefect import flow

    @flow
    def hello():
        return 1

    hello()
'''


def _session(tmp_path, *args: str, tier: str | None = "check") -> tuple[subprocess.CompletedProcess, float]:
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F401,F403\n"
                                          "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    (tmp_path / "test_cases.py").write_text(CASES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PYTEST_", "HELIX_TIER"))}
    env["PYTHONPATH"] = str(REPO)
    if tier:
        env["HELIX_TIER"] = tier
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
                           "-rA", "--rootdir", str(tmp_path), "-c", os.devnull, *args, str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    return done, time.monotonic() - t0


def _outcomes(out: str) -> dict[str, str]:
    res = {}
    for line in out.splitlines():
        for word in ("PASSED", "FAILED", "ERROR"):
            if line.startswith(word + " ") and "::" in line:
                res[line.split("::")[1].split(" ")[0]] = word
    return res


def test_the_check_tier_selects_exactly_the_tests_without_a_server(tmp_path):
    done, _ = _session(tmp_path, "-m", "not bed")
    outcomes = _outcomes(done.stdout)
    assert outcomes.get("test_pure") == "PASSED", done.stdout[-3000:]
    for fixture_test in ("test_uses_the_bed", "test_uses_a_server_through_a_fixture", "test_uses_prefect"):
        assert fixture_test not in outcomes, (fixture_test, done.stdout[-3000:])  # deselected: marked bed
    assert "3 deselected" in done.stdout, done.stdout[-3000:]


def test_a_test_that_reaches_a_server_anyway_fails_in_the_check_tier_and_starts_none(tmp_path):
    done, seconds = _session(tmp_path)  # no -m: the guard, not the selection, must stop them
    outcomes = _outcomes(done.stdout)
    assert outcomes.get("test_pure") == "PASSED", done.stdout[-3000:]
    for name in ("test_uses_the_bed", "test_uses_a_server_through_a_fixture", "test_uses_prefect",
                 "test_starts_the_bed_by_hand", "test_runs_a_flow_without_a_harness"):
        assert outcomes.get(name) in {"FAILED", "ERROR"}, (name, done.stdout[-3000:])
    assert "this is the check tier" in done.stdout, done.stdout[-3000:]
    assert "ServerRefused" in done.stdout and "Mark the test `@pytest.mark.bed`" in done.stdout
    # the flow refused to start Prefect's ephemeral API rather than starting one
    assert "ephemeral" in done.stdout.lower() or "PREFECT_API_URL" in done.stdout, done.stdout[-3000:]
    assert seconds < 60, f"the refused session took {seconds:.0f}s: something started"
    assert not list((tmp_path).glob("**/redis.log")), "a Redis server log was written"


def test_outside_the_check_tier_the_guard_is_off(monkeypatch):
    monkeypatch.setenv("HELIX_TIER", "test")
    assert not check_tier()
    refuse_servers("anything")  # does not raise
    monkeypatch.setenv("HELIX_TIER", " Check ")
    assert check_tier()
    with pytest.raises(ServerRefused, match="the check tier"):
        refuse_servers("a Redis server")
