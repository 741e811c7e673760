"""provision-helix on a Kubernetes target, against the test bed's real API server: the pre-flight asks the cluster
(version, namespace, the Role file's verbs by SelfSubjectAccessReview, StorageClasses, nodes' allocatable) as the
kubeconfig's identity, and each failure names its fix. Provisioning creates nothing in the cluster."""

from __future__ import annotations

import secrets
import socket

import pytest
import yaml

from drivers.target import Connection
from helix_ops import preflight
from helix_ops.descriptor import load_descriptor
from tasks.provision import kube_preflight
from tasks.target import target_for
from testbed.paths import REPO
from tests.kube.conftest import new_names, write_descriptor

pytestmark = pytest.mark.bed

ROLE_DOCS = [d for d in yaml.safe_load_all((REPO / preflight.ROLE_FILE).read_text()) if d]
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


def _checks(path, kubeconfig) -> list[preflight.Check]:
    desc = load_descriptor(path)
    return kube_preflight(desc, target_for(desc, Connection(kubeconfig=str(kubeconfig))))


def _by_name(checks) -> dict[str, preflight.Check]:
    return {c.name: c for c in checks}


def _failed(checks) -> dict[str, preflight.Check]:
    return {c.name: c for c in checks if c.failed}


def _descriptor(tmp_path, namespace, **kubernetes):
    environment = f"pv{secrets.token_hex(3)}"
    path = write_descriptor(tmp_path / f"{environment}.yaml", environment, namespace, sentinel=False)
    if kubernetes:
        data = yaml.safe_load(path.read_text())
        data["kubernetes"].update(kubernetes)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _lightkube(kube):
    from lightkube import Client, KubeConfig

    return Client(KubeConfig.from_file(str(kube.kubeconfig)), field_manager="tests")


def _grant_role_file(kube, user, namespace, drop=None):
    """The Role file's rules for ``user`` in ``namespace`` (less the ``drop`` = (verb, resource) pair), and its
    ClusterRole for that namespace (get, patch on namespaces/<namespace>)."""
    role = next(d for d in ROLE_DOCS if d["kind"] == "Role")
    rules = []
    for rule in role["rules"]:
        rule = {**rule, "resources": list(rule["resources"]), "verbs": list(rule["verbs"])}
        if drop and drop[1] in rule["resources"] and drop[0] in rule["verbs"]:
            rules.append({**rule, "resources": [r for r in rule["resources"] if r != drop[1]]})
            rules.append({**rule, "resources": [drop[1]], "verbs": [v for v in rule["verbs"] if v != drop[0]]})
            rules = [r for r in rules if r["resources"] and r["verbs"]]
        else:
            rules.append(rule)
    kube.grant(user, namespace, rules)
    _grant_namespace_read(kube, user, namespace)


def _grant_namespace_read(kube, user, namespace):
    cluster_role = next(d for d in ROLE_DOCS if d["kind"] == "ClusterRole")
    name = f"testbed-{user}"
    rules = [{**r, "resourceNames": [namespace]} for r in cluster_role["rules"]]
    for collection, obj in (
            ("clusterroles", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                              "metadata": {"name": name}, "rules": rules}),
            ("clusterrolebindings", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                                     "metadata": {"name": name},
                                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                 "name": name},
                                     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                                   "name": user}]})):
        r = kube.api("POST", f"/apis/rbac.authorization.k8s.io/v1/{collection}", obj)
        assert r.status_code in (201, 409), r.text


def test_the_admin_passes_and_provisioning_creates_nothing_in_the_cluster(kube, prefect_harness, tmp_path):
    from flows.provision import provision_helix

    _, namespace = new_names("pv")  # absent: the admin may create it (deploy-helix would)
    path = _descriptor(tmp_path, namespace)
    result = provision_helix(env="x", descriptor=str(path), kubeconfig=str(kube.kubeconfig))
    assert result["failed"] == [], result["checks"]
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["kubernetes version"]["detail"].startswith("Kubernetes v1.")
    assert checks[f"namespace {namespace}"]["detail"].startswith("absent: this identity may create it")
    assert checks["rbac"]["status"] == "pass" and preflight.ROLE_FILE in checks["rbac"]["detail"]
    assert checks["default storage class"]["detail"].startswith("standard is the default")
    assert checks["cluster memory"]["status"] == checks["cluster cpu"]["status"] == "pass"
    assert all(c["status"] == "pass" for c in result["checks"]), result["checks"]
    # only the secrets' blocks: no namespace, no object
    assert result["actions"] and all(a.startswith(f"created {path.stem}-") for a in result["actions"]), \
        result["actions"]
    assert kube.api("GET", f"/api/v1/namespaces/{namespace}").status_code == 404


def test_the_role_file_passes_and_a_missing_verb_fails_naming_it(kube, tmp_path):
    namespace = kube.new_namespace("pv")
    path = _descriptor(tmp_path, namespace)
    needs = preflight.rbac_needs(ROLE_DOCS, namespace)
    # the verb the brief names, when the Role file has it (others are adding it now); else one it always has
    drop = (("create", "pods/portforward")
            if preflight.AccessNeed("create", "", "pods", "portforward", namespace) in needs else ("delete", "pods"))

    full = f"pv-full-{secrets.token_hex(3)}"
    _grant_role_file(kube, full, namespace)
    checks = _checks(path, kube.kubeconfig_for(full))
    assert _failed(checks) == {}, [c.line() for c in checks]
    assert _by_name(checks)["rbac"].status == "pass"
    assert _by_name(checks)[f"namespace {namespace}"].detail == "exists"
    # the Role file grants no cluster-wide reads: nodes and StorageClasses cannot be checked (warned)
    assert _by_name(checks)["cluster memory"].status == "warn"
    assert _by_name(checks)["default storage class"].status == "warn"

    short = f"pv-short-{secrets.token_hex(3)}"
    _grant_role_file(kube, short, namespace, drop=drop)
    failed = _failed(_checks(path, kube.kubeconfig_for(short)))
    assert list(failed) == [f"rbac {drop[0]} {drop[1]}"], failed
    [check] = failed.values()
    assert check.detail == f"this identity may not {drop[0]} {drop[1]} in namespace {namespace}"
    assert preflight.ROLE_FILE in check.fix and f"kubectl auth can-i {drop[0]} {drop[1]} -n {namespace}" in check.fix


def test_a_missing_namespace_this_identity_may_not_create_fails_naming_it(kube, prefect_harness, tmp_path):
    from flows.provision import PreflightFailed, provision_helix

    _, namespace = new_names("pv")
    user = f"pv-nons-{secrets.token_hex(3)}"
    _grant_namespace_read(kube, user, namespace)  # it may read the namespace (the Role file's ClusterRole)
    path = _descriptor(tmp_path, namespace)
    with pytest.raises(PreflightFailed) as err:
        provision_helix(env="x", descriptor=str(path), kubeconfig=str(kube.kubeconfig_for(user)))
    failed = _failed(err.value.checks)
    check = failed[f"namespace {namespace}"]
    assert "does not exist and this identity may not create it" in check.detail
    assert f"kubectl create namespace {namespace}" in check.fix
    assert f"namespace {namespace}" in str(err.value)


def test_requests_beyond_the_nodes_allocatable_fail_on_memory(kube, tmp_path):
    path = _descriptor(tmp_path, "default")
    data = yaml.safe_load(path.read_text())
    data["services"]["neo4j"]["resources"] = {"requests": {"memory": "4000Gi", "cpu": "2"},
                                              "limits": {"memory": "4000Gi", "cpu": "2"}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    failed = _failed(_checks(path, kube.kubeconfig))
    assert list(failed) == ["cluster memory"], failed
    check = failed["cluster memory"]
    assert "StatefulSet/neo4j 1×4000.0Gi" in check.detail and "allocatable" in check.detail
    assert "add nodes" in check.fix and "services.<name>.resources.requests" in check.fix


def test_a_missing_storage_class_fails_until_it_exists(kube, tmp_path):
    from lightkube.resources.storage_v1 import StorageClass
    from lightkube.types import PatchType

    client = _lightkube(kube)
    name = f"pv-sc-{secrets.token_hex(3)}"
    named = _descriptor(tmp_path, "default", storage_class=name)
    failed = _failed(_checks(named, kube.kubeconfig))
    assert list(failed) == [f"storage class {name}"] and f"create StorageClass {name}" in failed[
        f"storage class {name}"].fix
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
          "provisioner": "kubernetes.io/host-path"}
    assert kube.api("POST", "/apis/storage.k8s.io/v1/storageclasses", sc).status_code == 201
    try:
        assert _by_name(_checks(named, kube.kubeconfig))[f"storage class {name}"].status == "pass"

        # no default StorageClass and the PVCs name none → fails; a default one → passes
        unnamed = _descriptor(tmp_path, "default")
        client.patch(StorageClass, "standard", {"metadata": {"annotations": {DEFAULT_CLASS: "false"}}},
                     patch_type=PatchType.MERGE)
        try:
            failed = _failed(_checks(unnamed, kube.kubeconfig))
            assert list(failed) == ["default storage class"], failed
            assert "kubectl annotate storageclass" in failed["default storage class"].fix
            client.patch(StorageClass, name, {"metadata": {"annotations": {DEFAULT_CLASS: "true"}}},
                         patch_type=PatchType.MERGE)
            check = _by_name(_checks(unnamed, kube.kubeconfig))["default storage class"]
            assert check.status == "pass" and check.detail.startswith(f"{name} is the default")
        finally:
            client.patch(StorageClass, "standard", {"metadata": {"annotations": {DEFAULT_CLASS: "true"}}},
                         patch_type=PatchType.MERGE)
    finally:
        client.delete(StorageClass, name)
        client.close()


def test_an_unreachable_api_server_fails_with_its_fix(kube, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = yaml.safe_load(kube.kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    dead = tmp_path / "dead.yaml"
    dead.write_text(yaml.safe_dump(config))
    [check] = _checks(_descriptor(tmp_path, "default"), dead)
    assert check.name == "kubernetes API server reachable" and check.failed
    assert f"127.0.0.1:{port}" in check.detail and "kubeconfig" in check.fix
