"""Create or update an environment's notification automations on the Prefect API, from ``notifications.yaml``.

    python -m blocks.notifications --env prod          # what `python -m blocks.bootstrap --env prod` also does
    HELIX_NOTIFICATIONS_FILE=PATH python -m blocks.notifications --env prod

:func:`apply_notifications` resolves the environment's notification block by name (``name`` or
``<block-type-slug>/name``; it must exist and be a notification block), then makes the automations
``helix-ops/<env>/<kind>`` match :func:`helix_ops.notifications.automations`: missing ones are created, differing
ones updated (an operator's pause is kept), equal ones kept, extra ``helix-ops/<env>/...`` ones (a kind no longer
asked for, duplicates) deleted. With no block configured nothing is created (earlier helix-ops automations of
the environment are deleted) and the one line says so. Run twice, it changes nothing the second time.
Exit codes: 0 done, 2 invalid input (one line on stderr), 1 the Prefect API failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from helix_ops.errors import ConfigError, DriverError, HelixOpsError
from helix_ops.notifications import (
    ROLLED_BACK_EVENT,
    EnvironmentSettings,
    automations,
    load_notifications,
    notifications_path,
    owned_prefix,
    scheduled_flows,
    settings_for,
)

REPO = Path(__file__).resolve().parents[1]
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

Action = Literal["created", "updated", "kept", "deleted"]


@dataclass(frozen=True)
class AutomationOutcome:
    name: str
    action: Action
    note: str = ""

    def line(self) -> str:
        text = f"notifications: {self.action} automation {self.name}"
        return f"{text}: {self.note}" if self.note else text


def environment_settings(environment: str, environ: Mapping[str, str], cwd: Path | None = None) -> EnvironmentSettings:
    """The notifications of ``environment`` from its file (see :func:`helix_ops.notifications.notifications_path`);
    a ConfigError for a malformed file. Reads nothing from Prefect."""
    path = notifications_path(environ, cwd)
    return settings_for(load_notifications(path), environment, str(path) if path.is_file() else f"{path} (missing)")


def default_failed_run_flows() -> list[str]:
    """The flows with a schedule in the repository's prefect.yaml."""
    return scheduled_flows(yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8")))


def apply_notifications(
    settings: EnvironmentSettings, failed_run_flows: Sequence[str] | None = None
) -> tuple[list[AutomationOutcome], str]:
    """Make the environment's automations match ``settings``; the outcomes and a summary line.

    Raises :class:`ConfigError` when the named block is missing or not a notification block,
    :class:`DriverError` when the Prefect API fails."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            existing = _owned(client, settings.environment)
            if settings.block is None:
                outcomes = [_delete(client, a, "no notification block configured") for a in existing]
                return outcomes, f"notifications: {settings.unconfigured_line()}"
            block_id, block_label = _block(client, settings)
            flows = default_failed_run_flows() if failed_run_flows is None else list(failed_run_flows)
            wanted = automations(settings, block_id, flows)
            outcomes = []
            by_name: dict[str, list[Any]] = {}
            for automation in existing:
                by_name.setdefault(automation.name, []).append(automation)
            for spec in wanted:
                found = by_name.pop(spec["name"], [])
                outcomes.append(_upsert(client, spec, found[0] if found else None))
                outcomes += [_delete(client, extra, "duplicate") for extra in found[1:]]
            for leftovers in by_name.values():
                outcomes += [_delete(client, a, "not asked for in " + settings.source) for a in leftovers]
    except HelixOpsError:
        raise
    except Exception as exc:  # API failures; the type is enough
        raise DriverError(f"Prefect API failed while writing automations: {type(exc).__name__}: {exc}",
                          hint="is PREFECT_API_URL reachable?") from exc
    counts = {a: sum(o.action == a for o in outcomes) for a in ("created", "updated", "kept", "deleted")}
    summary = (f"notifications: {settings.environment}: {', '.join(settings.kinds) or 'no alerts'} through "
               f"{block_label}; automations " + ", ".join(f"{n} {a}" for a, n in counts.items() if n))
    return outcomes, summary


def _owned(client: Any, environment: str) -> list[Any]:
    prefix, found, offset = owned_prefix(environment), [], 0
    while True:
        page = client.read_automations(limit=200, offset=offset)
        found += [a for a in page if a.name.startswith(prefix)]
        if len(page) < 200:
            return sorted(found, key=lambda a: (a.name, str(a.id)))
        offset += len(page)


def _block(client: Any, settings: EnvironmentSettings) -> tuple[str, str]:
    """The id and ``slug/name`` of the named notification block."""
    slug, _, name = settings.block.rpartition("/")  # type: ignore[union-attr]
    body: dict[str, Any] = {"block_documents": {"name": {"any_": [name]}, "is_anonymous": {"eq_": False}},
                            "include_secrets": False, "limit": 10}
    if slug:
        body["block_types"] = {"slug": {"any_": [slug]}}
    response = client.request("POST", "/block_documents/filter", json=body)
    response.raise_for_status()
    docs = response.json()
    where = f"environments.{settings.environment}.block (or block)"
    if not docs:
        raise ConfigError(where, f"no block named {settings.block!r}: create the notification block first (Prefect "
                          "UI: Blocks, or e.g. `prefect block create slack-webhook`)", settings.source)
    if len(docs) > 1:
        types = ", ".join(f"{d['block_type']['slug']}/{name}" for d in docs)
        raise ConfigError(where, f"{name!r} names more than one block ({types}): write <block-type-slug>/{name}",
                          settings.source)
    doc = docs[0]
    label = f"{doc['block_type']['slug']}/{doc['name']}"
    if "notify" not in (doc.get("block_schema") or {}).get("capabilities", []):
        raise ConfigError(where, f"block {label} is not a notification block (it cannot notify)", settings.source)
    return str(doc["id"]), label


def _comparable(data: Mapping[str, Any]) -> dict[str, Any]:
    """An automation's definition without what the server adds or the operator owns (ids, enabled). Python
    mode: a trigger's ``expect`` is a set, and two equal sets may list in different orders."""
    from prefect.events.schemas.automations import AutomationCore

    core = AutomationCore.model_validate(dict(data)).model_dump(exclude={"enabled", "owner_resource"})
    core["trigger"].pop("id", None)
    return core


def _upsert(client: Any, spec: dict[str, Any], current: Any | None) -> AutomationOutcome:
    from prefect.events.schemas.automations import AutomationCore

    if current is None:
        client.create_automation(AutomationCore.model_validate(spec))
        return AutomationOutcome(spec["name"], "created")
    current_data = current.model_dump(mode="json", exclude={"id"})
    if _comparable(current_data) == _comparable(spec):
        return AutomationOutcome(spec["name"], "kept", "unchanged" if current.enabled else "unchanged, paused")
    # a full replacement (PUT), keeping the operator's pause
    client.update_automation(current.id, AutomationCore.model_validate({**spec, "enabled": current.enabled}))
    return AutomationOutcome(spec["name"], "updated", "" if current.enabled else "kept paused")


def _delete(client: Any, automation: Any, why: str) -> AutomationOutcome:
    client.delete_automation(automation.id)
    return AutomationOutcome(automation.name, "deleted", why)


def emit_rolled_back(environment: str, action: str, detail: str, triggered_by: str = "") -> None:
    """Emit :data:`~helix_ops.notifications.ROLLED_BACK_EVENT` about ``helix.environment.<environment>``: what
    the ``rollback`` notification fires on. Call it from the flow or task run that rolled the change back (when
    its change record's result is ``rolled-back``): the event then names the run, and the notification links to
    its page (the run is one of the event's related resources). Never raises (Prefect logs a failed emit)."""
    from prefect.events import emit_event

    emit_event(
        event=ROLLED_BACK_EVENT,
        resource={"prefect.resource.id": f"helix.environment.{environment}", "prefect.resource.name": environment,
                  "helix.action": action},
        payload={"detail": detail, "triggered_by": triggered_by},
    )


# --- command line -----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise ConfigError("arguments", message)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``python -m blocks.notifications --env NAME``; returns the exit code."""
    env = os.environ if environ is None else environ
    parser = _Parser(prog="python -m blocks.notifications",
                     description="Create or update an environment's notification automations from notifications.yaml "
                                 "(or $HELIX_NOTIFICATIONS_FILE).")
    parser.add_argument("--env", metavar="NAME", required=True, help="environment")
    try:
        args = parser.parse_args(argv)
        outcomes, summary = apply_notifications(environment_settings(args.env, env))
    except ConfigError as exc:
        return _fail(exc.one_line(), EXIT_INVALID)
    except HelixOpsError as exc:
        return _fail(str(exc), EXIT_FAILED)
    for outcome in outcomes:
        print(outcome.line())
    print(summary)
    return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"blocks.notifications: error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
