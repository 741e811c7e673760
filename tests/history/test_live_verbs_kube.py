"""``helix-ops diff`` and ``status`` against the test bed's real Kubernetes control plane (kwok plays the nodes):
one environment deployed once; diff exits 0, then 2 naming a workload whose replicas a descriptor copy changes;
status lists every workload ready; history lists the deploy's record, kept in the environment's S3 store (the bed's
S3Proxy). Last, drift: a ``kubectl set image``-style patch shows in diff, a deploy under ``kubernetes.drift:
refuse`` changes nothing and says what drifted, and one under the default ``revert`` takes it back."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from helix_ops.cli import main
from tests.kube.conftest import new_names, write_descriptor

pytestmark = pytest.mark.bed


@pytest.fixture(scope="module")
def kenv(kube, bed, prefect_harness, tmp_path_factory):
    import secrets

    from pydantic import SecretStr

    from blocks.bootstrap import main as bootstrap
    from blocks.storage import save_s3_storage
    from flows.deploy import deploy_helix

    root = tmp_path_factory.mktemp("kl")
    old_audit = os.environ.get("HELIX_OPS_AUDIT_DIR")
    os.environ["HELIX_OPS_AUDIT_DIR"] = str(root / "audit")
    environment, namespace = new_names("h")
    path = write_descriptor(root / "desc" / f"{environment}.yaml", environment, namespace, sentinel=False)
    data = yaml.safe_load(path.read_text())
    s3 = bed.s3()
    bucket = "hist-" + secrets.token_hex(4)
    s3.client().create_bucket(Bucket=bucket)
    data["backup"]["storage"] = {"kind": "s3", "bucket": bucket, "prefix": "helix/", "endpoint": s3.endpoint}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert bootstrap(["--descriptor", str(path)]) == 0
    save_s3_storage(data["credentials"]["storage"], bucket, overwrite=True, prefix="helix/",
                    access_key_id=s3.access_key, secret_access_key=SecretStr(s3.secret_key), endpoint_url=s3.endpoint)
    try:
        deploy_helix(env=environment, descriptor=str(path), kubeconfig=str(kube.kubeconfig), health_timeout_s=90,
                     run_init_db=False)
        yield {"environment": environment, "namespace": namespace, "path": path, "data": data, "s3": s3,
               "bucket": bucket}
    finally:
        if old_audit is None:
            os.environ.pop("HELIX_OPS_AUDIT_DIR", None)
        else:
            os.environ["HELIX_OPS_AUDIT_DIR"] = old_audit


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_diff_reads_the_control_plane(kenv, kube, capsys, tmp_path):
    code, out, err = cli(capsys, "diff", "--descriptor", str(kenv["path"]), "--kubeconfig", str(kube.kubeconfig))
    assert code == 0, (out, err)
    data = json.loads(json.dumps(kenv["data"]))
    data["services"]["mcp-discovery"]["replicas"] = data["services"]["mcp-discovery"].get("replicas", 1) + 1
    changed = kenv["path"].parent / "changed.yaml"
    changed.write_text(yaml.safe_dump(data, sort_keys=False))
    code, out, err = cli(capsys, "diff", "--descriptor", str(changed), "--kubeconfig", str(kube.kubeconfig),
                         "--json")
    assert code == 2, err
    moved = [c["identity"] for c in json.loads(out)["plan"]["changes"] if c["action"] != "noop"]
    assert moved and all("mcp-discovery" in i for i in moved), moved


def test_status_lists_every_workload_ready_and_the_deploy_in_history(kenv, kube, capsys):
    code, out, err = cli(capsys, "status", "--descriptor", str(kenv["path"]), "--kubeconfig", str(kube.kubeconfig),
                         "--json")
    data = json.loads(out)
    assert code == 0, (data, err)
    assert {"neo4j", "redis", "dashboard", "mcp-graph"} <= {r["service"] for r in data["services"]}
    assert all(r["health"] == "ready" for r in data["services"]) and data["approvals"] == []
    code, out, err = cli(capsys, "history", "--descriptor", str(kenv["path"]), "--json")
    assert code == 0, err
    assert [(r["action"], r["result"]) for r in json.loads(out)] == [("deploy", "succeeded")]
    keys = [o["Key"] for o in kenv["s3"].client().list_objects_v2(Bucket=kenv["bucket"])["Contents"]
            if not o["Key"].endswith("/")]  # S3Proxy's file system backend lists its folders too
    assert len(keys) == 1 and keys[0].startswith(f"helix/changes/{kenv['environment']}/"), keys


def test_a_kubectl_set_image_is_drift_a_refusing_deploy_keeps_it_and_a_deploy_takes_it_back(kenv, kube, capsys):
    from lightkube.types import PatchType

    from flows.deploy import deploy_helix
    from helix_ops.errors import DriftRefused
    from tests.kube.conftest import Admin

    admin = Admin(kube.kubeconfig, kenv["namespace"])
    res = admin.res("Deployment")

    def dashboard_image() -> str:
        return admin.client.get(res, "dashboard").to_dict()["spec"]["template"]["spec"]["containers"][0]["image"]

    declared = dashboard_image()
    hotfix = declared.rsplit(":", 1)[0] + ":hotfix-by-hand"
    # what `kubectl set image deployment/dashboard dashboard=…` sends: a strategic merge patch, its own field manager
    admin.client.patch(res, "dashboard", {"spec": {"template": {"spec": {"containers": [
        {"name": "dashboard", "image": hotfix}]}}}}, patch_type=PatchType.STRATEGIC, field_manager="kubectl-set")
    # and `kubectl set env deployment/dashboard HOTFIX_FLAG=secret-ish`: an addition server-side apply keeps
    admin.client.patch(res, "dashboard", {"spec": {"template": {"spec": {"containers": [
        {"name": "dashboard", "env": [{"name": "HOTFIX_FLAG", "value": "secret-ish"}]}]}}}},
        patch_type=PatchType.STRATEGIC, field_manager="kubectl-set")
    assert dashboard_image() == hotfix

    kubeconfig = str(kube.kubeconfig)
    code, out, err = cli(capsys, "diff", "--descriptor", str(kenv["path"]), "--kubeconfig", kubeconfig, "--json")
    assert code == 2, (out, err)
    moved = [c for c in json.loads(out)["plan"]["changes"] if c["action"] != "noop"]
    assert [(c["identity"], c["drift"]) for c in moved] == [(f"Deployment/{kenv['namespace']}/dashboard", True)]
    assert {"path": "containers.dashboard.image", "old": hotfix, "new": declared} in moved[0]["diff"]
    assert {"path": "containers.dashboard.env.HOTFIX_FLAG", "old": "<redacted>", "new": None} in moved[0]["diff"]
    assert "secret-ish" not in out

    refusing = kenv["path"].parent / "refusing.yaml"
    data = json.loads(json.dumps(kenv["data"]))
    data["kubernetes"]["drift"] = "refuse"
    refusing.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(DriftRefused, match=r"containers\.dashboard\.image.*hotfix-by-hand.*kubernetes\.drift"):
        deploy_helix(env=kenv["environment"], descriptor=str(refusing), kubeconfig=kubeconfig, health_timeout_s=90,
                     run_init_db=False)
    assert dashboard_image() == hotfix, "a refused deploy changed the workload"
    code, out, err = cli(capsys, "history", "--descriptor", str(kenv["path"]), "--json")
    newest = json.loads(out)[0]
    assert (code, newest["action"], newest["result"]) == (0, "deploy", "refused"), (out, err)
    assert "containers.dashboard.image" in newest["detail"], newest

    result = deploy_helix(env=kenv["environment"], descriptor=str(kenv["path"]), kubeconfig=kubeconfig,
                          health_timeout_s=90, run_init_db=False)
    assert result["applied"], result
    assert dashboard_image() == declared
    env = admin.client.get(res, "dashboard").to_dict()["spec"]["template"]["spec"]["containers"][0].get("env") or []
    assert "HOTFIX_FLAG" not in {e["name"] for e in env}, "the added variable was not taken back"
    code, out, err = cli(capsys, "diff", "--descriptor", str(kenv["path"]), "--kubeconfig", kubeconfig)
    assert code == 0, (out, err)
