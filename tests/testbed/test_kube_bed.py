"""The local Kubernetes control plane of the test bed (testbed/kube.py): it comes up, kwok's nodes run
Deployments and StatefulSets to ready, a never-ready image stays unready, RBAC forbids what a restricted identity
was not granted, and the API server can be stopped and started again with the cluster's state kept."""

from __future__ import annotations

import httpx2
import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.models.apps_v1 import DeploymentSpec, StatefulSetSpec
from lightkube.models.core_v1 import (
    Container,
    PersistentVolumeClaim,
    PersistentVolumeClaimSpec,
    PodSpec,
    PodTemplateSpec,
    ServicePort,
    ServiceSpec,
    VolumeMount,
    VolumeResourceRequirements,
)
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.core_v1 import Node, PersistentVolumeClaim as PVC, Pod, Service

from testbed import procs
from testbed.kube import NEVER_READY

pytestmark = pytest.mark.bed


def client_for(kubeconfig) -> Client:
    return Client(KubeConfig.from_file(kubeconfig), timeout=30)


@pytest.fixture(scope="module")
def admin(kube):
    return client_for(kube.kubeconfig)


def template(app: str, image: str = "helix/graph:1.0", **spec) -> PodTemplateSpec:
    return PodTemplateSpec(metadata=ObjectMeta(labels={"app": app}),
                           spec=PodSpec(containers=[Container(name=app, image=image)], **spec))


def deployment(ns: str, name: str, replicas: int, image: str = "helix/graph:1.0") -> Deployment:
    return Deployment(metadata=ObjectMeta(name=name, namespace=ns),
                      spec=DeploymentSpec(replicas=replicas, selector=LabelSelector(matchLabels={"app": name}),
                                          template=template(name, image)))


def condition(obj, kind: str) -> str | None:
    for c in (obj.status.conditions or []) if obj.status else []:
        if c.type == kind:
            return c.status
    return None


def test_control_plane_is_up_with_kwok_nodes(kube, admin):
    assert kube.server.startswith("https://127.0.0.1:")
    assert kube.kubeconfig.stat().st_mode & 0o777 == 0o600
    assert kube.apiserver_up()
    version = kube.api("GET", "/version").json()
    assert (version["major"], version["minor"]) == ("1", "36")
    nodes = {n.metadata.name: n for n in admin.list(Node, labels={"type": "kwok"})}
    assert set(nodes) == set(kube.nodes) and len(nodes) >= 1
    assert all(condition(n, "Ready") == "True" for n in nodes.values())


def test_deployment_with_two_replicas_becomes_available(kube, admin):
    ns = kube.new_namespace("deploy")
    admin.create(deployment(ns, "web", 2))

    def available():
        d = admin.get(Deployment, "web", namespace=ns)
        return condition(d, "Available") == "True" and d.status.readyReplicas == 2 and d
    procs.wait_until("Deployment web Available with 2 ready replicas", available, 90, interval_s=0.5)
    pods = list(admin.list(Pod, namespace=ns, labels={"app": "web"}))
    assert len(pods) == 2
    assert all(p.spec.nodeName in kube.nodes and p.status.phase == "Running" and p.status.podIP for p in pods)


def test_statefulset_with_volume_claims_becomes_ready(kube, admin):
    ns = kube.new_namespace("sts")
    admin.create(Service(metadata=ObjectMeta(name="db", namespace=ns),
                         spec=ServiceSpec(clusterIP="None", selector={"app": "db"},
                                          ports=[ServicePort(name="bolt", port=7687)])))
    admin.create(StatefulSet(
        metadata=ObjectMeta(name="db", namespace=ns),
        spec=StatefulSetSpec(
            serviceName="db", replicas=2, selector=LabelSelector(matchLabels={"app": "db"}),
            template=PodTemplateSpec(metadata=ObjectMeta(labels={"app": "db"}), spec=PodSpec(containers=[
                Container(name="db", image="helix/graph:1.0",
                          volumeMounts=[VolumeMount(name="data", mountPath="/data")])])),
            volumeClaimTemplates=[PersistentVolumeClaim(
                metadata=ObjectMeta(name="data"),
                spec=PersistentVolumeClaimSpec(accessModes=["ReadWriteOnce"],
                                               resources=VolumeResourceRequirements(requests={"storage": "1Gi"})))])))

    def ready():
        s = admin.get(StatefulSet, "db", namespace=ns)
        return s.status and s.status.readyReplicas == 2 and s.status.currentRevision == s.status.updateRevision
    procs.wait_until("StatefulSet db with 2 ready replicas", ready, 120, interval_s=0.5)
    claims = list(admin.list(PVC, namespace=ns))
    assert sorted(c.metadata.name for c in claims) == ["data-db-0", "data-db-1"]
    assert all(c.status.phase == "Bound" for c in claims)


def test_never_ready_image_runs_but_stays_unready(kube, admin):
    ns = kube.new_namespace("never")
    admin.create(deployment(ns, "bad", 1, image=f"helix/graph:2.0-{NEVER_READY}"))

    def running():
        pods = list(admin.list(Pod, namespace=ns, labels={"app": "bad"}))
        return pods and all(p.status.phase == "Running" for p in pods) and pods
    pods = procs.wait_until("the never-ready pod Running", running, 60, interval_s=0.5)
    assert all(condition(p, "Ready") == "False" for p in pods)
    d = admin.get(Deployment, "bad", namespace=ns)
    assert not d.status.readyReplicas


def test_restricted_identity_is_forbidden_what_it_was_not_granted(kube, admin):
    ns = kube.new_namespace("rbac")
    admin.create(deployment(ns, "web", 1))
    kube.grant("helix-reader", ns, [{"apiGroups": ["apps"], "resources": ["deployments"],
                                     "verbs": ["get", "list", "watch"]}])
    path = kube.kubeconfig_for("helix-reader", groups=["helix-readers"])
    assert path.stat().st_mode & 0o777 == 0o600
    reader = client_for(path)
    assert [d.metadata.name for d in reader.list(Deployment, namespace=ns)] == ["web"]
    with pytest.raises(ApiError) as err:
        reader.create(deployment(ns, "other", 1))
    assert err.value.status.code == 403
    assert "forbidden" in err.value.status.message.lower()
    assert 'User "helix-reader"' in err.value.status.message
    with pytest.raises(ApiError) as err:  # nothing granted outside its namespace
        list(reader.list(Deployment, namespace="default"))  # (list() makes the lazy request)
    assert err.value.status.code == 403


def test_apiserver_can_be_stopped_and_started_again(kube, admin):
    ns = kube.new_namespace("restart")
    admin.create(deployment(ns, "web", 1))
    kube.stop_apiserver()
    try:
        assert not kube.apiserver_up()
        with pytest.raises(httpx2.ConnectError):
            client_for(kube.kubeconfig).get(Deployment, "web", namespace=ns)
    finally:
        kube.start_apiserver()
    assert kube.apiserver_up()
    assert admin.get(Deployment, "web", namespace=ns).metadata.name == "web"  # the state is kept (etcd)
    # the controllers and kwok reconnect: a new Deployment still rolls out
    admin.create(deployment(ns, "after", 1))
    procs.wait_until("Deployment after Available",
                     lambda: condition(admin.get(Deployment, "after", namespace=ns), "Available") == "True", 90,
                     interval_s=0.5)
