"""An API server that is down: deploy-helix fails, after its retries, with an error naming the server and a hint.

Runs last in the session (``tests/kube/conftest.py``): after the test bed's API server restarts, kwok has been
seen to stop moving new pods to Ready, so no test after this one may need a rollout."""

from __future__ import annotations

import time

import pytest

from drivers.kube import KubeUnreachable
from flows.deploy import deploy_helix
from tests.kube.conftest import new_names, write_descriptor

pytestmark = pytest.mark.bed


def test_an_api_server_that_is_down_is_a_clear_error_with_a_hint(kube, prefect_harness, tmp_path):
    environment, namespace = new_names("d")
    path = write_descriptor(tmp_path / f"{environment}.yaml", environment, namespace)
    kube.stop_apiserver()
    try:
        t0 = time.monotonic()
        with pytest.raises(KubeUnreachable) as err:
            deploy_helix(env=environment, descriptor=str(path), kubeconfig=str(kube.kubeconfig))
        assert time.monotonic() - t0 < 60
    finally:
        kube.start_apiserver()
    assert kube.server in str(err.value) and "hint:" in str(err.value) and "cluster-info" in str(err.value)
