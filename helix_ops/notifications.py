"""Notifications as Prefect automations: what ``notifications.yaml`` asks for, and the automations it makes (pure).

``notifications.yaml`` (the repository root, or ``HELIX_NOTIFICATIONS_FILE``) names, per environment, the
Prefect notification block that receives the alerts (a Slack webhook, a custom webhook, an email block: any
block with ``notify()``), and which alerts it gets:

==================  ========================================================================================
``failed-run``      a run of a scheduled deployment of the environment ends Failed or Crashed (the flows that
                    have a schedule in ``prefect.yaml``: backup-helix, rotate-helix-secrets, prune-helix-backups,
                    verify-helix-backup, audit-helix)
``stale-backup``    no run of ``backup-helix/<env>`` completed within ``stale_backup_after_s`` (26 h): a
                    proactive trigger, it fires even when no backup ran at all
``restore``         a run of ``restore-helix/<env>`` ends (Completed, Failed or Crashed)
``rollback``        a change was rolled back automatically: the event :data:`ROLLED_BACK_EVENT` about the
                    resource ``helix.environment.<env>`` (emitted when a change record has result
                    ``rolled-back``)
``approval``        a run of one of the environment's deployments waits for an approval (Paused or Suspended)
==================  ========================================================================================

Each automation is named ``helix-ops/<env>/<kind>``: the bootstrap creates or updates them by that name, so
running it twice leaves one of each. This module builds their definitions as plain data; ``blocks.notifications``
resolves the block and talks to the Prefect API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from helix_ops._validation import load_yaml_mapping, validate_model
from helix_ops.schedules import BACKUP_FLOW, deployment_key

Kind = Literal["failed-run", "stale-backup", "restore", "rollback", "approval"]
KINDS: tuple[Kind, ...] = ("failed-run", "stale-backup", "restore", "rollback", "approval")

FILE_NAME = "notifications.yaml"
FILE_ENV = "HELIX_NOTIFICATIONS_FILE"
NAME_PREFIX = "helix-ops/"
ROLLED_BACK_EVENT = "helix.change.rolled-back"
"""The event a flow emits when a change record's result is ``rolled-back`` (resource ``helix.environment.<env>``)."""
RESTORE_FLOW = "restore-helix"
DEFAULT_STALE_BACKUP_S = 26 * 3600

BlockRef = Annotated[StrictStr, Field(pattern=r"^([a-z0-9-]+/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
"""A block's name, or ``<block-type-slug>/<name>`` when the name alone is ambiguous."""
Seconds = Annotated[int, Field(ge=10, le=366 * 86400)]


class EnvironmentNotifications(BaseModel):
    """One environment's overrides; a key left out takes the file's top-level value."""

    model_config = ConfigDict(extra="forbid")

    block: BlockRef | None = None
    notify: list[Kind] | None = None
    stale_backup_after_s: Seconds | None = None


class NotificationsFile(BaseModel):
    """``notifications.yaml``."""

    model_config = ConfigDict(extra="forbid")

    block: BlockRef | None = None
    notify: list[Kind] = Field(default_factory=lambda: list(KINDS))
    stale_backup_after_s: Seconds = DEFAULT_STALE_BACKUP_S
    environments: dict[str, EnvironmentNotifications] = Field(default_factory=dict)


@dataclass(frozen=True)
class EnvironmentSettings:
    """What one environment gets: ``block`` None means no notifications (and no automations)."""

    environment: str
    block: str | None
    kinds: tuple[Kind, ...]
    stale_backup_after_s: int
    source: str

    def unconfigured_line(self) -> str:
        return (f"no notification block for {self.environment} in {self.source}: no automations created "
                f"(set `block:` there, or environments.{self.environment}.block, to a notification block's name)")


def notifications_path(environ: Mapping[str, str], cwd: Path | None = None) -> Path:
    """``$HELIX_NOTIFICATIONS_FILE``, else ``notifications.yaml`` in ``cwd`` (the current directory)."""
    raw = environ.get(FILE_ENV, "").strip()
    return Path(raw) if raw else (cwd or Path.cwd()) / FILE_NAME


def load_notifications(path: Path) -> NotificationsFile:
    """The file at ``path``; a missing file is an empty one (no block: no notifications)."""
    if not path.is_file():
        return NotificationsFile()
    return parse_notifications(path.read_text(encoding="utf-8"), str(path))


def parse_notifications(text: str, source: str = FILE_NAME) -> NotificationsFile:
    data = load_yaml_mapping(text, source) if text.strip() else {}
    return validate_model(NotificationsFile, data, source)


def settings_for(file: NotificationsFile, environment: str, source: str = FILE_NAME) -> EnvironmentSettings:
    """``environment``'s block, alerts and staleness window: its entry's values over the top-level ones."""
    own = file.environments.get(environment) or EnvironmentNotifications()
    block = own.block if "block" in own.model_fields_set else file.block
    kinds = own.notify if own.notify is not None else file.notify
    stale = own.stale_backup_after_s if own.stale_backup_after_s is not None else file.stale_backup_after_s
    return EnvironmentSettings(environment, block, tuple(k for k in KINDS if k in kinds), stale, source)


def scheduled_flows(prefect_yaml: Mapping[str, Any]) -> list[str]:
    """The flows of every deployment of ``prefect.yaml`` that has a schedule (any environment), sorted."""
    flows = {deployment_key(d).split("/", 1)[0] for d in prefect_yaml.get("deployments") or []
             if d.get("schedules")}
    return sorted(flows)


def automation_name(environment: str, kind: Kind) -> str:
    return f"{NAME_PREFIX}{environment}/{kind}"


def owned_prefix(environment: str) -> str:
    """Every automation named with this prefix belongs to the environment's notifications."""
    return f"{NAME_PREFIX}{environment}/"


def _of_environment(environment: str, flows: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """``match_related`` of a flow run of one of ``flows`` from a deployment named ``environment`` (every
    deployment of prefect.yaml is named after its environment)."""
    specs: list[dict[str, Any]] = []
    if flows is not None:
        specs.append({"prefect.resource.role": "flow", "prefect.resource.name": list(flows)})
    specs.append({"prefect.resource.role": "deployment", "prefect.resource.name": environment})
    return specs


def _hours(seconds: int) -> str:
    return f"{seconds // 3600} h" if seconds % 3600 == 0 else f"{seconds} s"


RUN = "{{ flow.name }}/{{ deployment.name }}"
RUN_LINES = ("Run: {{ flow_run.name }} (" + RUN + "), state {{ flow_run.state.name }}"
             "{% if flow_run.state.message %}: {{ flow_run.state.message }}{% endif %}\n"
             "UI: {{ flow_run|ui_url }}\n")


def automations(settings: EnvironmentSettings, block_document_id: str, failed_run_flows: Sequence[str]) -> list[dict[str, Any]]:
    """The automations of ``settings`` (as ``AutomationCore`` data), each sending to ``block_document_id``."""
    env = settings.environment
    head = f"Environment: {env}\n"

    def notify(subject: str, body: str) -> list[dict[str, Any]]:
        return [{"type": "send-notification", "block_document_id": block_document_id,
                 "subject": f"[helix-ops {env}] {subject}", "body": head + body}]

    def reactive(expect: Sequence[str], match_related: Any, match: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {"type": "event", "posture": "Reactive", "expect": sorted(expect),
                "match": dict(match or {"prefect.resource.id": "prefect.flow-run.*"}),
                "match_related": match_related, "threshold": 1, "within": 0}

    made: dict[Kind, dict[str, Any]] = {
        "failed-run": {
            "description": f"A run of a scheduled deployment of {env} ({', '.join(failed_run_flows)}) ended "
                           "Failed or Crashed.",
            "trigger": reactive(["prefect.flow-run.Failed", "prefect.flow-run.Crashed"],
                                _of_environment(env, failed_run_flows)),
            "actions": notify(RUN + " {{ flow_run.state.name }}", RUN_LINES),
        },
        "stale-backup": {
            "description": f"No run of {BACKUP_FLOW}/{env} completed within {_hours(settings.stale_backup_after_s)}.",
            "trigger": {"type": "event", "posture": "Proactive", "expect": ["prefect.flow-run.Completed"],
                        "match": {"prefect.resource.id": "prefect.flow-run.*"},
                        "match_related": _of_environment(env, [BACKUP_FLOW]), "threshold": 1,
                        "within": settings.stale_backup_after_s},
            "actions": notify(f"no completed backup in {_hours(settings.stale_backup_after_s)}",
                              f"No run of {BACKUP_FLOW}/{env} has completed in the last "
                              f"{_hours(settings.stale_backup_after_s)} (checked at {{{{ firing.triggered }}}}).\n"
                              "Look at the deployment's runs in the Prefect UI; this automation: "
                              "{{ automation|ui_url }}\n"),
        },
        "restore": {
            "description": f"A run of {RESTORE_FLOW}/{env} ended (Completed, Failed or Crashed).",
            "trigger": reactive(["prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Crashed"],
                                _of_environment(env, [RESTORE_FLOW])),
            "actions": notify("restore {{ flow_run.state.name }}", RUN_LINES),
        },
        "rollback": {
            "description": f"A change to {env} was rolled back automatically (event {ROLLED_BACK_EVENT}).",
            "trigger": reactive([ROLLED_BACK_EVENT], [], {"prefect.resource.id": f"helix.environment.{env}"}),
            "actions": notify("{{ event.resource['helix.action'] }} rolled back",
                              "Change: {{ event.resource['helix.action'] }}, result rolled-back\n"
                              "Detail: {{ event.payload.detail }}\n"
                              "Run: {% if flow_run %}{{ flow_run.name }} ({{ flow.name }}), "
                              "{{ flow_run|ui_url }}{% else %}not from a flow run{% endif %}\n"),
        },
        "approval": {
            "description": f"A run of a deployment of {env} waits for an approval (Paused or Suspended).",
            "trigger": reactive(["prefect.flow-run.Paused", "prefect.flow-run.Suspended"], _of_environment(env)),
            "actions": notify(RUN + " waits for an approval",
                              RUN_LINES + "Resume it (approve or refuse) from the run's page.\n"),
        },
    }
    return [{"name": automation_name(env, kind), "tags": ["helix-ops", f"env:{env}"], "enabled": True, **made[kind]}
            for kind in settings.kinds]

