"""The Kubernetes driver's pure parts: rollout conditions, secret checksums, error translation and pickling."""

from __future__ import annotations

import pickle

import pytest

from drivers.kube import (KubeApiError, KubeForbidden, KubeUnreachable, RolloutFailed, _clean_template, _fields,
                          load_kubeconfig, workload_progress)
from helix_ops.descriptor import load_descriptor
from helix_ops.errors import ConfigError
from helix_ops.render.kubernetes import SECRET_CHECKSUM, render_kubernetes, with_secret_checksums
from helix_ops.stack import build_stack
from tasks.kube import KubeTarget, workload_images
from helix_ops.plan import CurrentObject, CurrentState
from testbed.paths import REPO

VALUES = {"neo4j-password": "n" * 20, "redis-password": "r" * 20, "nextauth-secret": "s" * 40,
          "anthropic-api-key": "k" * 30}


def deployment(generation=2, observed=2, replicas=2, updated=2, total=2, available=2, conditions=()):
    return {"kind": "Deployment", "metadata": {"generation": generation},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"image": "x:1"}]}}},
            "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                       "readyReplicas": available, "availableReplicas": available, "conditions": list(conditions)}}


def statefulset(observed=3, ready=3, updated=3, total=3, current="a", update="a", partition=None):
    spec = {"replicas": 3, "template": {"spec": {"containers": [{"image": "db:5"}]}}}
    if partition is not None:
        spec["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}
    return {"kind": "StatefulSet", "metadata": {"generation": 3}, "spec": spec,
            "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated,
                       "replicas": total, "currentRevision": current, "updateRevision": update}}


@pytest.mark.parametrize("obj, done", [
    (deployment(), True),
    (deployment(observed=1), False),                 # the controller has not seen the new spec yet
    (deployment(updated=1), False),                  # one replica still on the old template
    (deployment(total=3), False),                    # an old replica not gone yet
    (deployment(available=1), False),                # a new replica not available
    (statefulset(), True),
    (statefulset(current="a", update="b"), False),   # revision not caught up
    (statefulset(ready=2), False),
    (statefulset(observed=2), False),
    (statefulset(current="a", update="b", updated=1, partition=2), True),  # staged rollout: partition respected
], ids=["deploy-done", "deploy-not-observed", "deploy-updating", "deploy-old-left", "deploy-unavailable",
        "sts-done", "sts-revision", "sts-unready", "sts-not-observed", "sts-partition"])
def test_rollout_conditions(obj, done):
    got, failure, seen = workload_progress(obj)
    assert (got, failure) == (done, None)
    assert seen["image"] in ("x:1", "db:5")


def test_progress_deadline_exceeded_is_a_failure():
    cond = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "slow"}
    done, failure, _ = workload_progress(deployment(updated=1, conditions=[cond]))
    assert not done and failure == "ProgressDeadlineExceeded: slow"


def stack(env="staging"):
    desc = load_descriptor(REPO / "deployments" / f"{env}.yaml")
    return build_stack(desc, (REPO / "deployments" / "helix.config.yaml").read_text())


def checksums(values):
    s = stack()
    objs = with_secret_checksums(s, render_kubernetes(s, values))
    return {o["metadata"]["name"]: (o["spec"]["template"]["metadata"].get("annotations") or {}).get(SECRET_CHECKSUM)
            for o in objs if o["kind"] in ("Deployment", "StatefulSet")}


def test_a_changed_secret_changes_the_checksum_of_its_consumers_only():
    before = checksums(VALUES)
    assert before["neo4j"] is None and before["redis"] is None  # data services read rotated passwords live
    assert all(before[s] for s in ("dashboard", "mcp-graph", "mcp-discovery", "mcp-cascade"))
    after = checksums({**VALUES, "nextauth-secret": "t" * 40})
    assert {n for n in before if before[n] != after[n]} == {"dashboard"}
    after = checksums({**VALUES, "anthropic-api-key": "j" * 30})
    assert {n for n in before if before[n] != after[n]} == {"mcp-discovery", "mcp-derivation"}
    after = checksums({**VALUES, "redis-password": "q" * 20})
    assert {n for n in before if before[n] != after[n]} == {"dashboard", "mcp-graph", "mcp-discovery",
                                                           "mcp-derivation", "mcp-cascade", "mcp-verification"}
    assert all("s" * 40 not in (c or "") for c in before.values())


def test_a_template_rendering_gets_no_checksum():
    s = stack()
    objs = render_kubernetes(s, None)
    assert with_secret_checksums(s, objs) == objs


def test_errors_name_what_failed_and_pickle():
    errors = [KubeUnreachable("https://127.0.0.1:6443", "ConnectError: refused"),
              KubeForbidden("patch", "deployments", "helix", "user x cannot patch"),
              KubeApiError("create", "services", "helix", 422, "invalid"),
              RolloutFailed("Deployment/helix/dashboard", "timed out", True, "img:1")]
    for err in errors:
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is type(err) and str(again) == str(err)
    assert "https://127.0.0.1:6443" in str(errors[0]) and "hint:" in str(errors[0])
    assert "may not patch deployments in namespace helix" in str(errors[1])
    assert "deployments/rbac/role.yaml" in str(errors[1]) and "kubectl auth can-i patch deployments -n helix" in str(errors[1])
    assert "rolled back to the previous revision (img:1)" in str(errors[3])


def test_a_missing_kubeconfig_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot load"):
        load_kubeconfig(str(tmp_path / "none.yaml"))


def test_an_engine_descriptor_is_not_a_kubernetes_target():
    with pytest.raises(ConfigError, match="targets engine"):
        KubeTarget.for_descriptor(load_descriptor(REPO / "deployments" / "local.yaml"))


def test_read_back_fields_and_images():
    assert _fields({"kind": "Secret", "data": {"a": "c2VjcmV0"}}) == {}
    # the summary fields, and the owned fields drift compares (helix_ops/drift.py; the container has no name)
    assert _fields(deployment()) == {"replicas": 2, "image": "x:1", "containers.?.image": "x:1"}
    state = CurrentState((CurrentObject("Deployment/h/dashboard", "a", {"image": "d:1"}),
                          CurrentObject("StatefulSet/h/neo4j", "b", {"image": "n:5"}),
                          CurrentObject("Service/h/dashboard", "c", {})))
    assert workload_images(state) == {"dashboard": "d:1", "neo4j": "n:5"}


def test_a_live_template_is_cleaned_for_reapplying():
    live = {"metadata": {"creationTimestamp": None, "labels": {"app": "a", "pod-template-hash": "x"}},
            "spec": {"containers": [{"image": "a:1"}]}}
    assert _clean_template(live) == {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"image": "a:1"}]}}


def test_take_back_replaces_what_another_manager_changed_and_removes_what_it_added():
    from drivers.kube import take_back_ops

    manifest = {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}], "readinessProbe": {"tcpSocket": {"port": 1}}}]}}}}
    live = {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}, {"name": "HOTFIX", "value": "x"}],
         "readinessProbe": {"tcpSocket": {"port": 1}}, "livenessProbe": {"tcpSocket": {"port": 1}},
         "resources": {"limits": {"memory": "1Gi"}}},
        {"name": "debug-sidecar", "image": "busybox"}]}}}}
    ops = take_back_ops(manifest, live)
    at = "/spec/template/spec/containers"
    assert ops == [{"op": "add", "path": f"{at}/0/env", "value": [{"name": "A", "value": "1"}]},
                   {"op": "remove", "path": f"{at}/0/resources"},
                   {"op": "remove", "path": f"{at}/0/livenessProbe"},
                   {"op": "remove", "path": f"{at}/1"}]
    assert take_back_ops(manifest, manifest) == []  # nothing to take back


@pytest.mark.parametrize("version, drains", [("1.31", True), ("1.30", True), ("1.29", False)])
def test_stateless_pods_keep_serving_a_moment_after_being_told_to_stop(tmp_path, version, drains):
    import yaml

    data = yaml.safe_load((REPO / "deployments" / "prod.yaml").read_text())
    data["kubernetes"]["version"] = version
    (tmp_path / "helix.config.yaml").write_text((REPO / "deployments" / "helix.config.yaml").read_text())
    path = tmp_path / "prod.yaml"
    path.write_text(yaml.safe_dump(data))
    objs = render_kubernetes(build_stack(load_descriptor(path)), VALUES)
    pre_stop = {o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0].get("lifecycle")
                for o in objs if o["kind"] in ("Deployment", "StatefulSet")}
    rolled = {"dashboard", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification"}
    sleep = {"preStop": {"sleep": {"seconds": 5}}}
    assert {n for n, v in pre_stop.items() if v == sleep} == (rolled if drains else set())
    assert all(v in (None, sleep) for v in pre_stop.values())  # mcp-graph (replaced) and the data services: none
