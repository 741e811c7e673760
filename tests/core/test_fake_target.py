"""The in-memory FakeTarget (tests/fakes.py) keeps the Target interface's contract, and so do the real targets:
the check tier's unit tests may stand on it only while this holds."""

from __future__ import annotations

import inspect
import pickle

import pytest

from drivers.target import Target, merge_records
from drivers.target_engine import EngineTarget
from drivers.target_kube import KubeTarget
from helix_ops.errors import DriverError, WaitTimeout
from tests.fakes import FakeTarget

METHODS = ("where", "connect", "live_state", "endpoint", "running", "pause_record", "pause", "resume")


def _params(cls, name: str) -> list[tuple[str, object]]:
    sig = inspect.signature(getattr(cls, name))
    return [(p.name, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize("method", METHODS)
def test_every_target_has_the_interfaces_signature(method):
    wanted = _params(Target, method)
    for cls in (EngineTarget, KubeTarget, FakeTarget):
        assert _params(cls, method) == wanted, (cls.__name__, method)


def test_every_target_is_a_target_and_names_its_kind_and_capabilities():
    for target in (EngineTarget(None, "p", "e"), KubeTarget(project="p", environment="e", namespace="n"), FakeTarget()):
        assert isinstance(target, Target)
        assert isinstance(target.kind, str) and isinstance(target.capabilities, frozenset)
        assert pickle.loads(pickle.dumps(target)) == target  # a target crosses task boundaries


def test_a_pause_takes_every_replica_out_and_resume_brings_back_exactly_those():
    t = FakeTarget(replicas={"mcp-graph": ["g-1", "g-2"], "redis": ["r-1"]})
    before = t.pause_record("mcp-graph")
    record = t.pause("mcp-graph")
    assert record == before and t.running("mcp-graph") == [] and t.running("redis") == ["r-1"]
    t.replicas["mcp-graph"].append("g-3")  # one started meanwhile: resume leaves it alone
    assert t.resume("mcp-graph", record, None) == ["g-1: started, healthy", "g-2: started, healthy"]
    assert t.running("mcp-graph") == ["g-1", "g-2", "g-3"]
    assert t.resume("mcp-graph", record, None) == []  # idempotent
    assert merge_records(record, {"replicas": ["g-3"], "count": 1}) == {"replicas": ["g-1", "g-2", "g-3"], "count": 2}


def test_failures_are_the_error_tree_not_tracebacks_of_a_client():
    with pytest.raises(DriverError, match="unreachable"):
        FakeTarget(unreachable=True).connect()
    with pytest.raises(DriverError, match="no running replica"), FakeTarget().endpoint("neo4j", 7687):
        pass
    t = FakeTarget(replicas={"mcp-graph": ["g-1"]}, never_healthy=frozenset({"mcp-graph"}))
    record = t.pause("mcp-graph")
    with pytest.raises(WaitTimeout, match="health probe"):
        t.resume("mcp-graph", record, None)
