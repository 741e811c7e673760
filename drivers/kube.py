"""The Kubernetes driver: server-side apply of a rendering, read-back, pruning, rollout waits and rollbacks.

Built on lightkube (typed resources, server-side apply with a field manager, plain-dict bodies; see
``docs/kubernetes.md`` for why). What it does, and what it never does:

* **apply**: server-side apply with field manager ``helix-ops`` and ``force=True``: helix-ops is the owner of
  every field it renders, and a field another manager changed (``kubectl edit``, ``kubectl scale``) is taken
  back on the next apply, like the engine target's convergence. Fields helix-ops does not render stay with
  their managers (an HPA's replicas would too, if the rendering left replicas out). Every object carries the
  spec hash of its rendering in the ``helix-ops.spec-hash`` annotation; a re-apply of an unchanged rendering
  changes no ``resourceVersion``.
* **read-back**: every object of the kinds helix-ops renders that carries its labels
  (``app.kubernetes.io/managed-by=helix-ops``, ``app.kubernetes.io/part-of=<project>``,
  ``helix-ops/environment=<env>``) in the environment's namespace: identity ``Kind/namespace/name``, the
  recorded spec hash, replicas and image. Objects of anyone else are never listed, so never pruned.
* **prune**: deletes only objects it listed (and checks their labels again right before). Never the Namespace
  (that would take foreign objects with it), never PersistentVolumeClaims (data).
* **rollout**: apply a Deployment or StatefulSet and wait, with a deadline, for the rollout conditions
  (``kubectl rollout status`` semantics). When the deadline passes (or the Deployment reports
  ``ProgressDeadlineExceeded``) the previous pod template (read from the live object before the apply) is
  applied again, stuck StatefulSet pods of the failed revision are deleted, and the rollback is waited for.
* **data access** (``endpoint``, ``scale``, ``replicas``, ``exec``): delegated to
  :class:`drivers.kube_access.KubeAccess` (port-forward and exec through the API server's ``pods/portforward``
  and ``pods/exec`` WebSockets, the scale subresource, the wait for a Ready pod), which this driver makes on
  first use.
* **errors**: library errors are translated here: an unreachable API server is :class:`KubeUnreachable`
  (naming the server), a 403 is :class:`KubeForbidden` (naming verb, resource and namespace, with the Role to
  bind), anything else :class:`KubeApiError`. All pickle; they live in ``drivers/kube_errors.py`` and are
  imported here.
"""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
from lightkube import ApiError, Client, KubeConfig
from lightkube.core.exceptions import ConfigError as LightkubeConfigError
from lightkube.core.resource import api_info
from lightkube.core.resource_registry import resource_registry
from lightkube.types import CascadeType, PatchType

from drivers.kube_errors import KubeApiError, KubeForbidden, KubeUnreachable, RolloutFailed
from helix_ops.drift import owned_fields
from helix_ops.errors import ConfigError, PlanError, WaitTimeout
from helix_ops.plan import HASH_LABEL, CurrentObject, CurrentState
from helix_ops.wait import Deadline

FIELD_MANAGER = "helix-ops"
MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"
ENV_LABEL = "helix-ops/environment"
NAME_LABEL = "app.kubernetes.io/name"

API_VERSIONS: dict[str, str] = {
    "Namespace": "v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "Service": "v1",
    "StatefulSet": "apps/v1",
    "Deployment": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
    "Ingress": "networking.k8s.io/v1",
}
"""Every kind the rendering produces, in apply order (read-back lists them in this order)."""

WORKLOADS = ("Deployment", "StatefulSet")


def load_kubeconfig(kubeconfig: str | None = None, context: str | None = None, in_cluster: bool = False,
                    config_dict: Mapping[str, Any] | None = None):
    """The lightkube connection settings: in-cluster (service account), a kubeconfig dict (from a
    ``KubernetesClusterConfig`` block), a kubeconfig file, or ``$KUBECONFIG`` / ``~/.kube/config``."""
    try:
        if in_cluster:
            config = KubeConfig.from_service_account()
        elif config_dict is not None:
            config = KubeConfig.from_dict(dict(config_dict))
        elif kubeconfig:
            config = KubeConfig.from_file(kubeconfig)
        else:
            config = KubeConfig.from_env()
        single = config.get(context_name=context) if hasattr(config, "get") else config
    except (LightkubeConfigError, OSError, KeyError, ValueError) as exc:
        where = "in-cluster service account" if in_cluster else (kubeconfig or "$KUBECONFIG / ~/.kube/config")
        raise ConfigError("kubernetes.kubeconfig", f"cannot load {where}: {exc}") from None
    if single is None:
        raise ConfigError("kubernetes.context", f"context {context!r} not found in the kubeconfig")
    return single


def _ns_of(identity: str) -> tuple[str, str | None, str]:
    parts = identity.split("/")
    if len(parts) == 2:
        return parts[0], None, parts[1]
    return parts[0], parts[1], parts[2]


def plain_object(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


@dataclass
class KubeDriver:
    """One environment's objects in one namespace, as ``project``/``environment`` label them."""

    client: Client
    server: str
    project: str
    environment: str
    namespace: str
    # how the connection was made (kubeconfig, context, in_cluster, config_dict): kr8s connects the same way for
    # pods/portforward and pods/exec (lightkube does neither)
    source: Mapping[str, Any] = field(default_factory=dict, repr=False)
    _access: Any = field(default=None, repr=False, compare=False)  # drivers.kube_access.KubeAccess, on first use

    @classmethod
    def connect(cls, project: str, environment: str, namespace: str, kubeconfig: str | None = None,
                context: str | None = None, in_cluster: bool = False,
                config_dict: Mapping[str, Any] | None = None, timeout_s: float = 10) -> KubeDriver:
        """A driver over the cluster a kubeconfig (file, dict or in-cluster) points at. Does no request."""
        single = load_kubeconfig(kubeconfig, context, in_cluster, config_dict)
        client = Client(single, namespace=namespace, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(timeout_s))
        source = {"kubeconfig": kubeconfig, "context": context, "in_cluster": in_cluster,
                  "config_dict": dict(config_dict) if config_dict is not None else None}
        return cls(client, single.cluster.server, project, environment, namespace, source)

    @property
    def in_cluster(self) -> bool:
        """Connected with the pod's service account (the flow runs in the cluster)."""
        return bool(self.source.get("in_cluster"))

    def close(self) -> None:
        self.client.close()

    # --- error translation -------------------------------------------------------------------------------

    @contextmanager
    def _api(self, verb: str, resource: str, namespace: str | None) -> Iterator[None]:
        try:
            yield
        except ApiError as exc:
            code = int(getattr(exc.status, "code", 0) or exc.response.status_code)
            detail = exc.status.message or exc.status.reason or str(exc)
            if code == 403:
                raise KubeForbidden(verb, resource, namespace, detail) from exc
            raise KubeApiError(verb, resource, namespace, code, detail) from exc
        except httpx2.TransportError as exc:
            raise KubeUnreachable(self.server, f"{type(exc).__name__}: {exc}") from exc

    def _res(self, kind: str, api_version: str | None = None):
        return resource_registry.load(api_version or API_VERSIONS[kind], kind)

    def _get(self, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        res = self._res(kind)
        try:
            with self._api("get", api_info(res).plural, namespace):
                return plain_object(self.client.get(res, name, namespace=namespace))
        except KubeApiError as exc:
            if exc.code == 404:
                return None
            raise

    def version(self) -> dict[str, str]:
        """The API server's version (``/version``: readable by every authenticated identity)."""
        with self._api("get", "/version", None):
            resp = self.client._client._client.get("/version")  # lightkube has no typed /version call
            if resp.status_code >= 400:
                raise KubeApiError("get", "/version", None, resp.status_code, resp.text[:200])
            data = resp.json()
        return {"gitVersion": data.get("gitVersion", ""), "server": self.server}

    # --- read-back ---------------------------------------------------------------------------------------

    def labels(self) -> dict[str, str]:
        """The labels that make an object this environment's (and so a candidate for pruning)."""
        return {MANAGED_BY: FIELD_MANAGER, PART_OF: self.project, ENV_LABEL: self.environment}

    def _ours(self, obj: Mapping[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(labels.get(k) == v for k, v in self.labels().items())

    def current_state(self) -> CurrentState:
        """Every object of this environment, as found (no Secret value is kept)."""
        objects: list[CurrentObject] = []
        ns = self._get("Namespace", self.namespace, None)
        if ns is None:
            return CurrentState()
        if self._ours(ns):
            objects.append(CurrentObject(f"Namespace/{self.namespace}", _hash_of(ns), {}))
        for kind in API_VERSIONS:
            if kind == "Namespace":
                continue
            res = self._res(kind)
            with self._api("list", api_info(res).plural, self.namespace):
                items = [plain_object(o) for o in self.client.list(res, namespace=self.namespace, labels=self.labels())]
            for obj in items:
                objects.append(CurrentObject(f"{kind}/{self.namespace}/{obj['metadata']['name']}", _hash_of(obj),
                                             _fields(obj)))
        return CurrentState(tuple(objects))

    # --- apply and prune ---------------------------------------------------------------------------------

    def apply(self, manifest: Mapping[str, Any], spec_hash: str) -> str:
        """Server-side apply ``manifest`` with its spec hash annotation; returns created/updated/unchanged."""
        body = copy.deepcopy(dict(manifest))
        meta = body["metadata"]
        meta.setdefault("annotations", {})[HASH_LABEL] = spec_hash
        if body.get("stringData"):
            # stringData is write-only (merged into data, never stored): apply data, so that the fields
            # helix-ops owns are the ones the object keeps and a re-apply is a true no-op
            body["data"] = {**body.get("data", {}), **{k: base64.b64encode(v.encode()).decode()
                                                        for k, v in body.pop("stringData").items()}}
        kind, name, ns = body["kind"], meta["name"], meta.get("namespace")
        res = self._res(kind, body["apiVersion"])
        before = self._get(kind, name, ns)
        verb = "patch" if before is not None else "create"
        with self._api(verb, api_info(res).plural, ns):
            after = plain_object(self.client.patch(res, name, body, namespace=ns, patch_type=PatchType.APPLY,
                                             field_manager=FIELD_MANAGER, force=True))
        if before is None:
            return "created"
        same = before["metadata"].get("resourceVersion") == after["metadata"].get("resourceVersion")
        return "unchanged" if same else "updated"

    def delete(self, identity: str) -> str:
        """Delete one object of this environment (``Kind/namespace/name``); refuses anyone else's."""
        kind, ns, name = _ns_of(identity)
        if kind == "Namespace":
            return "kept: helix-ops never deletes a namespace (it would take every other object in it along)"
        obj = self._get(kind, name, ns)
        if obj is None:
            return "absent"
        if not self._ours(obj):
            raise PlanError(f"{identity} is not labelled as {self.environment}'s ({self.labels()}): not deleting it")
        res = self._res(kind)
        with self._api("delete", api_info(res).plural, ns):
            self.client.delete(res, name, namespace=ns, cascade=CascadeType.BACKGROUND)
        return "deleted"

    # --- rollouts ----------------------------------------------------------------------------------------

    def rollout_status(self, kind: str, name: str) -> tuple[bool, str | None, dict[str, Any]]:
        """(done, failure reason or None, what was seen) for a Deployment or StatefulSet."""
        obj = self._get(kind, name, self.namespace)
        if obj is None:
            return False, None, {"absent": True}
        return workload_progress(obj)

    def wait_rollout(self, kind: str, name: str, deadline_s: float, poll_s: float = 0.5) -> dict[str, Any]:
        """Wait until the rollout of ``kind/name`` is complete; WaitTimeout at the deadline (or as soon as the
        Deployment reports ProgressDeadlineExceeded), with what was last seen."""
        what = f"{kind}/{self.namespace}/{name} to roll out"
        for poll in Deadline(deadline_s).polls(f"{what} within {deadline_s:g}s", poll_s):
            done, failure, seen = self.rollout_status(kind, name)
            if done:
                return seen
            if failure:
                raise WaitTimeout(f"{what} ({failure})", seen)
            poll.seen = seen
        raise AssertionError("unreachable: a Poll ends by raising WaitTimeout")  # pragma: no cover

    def roll(self, manifest: Mapping[str, Any], spec_hash: str, deadline_s: float, rollback: bool = True,
             log: Callable[[str], None] = lambda m: None, take_back: bool = False) -> dict[str, Any]:
        """Apply a Deployment/StatefulSet and wait for its rollout; when it misses ``deadline_s``, apply the
        previous pod template again (``rollback``) and raise :class:`RolloutFailed`. ``take_back``: then set
        the owned fields (:func:`take_back_ops`) to the manifest's, whoever changed or added them."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        workload = f"{kind}/{self.namespace}/{name}"
        previous = self._get(kind, name, self.namespace)
        t0 = time.monotonic()
        result = self.apply(manifest, spec_hash)
        log(f"{workload}: {result}")
        if take_back:
            ops = take_back_ops(manifest, self._get(kind, name, self.namespace) or {})
            if ops:
                with self._api("patch", api_info(self._res(kind)).plural, self.namespace):
                    self.client.patch(self._res(kind), name, ops, namespace=self.namespace,
                                      patch_type=PatchType.JSON, field_manager=FIELD_MANAGER)
                log(f"{workload}: took back {len(ops)} field(s) another field manager changed or added")
        try:
            seen = self.wait_rollout(kind, name, deadline_s)
        except WaitTimeout as exc:
            if not rollback or previous is None:
                raise RolloutFailed(workload, str(exc), False) from exc
            log(f"{workload}: {exc}; rolling back to the previous pod template")
            image = self._rollback(manifest, previous, deadline_s, log)
            raise RolloutFailed(workload, str(exc), True, image) from exc
        return {"workload": workload, "result": result, "image": _image(manifest),
                "replicas": manifest["spec"].get("replicas", 1), "ready": seen.get("ready"),
                "wall_s": round(time.monotonic() - t0, 3)}

    def _rollback(self, manifest: Mapping[str, Any], previous: Mapping[str, Any], deadline_s: float,
                  log: Callable[[str], None]) -> str:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        failed_revision = None
        if kind == "StatefulSet":
            now = self._get(kind, name, self.namespace) or {}
            failed_revision = (now.get("status") or {}).get("updateRevision")
        body = copy.deepcopy(dict(manifest))
        body["spec"]["template"] = _clean_template(previous["spec"]["template"])
        body["spec"]["replicas"] = previous["spec"].get("replicas", 1)
        old_hash = _hash_of(previous) or "unknown"
        self.apply(body, old_hash)
        if failed_revision:
            # A StatefulSet waits for a broken pod to become ready before it replaces it: delete the pods of
            # the failed revision so the controller recreates them from the restored template.
            for pod in self.pods(name):
                if pod["revision"] == failed_revision and pod["revision"] != _revision_of(previous):
                    self.delete_pod(pod["name"])
        try:
            self.wait_rollout(kind, name, deadline_s)
        except WaitTimeout as exc:
            raise RolloutFailed(f"{kind}/{self.namespace}/{name}", f"the rollback did not finish either: {exc}",
                                False) from exc
        image = _image(body)
        log(f"{kind}/{self.namespace}/{name}: rolled back, running {image}")
        return image

    # --- pods --------------------------------------------------------------------------------------------

    def pods(self, app: str | None = None) -> list[dict[str, Any]]:
        """This namespace's pods (of ``app``): name, uid, image, phase, ready, revision, deleting."""
        res = self._res("Pod", "v1")
        labels = {"app": app} if app else None
        with self._api("list", "pods", self.namespace):
            items = [plain_object(p) for p in self.client.list(res, namespace=self.namespace, labels=labels)]
        out = []
        for p in items:
            meta, status = p["metadata"], p.get("status") or {}
            conds = {c["type"]: c.get("status") for c in status.get("conditions") or []}
            labels_ = meta.get("labels") or {}
            out.append({"name": meta["name"], "uid": meta["uid"], "app": labels_.get("app"),
                        "image": p["spec"]["containers"][0]["image"], "phase": status.get("phase"),
                        "ready": conds.get("Ready") == "True",
                        "revision": labels_.get("controller-revision-hash") or labels_.get("pod-template-hash"),
                        "deleting": bool(meta.get("deletionTimestamp"))})
        return sorted(out, key=lambda p: p["name"])

    def delete_pod(self, name: str) -> None:
        with self._api("delete", "pods", self.namespace):
            try:
                self.client.delete(self._res("Pod", "v1"), name, namespace=self.namespace)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise

    def pod_template_annotation(self, kind: str, name: str, key: str) -> str | None:
        """An annotation of a workload's live pod template (None if the workload or annotation is absent)."""
        obj = self._get(kind, name, self.namespace)
        if obj is None:
            return None
        return ((obj["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(key)

    # --- data access: port-forward, scale, exec (drivers/kube_access.py) --------------------------------

    def _data(self):
        """The data-access helper (:class:`drivers.kube_access.KubeAccess`), made on first use."""
        if self._access is None:
            from drivers.kube_access import KubeAccess

            self._access = KubeAccess(self)
        return self._access

    def endpoint(self, service: str, port: int, *, deadline_s: float = 60):
        """A context manager yielding ``(host, port)`` that reaches ``port`` of ``service`` from this process
        (a port-forward to a Ready pod, or the Service's DNS name in the cluster); see
        :meth:`drivers.kube_access.KubeAccess.endpoint`."""
        return self._data().endpoint(service, port, deadline_s=deadline_s)

    def replicas(self, service: str) -> int | None:
        """``spec.replicas`` of the Deployment or StatefulSet named ``service``; None when neither exists."""
        return self._data().replicas(service)

    def scale(self, service: str, replicas: int, *, deadline_s: float = 120) -> int:
        """Scale the Deployment or StatefulSet named ``service`` and wait until its status shows it; returns
        the previous ``spec.replicas`` (see :meth:`drivers.kube_access.KubeAccess.scale`)."""
        return self._data().scale(service, replicas, deadline_s=deadline_s)

    def exec(self, service: str, argv: list[str], *, timeout_s: float = 120) -> tuple[int, str, str]:
        """Run ``argv`` in a Ready pod of ``service`` through ``pods/exec``: ``(rc, stdout, stderr)`` (see
        :meth:`drivers.kube_access.KubeAccess.exec`)."""
        return self._data().exec(service, argv, timeout_s=timeout_s)


# --- pure helpers ----------------------------------------------------------------------------------------


def _hash_of(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(HASH_LABEL)


def _image(obj: Mapping[str, Any]) -> str:
    containers = obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}]
    return containers[0].get("image", "")


def _revision_of(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("updateRevision")


def _fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The summary fields the plan compares (never a Secret's data)."""
    fields: dict[str, Any] = {}
    spec = obj.get("spec") or {}
    if obj.get("kind", "") in WORKLOADS or "replicas" in spec:
        if "replicas" in spec:
            fields["replicas"] = spec["replicas"]
        image = _image(obj)
        if image:
            fields["image"] = image
    fields.update(owned_fields(obj))  # what the plan compares for drift (helix_ops.drift)
    return fields


def take_back_ops(manifest: Mapping[str, Any], live: Mapping[str, Any]) -> list[dict[str, Any]]:
    """JSON-patch operations that make the owned fields of ``live`` (helix_ops/drift.py) the manifest's:
    server-side apply with force takes back a field another manager changed, but never removes one it added
    (``kubectl set env``, an extra container or limit), so each container's env, resources and probes are
    replaced whole, and containers the manifest does not have are removed."""
    want = {c["name"]: c for c in manifest["spec"]["template"]["spec"].get("containers", [])}
    have = ((live.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    ops: list[dict[str, Any]] = []
    extra = [i for i, c in enumerate(have) if c.get("name") not in want]
    for i, c in enumerate(have):
        if i in extra:
            continue
        at = f"/spec/template/spec/containers/{i}"
        for key in ("env", "resources", "livenessProbe", "readinessProbe", "startupProbe"):
            if key in want[c["name"]]:
                if c.get(key) != want[c["name"]][key]:
                    ops.append({"op": "add", "path": f"{at}/{key}", "value": want[c["name"]][key]})
            elif c.get(key):
                ops.append({"op": "remove", "path": f"{at}/{key}"})
    ops += [{"op": "remove", "path": f"/spec/template/spec/containers/{i}"} for i in sorted(extra, reverse=True)]
    return ops


def _clean_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """A live pod template, fit to be applied again (server-set metadata removed)."""
    out = copy.deepcopy(dict(template))
    meta = out.setdefault("metadata", {})
    for key in ("creationTimestamp", "resourceVersion", "uid", "managedFields", "generation"):
        meta.pop(key, None)
    (meta.get("labels") or {}).pop("pod-template-hash", None)
    return out


def workload_progress(obj: Mapping[str, Any]) -> tuple[bool, str | None, dict[str, Any]]:
    """``kubectl rollout status`` for a live Deployment or StatefulSet dict: (done, failure, seen).

    Deployment: the controller saw this generation, every replica runs the new template (``updatedReplicas``),
    no old replica is left (``replicas``) and all are available; ``ProgressDeadlineExceeded`` is a failure.
    StatefulSet: this generation observed, every replica updated and ready, ``currentRevision`` caught up
    with ``updateRevision``.
    """
    kind = obj["kind"]
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    want = spec.get("replicas", 1)
    observed = status.get("observedGeneration", 0) >= meta.get("generation", 0)
    seen: dict[str, Any] = {"image": _image(obj), "want": want, "observed": observed,
                            "replicas": status.get("replicas", 0), "updated": status.get("updatedReplicas", 0),
                            "ready": status.get("readyReplicas", 0)}
    if kind == "Deployment":
        seen["available"] = status.get("availableReplicas", 0)
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                return False, f"ProgressDeadlineExceeded: {cond.get('message', '')}", seen
            if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
                seen["replica_failure"] = cond.get("message", "")
        done = (observed and seen["updated"] == want and seen["replicas"] == want and seen["available"] == want)
        return done, None, seen
    seen["current_revision"] = status.get("currentRevision")
    seen["update_revision"] = status.get("updateRevision")
    partition = ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition", 0)
    done = (observed and seen["ready"] == want and seen["replicas"] == want
            and seen["updated"] >= want - partition
            and (partition > 0 or seen["current_revision"] == seen["update_revision"]))
    return done, None, seen
