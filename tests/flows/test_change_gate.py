"""The change gate (flows/gate.py) on Prefect's test harness: the policy decides who is asked, an answer given
through ``helix-ops approve|reject`` (the Prefect API's resume, as the UI's form) reaches the run, a plan that
changed after its approval is not applied, a failed apply is rolled back and recorded, and every outcome is in
the change record. The plan and apply here are the test's own (what the real flows plug in is tested with
them: tests/flows/test_approval_deployment.py, tests/ui)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from prefect import flow

from flows.gate import Applied, Change, PlanChangedSinceApproval, Proposal, RolledBack, run_change
from helix_ops.approval import ApprovalPolicy
from helix_ops.cli import main as cli
from helix_ops.descriptor import load_descriptor
from testbed.helix import local_descriptor

pytestmark = pytest.mark.bed


@pytest.fixture
def records(prefect_harness, tmp_path, monkeypatch):
    """Where the gate's change records go; returns a reader of the records of ``environment``."""
    monkeypatch.setenv("HELIX_OPS_AUDIT_DIR", str(tmp_path / "audit"))

    def read(environment: str = "gate") -> list[dict]:
        path = tmp_path / "audit" / f"{environment}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return read


def descriptor(tmp_path: Path, **policy):
    path = local_descriptor(tmp_path / "gate.yaml", "gatetest")
    d = load_descriptor(path)
    return d.model_copy(update={"environment": "gate", "approval": ApprovalPolicy(**policy)})


class Script:
    """A change whose plans are given in order; counts what the gate called."""

    def __init__(self, plans, fail=None, rollback=None):
        self.plans, self.fail, self.rollback_result = list(plans), fail, rollback
        self.planned = self.applied = self.rolled_back = 0

    def plan(self) -> Proposal:
        identity = self.plans[min(self.planned, len(self.plans) - 1)]
        self.planned += 1
        return Proposal(markdown=f"# plan {identity}", lines=(f"set {identity}",), is_noop=identity is None,
                        identity=identity, change={"to": identity}, before={"x": "old"})

    def apply(self, proposal: Proposal) -> Applied:
        self.applied += 1
        if self.fail:
            raise self.fail
        return Applied(after={"x": proposal.identity}, detail=f"set x to {proposal.identity}", value="done")

    def rollback(self, proposal: Proposal, error: Exception):
        self.rolled_back += 1
        return self.rollback_result

    def change(self, d, **kw) -> Change:
        return Change(d, "deploy", "test/gate", self.plan, self.apply,
                      rollback=self.rollback if self.rollback_result is not None else None, lease_wait_s=30, **kw)


@flow(name="gate-test")
def gate_flow(change: Change):
    return run_change(change)


def test_never_applies_without_asking_and_plans_once(records, tmp_path):
    s = Script(["v2"])
    out = gate_flow(s.change(descriptor(tmp_path, when="never")))
    assert (out.status, s.planned, s.applied) == ("applied", 1, 1)
    [rec] = records()
    assert rec["result"] == "succeeded" and rec["after"] == {"x": "v2"} and rec["approval"] is None
    assert rec["triggered_by"] == "test/gate" and rec["change"] == {"to": "v2"}


def test_on_change_asks_nobody_about_a_noop_plan_and_records_nothing(records, tmp_path):
    s = Script([None])
    out = gate_flow(s.change(descriptor(tmp_path, when="on-change", timeout="5s")))
    assert (out.status, s.applied) == ("noop", 0)
    assert records() == []


def test_an_action_the_policy_does_not_list_is_not_asked(records, tmp_path):
    s = Script(["v2"])
    out = gate_flow(s.change(descriptor(tmp_path, when="always", actions=["restore"], timeout="5s")))
    assert (out.status, s.applied, s.planned) == ("applied", 1, 1)


@pytest.mark.parametrize("when", ["never", "always"])
def test_a_refused_plan_is_recorded_and_raised_before_anyone_is_asked_and_nothing_applied(records, tmp_path, when):
    from helix_ops.errors import DriftRefused

    s = Script(["drifted"])

    def refuse(proposal: Proposal):
        return DriftRefused(f"refused: {proposal.identity}") if proposal.identity == "drifted" else None

    with pytest.raises(DriftRefused, match="refused: drifted"):
        gate_flow(s.change(descriptor(tmp_path, when=when, timeout="5s"), refuse=refuse))
    assert (s.applied, s.planned) == (0, 1)  # "always" would have asked (and waited 5 s for nobody) after it
    [rec] = records()
    assert rec["result"] == "refused" and rec["detail"] == "refused: drifted" and rec["change"] == {"to": "drifted"}


def _in_thread(fn):
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _paused_run_id(name: str = "gate-test", deadline_s: float = 60) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["PAUSED"]))))
        for run in runs:
            if run.state and run.state.state_details.run_input_keyset:
                return str(run.id)
        time.sleep(0.3)
    raise AssertionError("no run paused for an answer")


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_an_answer_from_the_command_line_reaches_the_waiting_run(records, tmp_path, capsys, verb):
    s = Script(["v3"])
    t, box = _in_thread(lambda: gate_flow(s.change(descriptor(tmp_path, when="on-change", timeout="2m"))))
    run_id = _paused_run_id()
    assert s.applied == 0, "nothing is applied before the answer"
    assert cli([verb, run_id, "--reason", f"{verb} in test", "--approver", "ada"]) == 0
    assert capsys.readouterr().out.startswith(f"{verb}d " if verb == "approve" else "rejected ")
    t.join(60)
    assert not t.is_alive() and "error" not in box, box.get("error")
    [rec] = records()
    assert rec["approval"]["approver"] == "ada" and rec["approval"]["reason"] == f"{verb} in test"
    if verb == "approve":
        assert (box["value"].status, s.applied, rec["result"]) == ("applied", 1, "succeeded")
    else:
        assert (box["value"].status, s.applied, rec["result"]) == ("refused", 0, "refused")
        assert rec["after"] == rec["before"] == {"x": "old"}


def test_a_plan_that_changed_after_its_approval_is_not_applied(records, tmp_path):
    s = Script(["v4", "v5"])  # someone changed the environment between the answer and the lease
    t, box = _in_thread(lambda: gate_flow(s.change(descriptor(tmp_path, when="on-change", timeout="2m"))))
    assert cli(["approve", _paused_run_id(), "--reason", "looks fine", "--approver", "ada"]) == 0
    t.join(60)
    assert isinstance(box.get("error"), PlanChangedSinceApproval), box
    assert "the plan changed after ada approved it" in str(box["error"])
    assert s.applied == 0
    [rec] = records()
    assert rec["result"] == "refused" and rec["change"] == {"to": "v5"}


def test_a_failed_apply_is_rolled_back_recorded_and_raised(records, tmp_path):
    boom = RuntimeError("health gate missed")
    s = Script(["v6"], fail=boom, rollback=RolledBack(after={"x": "old"}, complete=True, detail="back to old",
                                                      error=ValueError("rolled back: health gate missed")))
    with pytest.raises(ValueError, match="rolled back"):
        gate_flow(s.change(descriptor(tmp_path, when="never")))
    assert s.rolled_back == 1
    [rec] = records()
    assert (rec["result"], rec["after"], rec["detail"]) == ("rolled-back", {"x": "old"}, "back to old")


def test_a_failed_apply_without_a_rollback_is_recorded_as_failed(records, tmp_path):
    s = Script(["v7"], fail=RuntimeError("forbidden"))
    with pytest.raises(RuntimeError, match="forbidden"):
        gate_flow(s.change(descriptor(tmp_path, when="never")))
    [rec] = records()
    assert rec["result"] == "failed" and "forbidden" in rec["detail"]


def test_bad_answers_are_one_clear_error(prefect_harness, capsys):
    assert cli(["approve", "not-a-uuid", "--reason", "x"]) == 2
    assert "is not a flow run id" in capsys.readouterr().err
    assert cli(["reject", "00000000-0000-0000-0000-000000000000", "--reason", "x"]) == 2
    assert "there is no flow run" in capsys.readouterr().err
    assert cli(["approve", "00000000-0000-0000-0000-000000000000", "--reason", ""]) == 2
    assert "--reason" in capsys.readouterr().err
