"""PreflightFailed crosses process boundaries (Prefect results, subprocesses) with its checks."""

from __future__ import annotations

import pickle

from flows.provision import PreflightFailed
from helix_ops.preflight import Check


def test_preflight_failed_pickles_with_its_checks():
    error = PreflightFailed("local", [Check("ports", "fail", "port 8080 is taken", "free it or change host_port")])
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.checks == error.checks and copy.environment == "local"
