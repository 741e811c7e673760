"""``helix-ops status|diff|history|backups`` and ``deploy-helix(dry_run=True)`` against the real engine: one
local stack deployed once for the module, its backups and change records in a folder of its own.

In order: status shows every service healthy; diff exits 0; a descriptor with one more dashboard replica makes
diff exit 2 naming it, and a dry run of deploy-helix plans it and changes nothing; the deploy's change record is
listed by history, also after the worker's audit folder is deleted; backups list/show a backup-helix run's
backup, and status shows it as the last, verified, backup."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from helix_ops.cli import main
from testbed.helix import container_ids, local_descriptor

pytestmark = pytest.mark.bed


@pytest.fixture(scope="module")
def stack(bed, engine, images, prefect_harness, tmp_path_factory):
    from blocks.bootstrap import main as bootstrap
    from drivers.engine import EngineDriver
    from flows.deploy import deploy_helix

    root = tmp_path_factory.mktemp("live")
    audit = root / "audit"
    old_audit = os.environ.get("HELIX_OPS_AUDIT_DIR")
    os.environ["HELIX_OPS_AUDIT_DIR"] = str(audit)
    project = f"lv{bed.run_id.split('-')[-1]}"
    path = local_descriptor(root / "local.yaml", project)
    data = yaml.safe_load(path.read_text())
    data["backup"]["storage"]["path"] = str(root / "store")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert bootstrap(["--descriptor", str(path)]) == 0
    try:
        result = deploy_helix(env="local", descriptor=str(path), engine_url=engine.base_url,
                              container_labels=bed.container_labels())
        assert result["unhealthy"] == []
        yield {"path": path, "project": project, "root": root, "audit": audit, "data": data, "result": result}
    finally:
        EngineDriver.connect(engine.base_url, project, "local").remove_project()
        if old_audit is None:
            os.environ.pop("HELIX_OPS_AUDIT_DIR", None)
        else:
            os.environ["HELIX_OPS_AUDIT_DIR"] = old_audit


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_status_shows_every_service_healthy(stack, engine, capsys):
    code, out, err = cli(capsys, "status", "--descriptor", str(stack["path"]), "--engine-url", engine.base_url,
                         "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["healthy"] and {r["service"] for r in data["services"]} == {
        "neo4j", "redis", "dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade",
        "mcp-verification", "nginx"}
    assert all(r["healthy"] for r in data["services"])
    assert {r["service"]: r["replicas"] for r in data["services"]}["dashboard"] == 2
    assert data["last_backup"] is None and data["backups"] == 0
    assert data["approvals"] == [] and set(data["rotation"]["rotated_at"]) == {"neo4j", "redis", "dashboard"}
    assert data["notes"] == []
    code, out, _ = cli(capsys, "status", "--descriptor", str(stack["path"]), "--engine-url", engine.base_url)
    assert code == 0 and "bolt login ok" in out and "last backup: none" in out and "NOT HEALTHY" not in out


def test_diff_exits_0_when_the_live_state_is_the_rendering(stack, engine, capsys):
    code, out, err = cli(capsys, "diff", "--descriptor", str(stack["path"]), "--engine-url", engine.base_url)
    assert code == 0, err
    assert out.startswith("no changes: local")


def test_diff_exits_2_naming_a_changed_replica_and_a_dry_run_changes_nothing(stack, engine, bed, capsys,
                                                                             docker_client, tmp_path):
    from flows.deploy import deploy_helix

    data = json.loads(json.dumps(stack["data"]))
    data["services"]["dashboard"]["replicas"] = 3
    changed = tmp_path / "local.yaml"
    changed.write_text(yaml.safe_dump(data, sort_keys=False))
    code, out, err = cli(capsys, "diff", "--descriptor", str(changed), "--engine-url", engine.base_url, "--json")
    assert code == 2, err
    plan = json.loads(out)["plan"]
    moved = [c for c in plan["changes"] if c["action"] != "noop"]
    assert moved and all("dashboard" in c["identity"] or "nginx" in c["identity"] for c in moved), moved
    code, out, _ = cli(capsys, "diff", "--descriptor", str(changed), "--engine-url", engine.base_url)
    assert code == 2 and "dashboard" in out

    before = container_ids(docker_client, stack["project"])
    result = deploy_helix(env="local", descriptor=str(changed), engine_url=engine.base_url,
                          container_labels=bed.container_labels(), dry_run=True)
    assert result["applied"] is False and result["dry_run"] is True
    assert result["plan"] == plan
    assert container_ids(docker_client, stack["project"]) == before
    code, _, _ = cli(capsys, "diff", "--descriptor", str(stack["path"]), "--engine-url", engine.base_url)
    assert code == 0


def test_history_lists_the_deploy_record_after_the_workers_audit_folder_is_gone(stack, capsys):
    assert (stack["audit"] / "local.jsonl").exists()
    shutil.rmtree(stack["audit"])  # the worker's local log (a flow-run pod's, a home directory) is gone
    code, out, err = cli(capsys, "history", "--descriptor", str(stack["path"]), "--json")
    assert code == 0, err
    records = json.loads(out)
    deploys = [r for r in records if r["action"] == "deploy" and r["result"] == "succeeded"]
    assert len(deploys) == 1, records  # the dry run recorded nothing
    assert deploys[0]["run"]["flow_run_id"] == stack["result"]["flow_run_id"]
    assert deploys[0]["run"]["flow_name"] == "deploy-helix" and deploys[0]["run"]["run_elapsed_s"] > 0
    assert deploys[0]["change"]["plan"]["create"] > 0
    folder = stack["root"] / "store" / "changes" / "local"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in folder.iterdir())
    code, out, _ = cli(capsys, "history", "--descriptor", str(stack["path"]))
    assert code == 0 and "deploy" in out and "succeeded" in out


def test_backups_list_and_show_a_backup_helix_run(stack, engine, capsys):
    from flows.backup import backup_helix

    result = backup_helix(env="local", descriptor=str(stack["path"]), engine_url=engine.base_url)
    bid = result["backup_id"]
    code, out, err = cli(capsys, "backups", "list", "--descriptor", str(stack["path"]), "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["backup_id"] for r in rows] == [bid] and rows[0]["verified"]
    code, out, _ = cli(capsys, "backups", "show", bid, "--descriptor", str(stack["path"]))
    assert code == 0 and f"backup {bid}" in out and "neo4j.jsonl.zst" in out and "verification: verified" in out
    code, out, _ = cli(capsys, "status", "--descriptor", str(stack["path"]), "--engine-url", engine.base_url,
                       "--json")
    last = json.loads(out)["last_backup"]
    assert code == 0 and last["backup_id"] == bid and last["verified"]
