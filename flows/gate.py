"""The one change gate: every flow that changes an environment (deploy, upgrade, scale, restore, rotation,
backup pruning) goes through :func:`run_change`, and supplies only its plan and its apply.

    plan → plan artifact → approval by the environment's policy → lease → plan again, same as approved?
         → apply → change record → on failure: rollback, and a record saying so

* **Policy, not names**: whether a run asks is the descriptor's ``approval`` (``helix_ops.approval``); no
  environment name is special.
* **Suspend, not pause**: a deployment's run waits with ``suspend_flow_run``: its process exits, the worker
  slot and the infrastructure are freed, and the run is scheduled again when someone answers (the Prefect
  UI's Resume form, or ``helix-ops approve|reject RUN_ID``). A run without a deployment (a flow called from
  Python) cannot be rescheduled and waits in process with ``pause_flow_run``.
* **The lease across the wait**: the environment lease is not held while a run waits (a question that is
  never answered must not block the next backup). It is taken after the answer; the plan is made again under
  it and applied only if it is the plan that was approved (:func:`helix_ops.approval.fingerprint`). The
  question's key is that fingerprint, so a resumed run that plans the same gets its answer back, and a run
  whose plan changed in between asks again about the new plan.
* **Records**: a refused, applied, failed or rolled-back change appends an :class:`AuditRecord` naming who
  asked, who approved and why (``tasks/records.py``). A no-op plan records nothing.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from prefect import get_run_logger, pause_flow_run, suspend_flow_run
from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from prefect.runtime import deployment, flow_run
from pydantic import Field

from flows.lease import environment_lease
from helix_ops.approval import approval_key, fingerprint
from helix_ops.changes import AuditRecord
from helix_ops.descriptor import Descriptor
from helix_ops.errors import HelixOpsError
from tasks.records import record_change


class Approval(RunInput):
    """The approval form (the Prefect UI renders these fields; ``helix-ops approve|reject`` sends the same)."""

    approve: bool = Field(False, description="Apply the plan shown in the run's artifacts")
    approver: str = Field(min_length=1, max_length=100, description="Who decides (recorded)")
    reason: str = Field(min_length=1, max_length=500, description="Why (recorded with the change)")


class RestoreApproval(Approval):
    """A restore's approval also needs the backup id typed back."""

    confirm_backup_id: str = Field("", max_length=100, description="Type the backup id to restore")


class PlanChangedSinceApproval(HelixOpsError):
    """The environment changed between the approval and the lease: the approved plan is no longer the plan."""


@dataclass(frozen=True)
class Proposal:
    """What a flow proposes: the plan for people (``markdown``, ``lines``), the data an approval binds to
    (``identity``: JSON-ready, equal for equal plans), and what its apply needs (``data``)."""

    markdown: str
    lines: tuple[str, ...]
    is_noop: bool
    identity: Any
    change: dict[str, Any]
    before: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    approval: str = ""
    """Set by the gate before the apply: who approved it and why (``Decision.line``)."""


@dataclass(frozen=True)
class Applied:
    """What an apply did: the state after (for the record), one line of detail, and the flow's own value."""

    after: dict[str, Any]
    detail: str
    value: Any = None


@dataclass(frozen=True)
class RolledBack:
    """What a rollback did: the state after it, whether it completed, and the error the flow raises."""

    after: dict[str, Any]
    complete: bool
    detail: str
    error: BaseException | None = None


@dataclass(frozen=True)
class Decision:
    """An operator's answer (or the policy's: nobody asked)."""

    approved: bool
    approver: str = ""
    reason: str = ""
    asked: bool = False
    key: str = ""

    def record(self) -> dict[str, Any] | None:
        return {"approved": self.approved, "approver": self.approver, "reason": self.reason,
                "key": self.key} if self.asked else None

    def line(self) -> str:
        if not self.asked:
            return "no approval needed"
        verdict = "approved" if self.approved else "refused"
        return f"{verdict} by {self.approver}: {self.reason}"


@dataclass(frozen=True)
class Change:
    """One change of one environment: its plan and apply, and the hooks around them.

    ``plan()`` reads the live state and returns a :class:`Proposal`; it is called once before the question
    (when the policy may ask, or ``prepare`` is set) and once under the lease. ``apply(proposal)`` changes the
    environment. ``rollback(proposal, error)`` undoes a failed apply (None: nothing to undo, the record says
    failed). ``before_question(proposal)`` runs before an operator is asked (deploy: the security audit).
    ``prepare(proposal)`` runs after the answer, before the lease, when the plan changes something (upgrade:
    the verified backup first). ``settle(proposal)`` runs under the lease after the apply, also for a no-op
    plan (deploy: init-helix-db and the status). ``check_answer(answer, proposal)`` returns why an approval
    does not count (restore: the typed id). ``refuse(proposal)`` returns the error that refuses a plan before
    anyone is asked or anything applied (deploy: drift under ``kubernetes.drift: refuse``); the plan is
    published, the refusal recorded, and the error raised.
    """

    descriptor: Descriptor
    action: str
    who: str
    plan: Callable[[], Proposal]
    apply: Callable[[Proposal], Applied]
    rollback: Callable[[Proposal, Exception], RolledBack | None] | None = None
    before_question: Callable[[Proposal], None] | None = None
    prepare: Callable[[Proposal], None] | None = None
    settle: Callable[[Proposal], Any] | None = None
    form: type[Approval] = Approval
    check_answer: Callable[[Any, Proposal], str | None] | None = None
    refuse: Callable[[Proposal], Exception | None] | None = None
    question: str = ""
    lease_ttl_s: float = 120
    lease_wait_s: float = 1800
    timeout_s: int | None = None
    """How long the question waits; None: the policy's ``timeout``."""


@dataclass(frozen=True)
class Outcome:
    """How the gate ended: ``applied``, ``noop`` or ``refused``."""

    status: Literal["applied", "noop", "refused"]
    proposal: Proposal
    decision: Decision
    applied: Applied | None = None
    settled: Any = None


def who_asked(triggered_by: str | None = None) -> str:
    """Who a change is recorded as triggered by: the given name, the flow run, or the local user."""
    if triggered_by:
        return triggered_by
    run = flow_run.get_id()
    return f"flow-run/{run}" if run else f"user/{getpass.getuser()}"


def run_change(change: Change) -> Outcome:
    """Take ``change`` through the gate (see the module docstring); returns how it ended. A failed apply is
    recorded, rolled back when the change can, and raised (the rollback's error, if it names one)."""
    logger = get_run_logger()
    env, policy = change.descriptor.environment, change.descriptor.approval
    decision = Decision(approved=True)
    preview: Proposal | None = None
    if policy.asks(change.action) or change.prepare:
        preview = change.plan()
        _publish(change, preview)
        _refuse_if(change, preview, decision)
        if policy.required(change.action, preview.is_noop):
            if change.before_question:
                change.before_question(preview)
            decision = _ask(change, preview, change.timeout_s or policy.timeout_s)
            if not decision.approved:
                logger.warning("%s of %s refused by %s: %s", change.action, env, decision.approver, decision.reason)
                _record(change, preview, "refused", preview.before, decision.line(), decision)
                return Outcome("refused", preview, decision)
        if change.prepare and not preview.is_noop:
            change.prepare(preview)
    with environment_lease(env, change.who, ttl_s=change.lease_ttl_s, wait_s=change.lease_wait_s):
        proposal = change.plan()
        if preview is None or proposal.identity != preview.identity:
            _publish(change, proposal)
            _refuse_if(change, proposal, decision)
        if decision.asked and fingerprint(proposal.identity) != fingerprint(preview.identity):  # type: ignore[union-attr]
            detail = (f"the plan changed after {decision.approver} approved it (someone changed {env} in between): "
                      "nothing applied; run again and approve the new plan")
            _record(change, proposal, "refused", proposal.before, detail, decision)
            raise PlanChangedSinceApproval(f"{change.action} of {env}: {detail}")
        if proposal.is_noop:
            logger.info("nothing to %s in %s: the plan is a no-op", change.action, env)
            settled = change.settle(proposal) if change.settle else None
            return Outcome("noop", proposal, decision, settled=settled)
        proposal = replace(proposal, approval=decision.line())
        try:
            applied = change.apply(proposal)
        except Exception as exc:
            _fail(change, proposal, decision, exc)
            raise
        _record(change, proposal, "succeeded", applied.after, applied.detail, decision)
        settled = change.settle(proposal) if change.settle else None
    return Outcome("applied", proposal, decision, applied, settled)


def _refuse_if(change: Change, proposal: Proposal, decision: Decision) -> None:
    """Record and raise the error ``change.refuse`` finds in ``proposal`` (nothing was changed)."""
    error = change.refuse(proposal) if change.refuse else None
    if error is not None:
        _record(change, proposal, "refused", proposal.before, str(error), decision)
        raise error


def _fail(change: Change, proposal: Proposal, decision: Decision, exc: Exception) -> None:
    """Roll back what a failed apply changed (when the change can), record it, and raise the rollback's error."""
    rolled = change.rollback(proposal, exc) if change.rollback else None
    if rolled is None:
        _record(change, proposal, "failed", {}, f"{type(exc).__name__}: {exc}", decision)
        return
    _record(change, proposal, "rolled-back" if rolled.complete else "failed", rolled.after, rolled.detail, decision)
    if rolled.error is not None:  # the rollback's error keeps the cause it names (upgrade: the failed rollout)
        raise rolled.error from (rolled.error.__cause__ or exc)


def _publish(change: Change, proposal: Proposal) -> None:
    env = change.descriptor.environment
    for line in proposal.lines:
        get_run_logger().info("plan: %s", line)
    create_markdown_artifact(proposal.markdown, key=f"{change.action}-plan-{env}",
                             description=f"{change.action} plan for {env}")


def _ask(change: Change, proposal: Proposal, timeout_s: int) -> Decision:
    """Wait for an operator's answer about ``proposal``: suspended (a deployment's run), else paused."""
    env = change.descriptor.environment
    key = approval_key(change.action, proposal.identity)
    question = change.question or f"{change.action} `{env}`"
    form = change.form.with_initial_data(
        description=(f"## Approve {question}?\n\nThe plan is this run's `{change.action}-plan-{env}` artifact:\n\n"
                     + "\n".join(f"- {line}" for line in proposal.lines[:20])
                     + ("\n- …" if len(proposal.lines) > 20 else "")),
        approve=False)
    logger = get_run_logger()
    logger.info("waiting up to %d s for an approval of %s (key %s): the run's Resume form in the Prefect UI, or "
                "`helix-ops approve %s --reason ...`", timeout_s, question, key, flow_run.get_id())
    if deployment.id:
        answer = suspend_flow_run(wait_for_input=form, timeout=timeout_s, key=key)
    else:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout_s, key=key, poll_interval=2)
    problem = change.check_answer(answer, proposal) if change.check_answer and answer.approve else None
    reason = f"{answer.reason} ({problem})" if problem else answer.reason
    return Decision(approved=answer.approve and not problem, approver=answer.approver, reason=reason, asked=True,
                    key=key)


def _record(change: Change, proposal: Proposal, result: str, after: dict[str, Any], detail: str,
            decision: Decision) -> None:
    record_change(AuditRecord.now(environment=change.descriptor.environment, action=change.action,
                                  triggered_by=change.who, change=proposal.change, before=proposal.before,
                                  after=after, result=result, detail=detail, approval=decision.record()),
                  descriptor=change.descriptor, storage_path=(flow_run.parameters or {}).get("storage_path"))


def answer_run(run_id: str, approve: bool, reason: str, approver: str,
               confirm_backup_id: str | None = None) -> str:
    """Answer a run waiting at the gate, as the UI's Resume form does (``helix-ops approve|reject``).

    Raises :class:`ConfigError` naming what is wrong (not a run id, no such run, not waiting for an answer,
    an answer the run's form refuses) and :class:`HelixOpsError` when the Prefect API cannot be reached.
    Returns one line saying what was done."""
    import uuid

    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    from helix_ops.errors import ConfigError

    try:
        run_uuid = uuid.UUID(run_id)
    except ValueError:
        raise ConfigError("RUN_ID", f"{run_id!r} is not a flow run id (a UUID: the run's page in the Prefect UI "
                                    "or `prefect flow-run ls` shows it)") from None
    data = {"approve": approve, "approver": approver, "reason": reason}
    if confirm_backup_id:
        data["confirm_backup_id"] = confirm_backup_id
    try:
        form = (RestoreApproval if confirm_backup_id else Approval)(**data)
    except ValueError as exc:
        first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": ("answer",), "msg": str(exc)}  # type: ignore[attr-defined]
        raise ConfigError(f"--{first['loc'][0]}", first["msg"]) from None
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_uuid)
        state = run.state
        if state is None or not state.is_paused():
            raise ConfigError("RUN_ID", f"flow run {run.name} ({run_id}) is {state.name if state else 'new'}, not "
                                        "waiting for an approval")
        if not state.state_details.run_input_keyset:
            raise ConfigError("RUN_ID", f"flow run {run.name} is paused but asks no question")
        resume_flow_run(run_uuid, run_input=form.model_dump(exclude={"metadata"}, exclude_unset=False))
    except ObjectNotFound:
        raise ConfigError("RUN_ID", f"there is no flow run {run_id} on {_api_url()}") from None
    except (httpx.HTTPError, OSError) as exc:
        raise HelixOpsError(f"cannot reach the Prefect API at {_api_url()}: {type(exc).__name__}: {exc} (set "
                            "PREFECT_API_URL to the server the run is on)") from None
    except RuntimeError as exc:  # the server refused the answer (e.g. a field the run's form requires)
        raise ConfigError("answer", f"flow run {run.name} refused it: {exc}") from None
    return f"{'approved' if approve else 'rejected'} {run.name} ({run_id}): the run resumes"


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "(no PREFECT_API_URL: an ephemeral server)"
