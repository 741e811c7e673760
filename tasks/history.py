"""What the command line's live verbs read (``helix-ops status|diff|history|backups``): the environment's target
(through the :class:`drivers.target.Target` interface), its backup store and the Prefect API.

These are plain functions, not Prefect tasks: a command-line read creates no task or flow runs. Where a
deploy step is a Prefect task, its function (``.fn``) is called, so ``status`` and ``diff`` compute what
deploy-helix's plan and status steps compute (``steps.plan_deploy``, ``steps.deploy_status``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.storage import BackupStore, LocalStore
from drivers.target import Connection, Target
from helix_ops.descriptor import Descriptor
from helix_ops.plan import Plan


def open_history_store(descriptor: Descriptor, storage_path: str | None = None) -> BackupStore:
    """The environment's backup store as ``tasks.backup.open_store`` opens it (a local folder at
    ``storage_path``, else ``backup.storage``: a folder, or S3 through the ``credentials.storage`` block), but
    without the encryption key: change records and manifests are plain JSON, so reading them needs no key."""
    from blocks.storage import load_backup_storage
    from drivers.storage import store_from_block

    if storage_path:
        return LocalStore(Path(storage_path).resolve())
    return store_from_block(load_backup_storage(descriptor))


def open_target(descriptor: Descriptor, conn: Connection) -> Target:
    """The environment's target (``tasks.target.target_for``), pinged (a clear error when unreachable)."""
    from tasks.target import target_for

    target = target_for(descriptor, conn)
    target.connect()
    return target


def _engine_plan(target: Any, desc: Descriptor, config_text: str | None) -> Plan:
    # tasks.engine.plan_deploy: the Compose rendering against the live labels (read through the Target)
    from helix_ops.plan import compute_plan, engine_objects
    from helix_ops.render.compose import render_compose
    from helix_ops.stack import build_stack

    return compute_plan(engine_objects(render_compose(build_stack(desc))), target.live_state())


def _kube_plan(target: Any, desc: Descriptor, config_text: str | None) -> Plan:
    from tasks.kube import plan_kube  # the rendering with the blocks' secrets (Secret diffs redacted)

    return plan_kube.fn(target, desc, config_text)


def _engine_status(target: Any, desc: Descriptor) -> list[dict[str, Any]]:
    from helix_ops.stack import build_stack
    from tasks.engine import ProbeSpec, service_status

    probes = {s.name: ProbeSpec(s.probe.kind, s.probe.port, s.probe.path) for s in build_stack(desc).services}
    rows = service_status.fn(target, probes, desc)
    return [{**r, "healthy": bool(r["health"]) and not r["health"].startswith(("unhealthy", "absent"))}
            for r in rows]


def _kube_status(target: Any, desc: Descriptor) -> list[dict[str, Any]]:
    from tasks.kube import kube_status

    return [{**r, "healthy": r["health"] == "ready"} for r in kube_status.fn(target)]


PLANNERS: dict[str, Callable[[Any, Descriptor, str | None], Plan]] = {"engine": _engine_plan,
                                                                      "kubernetes": _kube_plan}
STATUSES: dict[str, Callable[[Any, Descriptor], list[dict[str, Any]]]] = {"engine": _engine_status,
                                                                          "kubernetes": _kube_status}


def live_plan(target: Target, desc: Descriptor, config_text: str | None) -> Plan:
    """deploy-helix's plan against the live state, as its plan step computes it on ``target``."""
    return PLANNERS[target.kind](target, desc, config_text)


def live_services(target: Target, desc: Descriptor) -> list[dict[str, Any]]:
    """deploy-helix's status rows (service, image, replicas, health, endpoint, healthy) read now."""
    return STATUSES[target.kind](target, desc)


def last_rotation(desc: Descriptor) -> dict[str, Any]:
    """When each credential was last set (its block's ``rotated_at``) and the rotation in progress, if any."""
    from blocks.credentials import HelixAppSecrets, Neo4jCredentials, RedisCredentials
    from blocks.rotation_state import load_rotation_state

    creds = desc.credentials
    out: dict[str, Any] = {"rotated_at": {}, "in_progress": []}
    for entry, cls, name in (("neo4j", Neo4jCredentials, creds.neo4j), ("redis", RedisCredentials, creds.redis),
                             ("dashboard", HelixAppSecrets, creds.dashboard)):
        try:
            out["rotated_at"][entry] = cls.load(name).rotated_at.isoformat(timespec="seconds")
        except ValueError:
            out["rotated_at"][entry] = None  # no such block
    state = load_rotation_state(desc)
    out["in_progress"] = state.in_progress()
    out["rotation_id"] = state.rotation_id
    return out


def prefect_api() -> tuple[str | None, str]:
    """The Prefect API's URL if one is configured and answers its health check, else None and why."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return None, "no PREFECT_API_URL set"
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=3).raise_for_status()
    except (httpx.HTTPError, OSError) as exc:
        return None, f"the Prefect API at {url} does not answer ({type(exc).__name__})"
    return url, ""


def open_approvals(environment: str) -> list[dict[str, Any]]:
    """Flow runs of ``environment`` (parameter ``env``) in a Paused or Suspended state: waiting for an answer."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    flt = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=flt, limit=200)
        flows = {}
        out = []
        for run in runs:
            if (run.parameters or {}).get("env", "local") != environment:
                continue
            if run.flow_id not in flows:
                flows[run.flow_id] = client.read_flow(run.flow_id).name
            state = run.state
            out.append({"flow_run_id": str(run.id), "flow_run_name": run.name, "flow": flows[run.flow_id],
                        "state": state.name if state else "",
                        "since": state.timestamp.isoformat(timespec="seconds") if state and state.timestamp else "",
                        "asks": bool(state and state.state_details.run_input_keyset),
                        "timeout_at": (state.state_details.pause_timeout.isoformat(timespec="seconds")
                                       if state and state.state_details.pause_timeout else None)})
    return out


def kept_overrides(desc: Descriptor) -> tuple[Any, str]:
    """The overrides deploy-helix would keep (``helix_ops.overrides``, a Prefect Variable) and, when the Prefect
    API cannot be read, empty ones and why."""
    from helix_ops.overrides import Overrides
    from tasks.overrides import load_overrides

    api, why = prefect_api()
    if api is None:
        return Overrides(), f"overrides not read: {why}"
    return load_overrides.fn(desc), ""  # the flows' own reader (its validation and error), without a task run
