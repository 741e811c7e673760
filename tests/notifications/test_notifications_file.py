"""notifications.yaml and the automations it asks for (no server): the shipped file configures nothing, an
environment's entry overrides the top level, bad input is one ConfigError, and every automation validates as
Prefect's AutomationCore with the triggers the alerts need."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helix_ops.errors import ConfigError
from helix_ops.notifications import (
    KINDS,
    ROLLED_BACK_EVENT,
    automations,
    load_notifications,
    notifications_path,
    parse_notifications,
    scheduled_flows,
    settings_for,
)

REPO = Path(__file__).resolve().parents[2]
BLOCK_ID = "00000000-0000-0000-0000-000000000001"


def test_the_shipped_file_names_no_block_and_no_stale_backup_alarm_for_local():
    file = load_notifications(REPO / "notifications.yaml")
    for env in ("local", "staging", "prod"):
        assert settings_for(file, env).block is None
    assert settings_for(file, "local").kinds == ("failed-run", "restore", "rollback", "approval")
    assert settings_for(file, "prod").kinds == KINDS
    assert settings_for(file, "prod").stale_backup_after_s == 93600
    assert "no notification block for prod" in settings_for(file, "prod", "notifications.yaml").unconfigured_line()


def test_an_environment_entry_overrides_the_top_level(tmp_path):
    file = parse_notifications(
        "block: team-alerts\nstale_backup_after_s: 7200\nenvironments:\n"
        "  prod: {block: slack-webhook/prod-pager, notify: [approval, failed-run]}\n"
        "  local: {block: null}\n"
        "  staging: {stale_backup_after_s: 600}\n")
    prod, local, staging = (settings_for(file, e) for e in ("prod", "local", "staging"))
    assert (prod.block, prod.kinds, prod.stale_backup_after_s) == ("slack-webhook/prod-pager", ("failed-run", "approval"), 7200)
    assert local.block is None  # an explicit null switches the top-level block off
    assert (staging.block, staging.stale_backup_after_s) == ("team-alerts", 600)
    assert settings_for(file, "other").block == "team-alerts"


def test_missing_or_empty_file_configures_nothing(tmp_path):
    assert settings_for(load_notifications(tmp_path / "nope.yaml"), "prod").block is None
    assert parse_notifications("").block is None
    assert notifications_path({}, tmp_path) == tmp_path / "notifications.yaml"
    assert notifications_path({"HELIX_NOTIFICATIONS_FILE": "/x/n.yaml"}, tmp_path) == Path("/x/n.yaml")


@pytest.mark.parametrize("text, where", [
    ("notify: [failed-run, page-me]\n", "notify[1]"),
    ("stale_backup_after_s: 5\n", "stale_backup_after_s"),
    ("blocks: x\n", "blocks"),
    ("environments: {prod: {block: 'has space'}}\n", "environments.prod.block"),
    ("- a list\n", "(top level)"),
])
def test_bad_input_is_one_config_error_naming_the_key(text, where):
    with pytest.raises(ConfigError) as info:
        parse_notifications(text, "notifications.yaml")
    assert info.value.path == where and info.value.source == "notifications.yaml"
    assert "\n" not in str(info.value)


def test_failed_runs_are_watched_for_every_flow_that_has_a_schedule():
    flows = scheduled_flows(yaml.safe_load((REPO / "prefect.yaml").read_text()))
    assert {"backup-helix", "rotate-helix-secrets", "prune-helix-backups"} <= set(flows)
    assert "deploy-helix" not in flows and "restore-helix" not in flows


def test_the_automations_validate_and_match_the_environment_only():
    from prefect.events.schemas.automations import AutomationCore, Posture

    settings = settings_for(parse_notifications("block: alerts\n"), "prod")
    made = {a["name"]: AutomationCore.model_validate(a) for a in automations(settings, BLOCK_ID, ["backup-helix"])}
    assert sorted(made) == sorted(f"helix-ops/prod/{k}" for k in KINDS)
    for a in made.values():
        assert [(x.type, str(x.block_document_id)) for x in a.actions] == [("send-notification", BLOCK_ID)]
        assert a.actions[0].subject.startswith("[helix-ops prod] ") and "Environment: prod" in a.actions[0].body

    failed = made["helix-ops/prod/failed-run"].trigger
    assert failed.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert failed.posture == Posture.Reactive and failed.threshold == 1
    assert [m.root for m in failed.match_related] == [
        {"prefect.resource.role": "flow", "prefect.resource.name": ["backup-helix"]},
        {"prefect.resource.role": "deployment", "prefect.resource.name": "prod"}]
    assert "{{ flow_run|ui_url }}" in made["helix-ops/prod/failed-run"].actions[0].body

    stale = made["helix-ops/prod/stale-backup"].trigger
    assert stale.posture == Posture.Proactive and stale.within.total_seconds() == 93600
    assert stale.expect == {"prefect.flow-run.Completed"}

    assert made["helix-ops/prod/approval"].trigger.expect == {"prefect.flow-run.Paused", "prefect.flow-run.Suspended"}
    assert made["helix-ops/prod/restore"].trigger.match_related[0]["prefect.resource.name"] == ["restore-helix"]
    rollback = made["helix-ops/prod/rollback"].trigger
    assert rollback.expect == {ROLLED_BACK_EVENT}
    assert rollback.match.root == {"prefect.resource.id": "helix.environment.prod"}
