"""Session fixtures over the real test bed (``testbed.bed.Bed``): each part starts on first use, once per
session, and everything stops at the end. When a test that used the bed fails, the tail of every server log
is attached to its report."""

from __future__ import annotations

import os

import pytest

from testbed.prefect_server import QUIET
from testbed.tier import SERVER_FIXTURES, check_tier, no_ephemeral_prefect

os.environ.update(QUIET)
if check_tier():  # make check: Prefect may not start its ephemeral API either (see testbed/tier.py)
    os.environ.update(no_ephemeral_prefect())
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

_BED = None


@pytest.fixture(scope="session")
def bed():
    """The session's test bed; parts start lazily (``bed.redis()``, ``bed.neo4j()``, ``bed.engine()``, …)."""
    global _BED
    from testbed.bed import Bed

    _refuse_in_check_tier("bed")

    _BED = Bed.create(log=lambda m: print(f"[testbed] {m}"))
    yield _BED
    _BED.down()
    _BED = None


@pytest.fixture(scope="session")
def neo4j_server(bed):
    return bed.neo4j()


@pytest.fixture(scope="session")
def redis_server(bed):
    return bed.redis()


@pytest.fixture(scope="session")
def s3_server(bed):
    return bed.s3()


@pytest.fixture(scope="session")
def engine(bed):
    return bed.engine()


@pytest.fixture(scope="session")
def images(bed):
    return bed.images()


@pytest.fixture(scope="session")
def docker_client(engine):
    client = engine.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def prefect_server(bed):
    return bed.prefect()


@pytest.fixture(scope="session")
def kube(bed):
    """The local Kubernetes control plane (``testbed.kube.KubeCluster``: ``.server``, ``.kubeconfig``,
    ``.kubeconfig_for(user, groups)``, ``.grant(...)``, ``.new_namespace()``, ``.stop_apiserver()``,
    ``.start_apiserver()``). Its binaries are built once per machine; tests that use it run last (see
    ``pytest_collection_modifyitems``) so a fresh build overlaps the rest of the suite."""
    return bed.kube()


@pytest.fixture(scope="session")
def kube_node(bed):
    """One real Kubernetes node (``testbed.kube_node.RealNode``: ``.cluster``, ``.ip``, ``.load_images(tags)``)
    on a control plane of its own, the bed's images loaded into its containerd. Tests using it are marked
    ``real_node`` and run last, after the kwok cluster's."""
    return bed.kube_node()


def _refuse_in_check_tier(fixture: str) -> None:
    if check_tier():
        pytest.fail(f"the `{fixture}` fixture starts a server, and this is the check tier (HELIX_TIER=check, "
                    "`make check`: no servers). Tests using it are marked `bed` and run in `make test`; run "
                    "`make check` (which deselects them) or `make test`.", pytrace=False)


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the marks it selects on are set here
def pytest_collection_modifyitems(session, config, items):
    """Every test whose fixtures reach a server (:data:`testbed.tier.SERVER_FIXTURES`) is marked ``bed``, so
    ``-m "not bed"`` (``make check``) selects exactly the tests without one.

    Tests that use ``kube`` run after all others, and their build starts now in the background (nice 19)
    unless it is done; the first of them may wait for the build, so its timeout covers the build's deadline."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("bed"):
            item.add_marker(pytest.mark.bed)
    for item in items:
        if "kube_node" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("real_node"):
            item.add_marker(pytest.mark.real_node)
    kube_items = [item for item in items if {"kube", "kube_node"} & set(getattr(item, "fixturenames", ()))]
    if not kube_items or check_tier():
        return
    from testbed import kube as kubemod

    try:
        if not kubemod.is_built():
            kubemod.start_build_in_background()
            kube_items[0].add_marker(pytest.mark.timeout(kubemod.BUILD_DEADLINE_S + 600), append=False)
    except Exception as exc:  # noqa: BLE001 - no Go here, say: the kube fixture then fails with the reason
        print(f"[testbed] could not start the Kubernetes build: {exc}")
    in_kube = set(kube_items)
    others = [item for item in items if item not in in_kube]
    real = [item for item in kube_items if "kube_node" in getattr(item, "fixturenames", ())]
    items[:] = others + [item for item in kube_items if item not in real] + real


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's own test harness (a temporary database and API), once per session, for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    _refuse_in_check_tier("prefect_harness")
    with prefect_test_harness(server_startup_timeout=180):
        yield


_SECONDS_BY_DIR: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Sum each test's setup, call and teardown time per test directory (the session fixtures' start-up falls
    on the first test that needs them)."""
    where = report.nodeid.split("::")[0].rsplit("/", 1)[0]
    _SECONDS_BY_DIR[where] = _SECONDS_BY_DIR.get(where, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if _SECONDS_BY_DIR and not os.environ.get("PYTEST_XDIST_WORKER"):
        terminalreporter.section("time per test directory")
        for where, seconds in sorted(_SECONDS_BY_DIR.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{where:<28} {seconds:8.1f}s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _BED is not None and "bed" in item.fixturenames:
        for name, tail in _BED.logs().items():
            report.sections.append((f"test bed log: {name}", tail))
