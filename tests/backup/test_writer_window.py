"""``tasks.writer_pause.writer_window``: the one writer window of take_backup and restore-helix, with the engine
calls replaced by fakes (the flows' tests run it against the real engine) and Prefect's test harness holding
the pause record: recorded before the stop, started again also on failure, the record deleted only once the
writers run again."""

from __future__ import annotations

import secrets
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.bed  # Prefect's test harness holds the record


class FakeEngine:
    """An in-memory :class:`drivers.target.Target` for the writer window: pause_record / pause / resume log
    what happened and when (the engine and Kubernetes targets are run by the flows' tests)."""

    kind = "fake"
    capabilities = frozenset()
    project = "p"

    def __init__(self, environment: str, running: list[str], stop_also: list[str] | None = None,
                 fail_stop: bool = False, fail_start: bool = False) -> None:
        self.environment = environment
        self.running_now = running
        self.stop_also = stop_also or []
        self.fail_stop = fail_stop
        self.fail_start = fail_start
        self.events: list[tuple] = []

    def install(self, monkeypatch) -> None:  # nothing to patch: the window gets this target
        pass

    def where(self) -> str:
        return "fake target"

    def _record(self):
        from tasks.writer_pause import read_pause

        pause = read_pause(self.environment)
        return pause["containers"] if pause else None

    def pause_record(self, service):
        self.events.append(("running", [service]))
        return {"replicas": list(self.running_now)}

    def pause(self, service):
        self.events.append(("stop", self._record()))
        if self.fail_stop:
            raise RuntimeError("stop failed half-way")
        return {"replicas": sorted(self.running_now + self.stop_also)}

    def resume(self, service, record, descriptor, deadline_s=180):
        containers = list(record["replicas"])
        self.events.append(("start", containers, self._record()))
        if self.fail_start:
            raise RuntimeError("mcp-graph never healthy")
        return [f"{c}: HTTP 200" for c in containers]


def _window(engine: FakeEngine, body=None):
    from prefect import flow

    from tasks.writer_pause import writer_window

    @flow(name="writer-window-test")
    def run() -> dict:
        with writer_window(engine, SimpleNamespace(), ["mcp-graph"], "test flow-run/1") as window:
            engine.events.append(("body", dict(window), engine._record()))
            if body:
                body()
        return window

    return run()


def _env() -> str:
    return f"ww-{secrets.token_hex(3)}"


def test_the_window_records_stops_runs_the_body_starts_and_clears(prefect_harness, monkeypatch):
    from tasks.writer_pause import read_pause

    env = _env()
    fake = FakeEngine(env, ["p-mcp-graph-1"])
    fake.install(monkeypatch)
    window = _window(fake)
    started = fake.events[2][1].pop("started")
    assert fake.events == [
        ("running", ["mcp-graph"]),
        ("stop", ["p-mcp-graph-1"]),  # recorded BEFORE the stop
        ("body", {"paused": True, "containers": ["p-mcp-graph-1"], "seconds": 0.0}, ["p-mcp-graph-1"]),
        ("start", ["p-mcp-graph-1"], ["p-mcp-graph-1"]),  # the record stays until they run again
    ]
    assert list(window) == ["paused", "containers", "seconds", "started"]
    assert window["started"] == started and window["paused"] and window["containers"] == ["p-mcp-graph-1"]
    assert window["seconds"] >= 0
    assert read_pause(env) is None


def test_a_replica_that_started_in_between_is_recorded_and_started_too(prefect_harness, monkeypatch):
    env = _env()
    fake = FakeEngine(env, ["p-mcp-graph-1"], stop_also=["p-mcp-graph-2"])
    fake.install(monkeypatch)
    window = _window(fake)
    assert fake.events[2][2] == ["p-mcp-graph-1", "p-mcp-graph-2"]  # the record, during the body
    assert fake.events[3][:2] == ("start", ["p-mcp-graph-1", "p-mcp-graph-2"])
    assert window["containers"] == ["p-mcp-graph-1", "p-mcp-graph-2"]


def _export_fails():
    raise ValueError("export failed")


@pytest.mark.parametrize("faults, body, error, steps, left", [
    # the body fails: the writers are started again, and the record deleted once they run
    ({}, _export_fails, "export failed", ["running", "stop", "body", "start"], None),
    # the stop fails half-way: no body; what was running is started again (a no-op for those still running)
    # (the pause task is retried once, the resume task twice: each a Prefect task retry)
    ({"fail_stop": True}, None, "stop failed half-way", ["running", "stop", "stop", "start"], None),
    # the writers do not start again: the record stays, so the next run starts them
    ({"fail_start": True}, None, "never healthy", ["running", "stop", "body", "start", "start", "start"],
     ["p-mcp-graph-1"]),
], ids=["body-fails", "stop-fails", "start-fails"])
def test_a_failure_inside_the_window(prefect_harness, monkeypatch, faults, body, error, steps, left):
    from tasks.writer_pause import read_pause

    env = _env()
    fake = FakeEngine(env, ["p-mcp-graph-1"], **faults)
    fake.install(monkeypatch)
    with pytest.raises((ValueError, RuntimeError), match=error):
        _window(fake, body)
    assert [e[0] for e in fake.events] == steps
    assert fake.events[-1] == ("start", ["p-mcp-graph-1"], ["p-mcp-graph-1"])  # recorded while starting
    pause = read_pause(env)
    assert (pause["containers"] if pause else None) == left
    assert pause is None or pause["owner"] == "test flow-run/1"
