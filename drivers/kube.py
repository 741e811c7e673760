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
* **data access** (``endpoint``, ``scale``, ``replicas``, ``exec``): a flow reaches Neo4j/Redis of the
  environment from its own process through the API server's ``pods/portforward`` (kr8s: a local listener on
  127.0.0.1, one WebSocket per TCP connection) to a Running and Ready pod labelled
  ``app.kubernetes.io/name=<service>`` and ``helix-ops/environment=<env>``; in-cluster (a flow run in a pod)
  the Service's DNS name is used instead. ``scale`` patches the scale subresource and waits; ``exec`` runs a
  command through ``pods/exec``.
* **errors**: library errors are translated here: an unreachable API server is :class:`KubeUnreachable`
  (naming the server), a 403 is :class:`KubeForbidden` (naming verb, resource and namespace, with the Role to
  bind), anything else :class:`KubeApiError`. All pickle.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
import warnings
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

from helix_ops.errors import ConfigError, DriverError, HelixOpsError, PlanError, WaitTimeout
from helix_ops.plan import HASH_LABEL, CurrentObject, CurrentState
from helix_ops.wait import Deadline

FIELD_MANAGER = "helix-ops"
MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"
ENV_LABEL = "helix-ops/environment"
NAME_LABEL = "app.kubernetes.io/name"
ROLE_FILE = "deployments/rbac/role.yaml"

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


class KubeUnreachable(DriverError):
    """The API server cannot be reached (connection refused, DNS, TLS, timeout)."""

    def __init__(self, server: str, detail: str) -> None:
        self.server = server
        self.detail = detail
        super().__init__(
            f"Kubernetes API server {server} is not reachable: {detail}",
            hint="is the cluster up and is the kubeconfig's server address right? "
                 "(try: kubectl --kubeconfig <file> cluster-info)")

    def __reduce__(self):
        return (type(self), (self.server, self.detail))


class KubeForbidden(DriverError):
    """RBAC refused a request (HTTP 403): names the verb, the resource and the namespace."""

    def __init__(self, verb: str, resource: str, namespace: str | None, detail: str) -> None:
        self.verb = verb
        self.resource = resource
        self.namespace = namespace
        self.detail = detail
        where = f"in namespace {namespace}" if namespace else "(cluster scope)"
        scope = f" -n {namespace}" if namespace else ""
        super().__init__(
            f"forbidden: the kubeconfig's identity may not {verb} {resource} {where}: {detail}",
            hint=f"bind the helix-ops Role ({ROLE_FILE}) to that identity; check with "
                 f"kubectl auth can-i {verb} {resource}{scope}")

    def __reduce__(self):
        return (type(self), (self.verb, self.resource, self.namespace, self.detail))


class KubeApiError(DriverError):
    """Any other refusal of the API server (422 invalid object, 409 conflict, 500 …)."""

    def __init__(self, verb: str, resource: str, namespace: str | None, code: int, detail: str) -> None:
        self.verb = verb
        self.resource = resource
        self.namespace = namespace
        self.code = code
        self.detail = detail
        where = f" in namespace {namespace}" if namespace else ""
        hint = {422: "the rendered object is invalid for this cluster's version (check kubernetes.version)",
                409: "another writer changed the object at the same time: run again",
                401: "the kubeconfig's token or client certificate is invalid or expired"}.get(
            code, "see the API server's message")
        super().__init__(f"Kubernetes API refused to {verb} {resource}{where} (HTTP {code}): {detail}", hint=hint)

    def __reduce__(self):
        return (type(self), (self.verb, self.resource, self.namespace, self.code, self.detail))


class RolloutFailed(HelixOpsError):
    """A rollout missed its deadline. ``rolled_back`` says whether the previous revision is serving again
    (then ``image`` is what the workload runs now)."""

    def __init__(self, workload: str, reason: str, rolled_back: bool, image: str = "") -> None:
        self.workload = workload
        self.reason = reason
        self.rolled_back = rolled_back
        self.image = image
        outcome = (f"rolled back to the previous revision ({image})" if rolled_back
                   else "not rolled back (no previous revision, or the rollback failed too)")
        super().__init__(f"rollout of {workload} failed: {reason}; {outcome}")

    def __reduce__(self):
        return (type(self), (self.workload, self.reason, self.rolled_back, self.image))


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


def _plain(obj: Any) -> dict[str, Any]:
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
    _kr8s_api: Any = field(default=None, repr=False, compare=False)

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
                return _plain(self.client.get(res, name, namespace=namespace))
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
                items = [_plain(o) for o in self.client.list(res, namespace=self.namespace, labels=self.labels())]
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
            after = _plain(self.client.patch(res, name, body, namespace=ns, patch_type=PatchType.APPLY,
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
             log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
        """Apply a Deployment/StatefulSet and wait for its rollout; when it misses ``deadline_s``, apply the
        previous pod template again (``rollback``) and raise :class:`RolloutFailed`."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        workload = f"{kind}/{self.namespace}/{name}"
        previous = self._get(kind, name, self.namespace)
        t0 = time.monotonic()
        result = self.apply(manifest, spec_hash)
        log(f"{workload}: {result}")
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
            items = [_plain(p) for p in self.client.list(res, namespace=self.namespace, labels=labels)]
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

    # --- data access: port-forward, scale, exec ----------------------------------------------------------

    @contextmanager
    def endpoint(self, service: str, port: int, *, deadline_s: float = 60) -> Iterator[tuple[str, int]]:
        """Yield ``(host, port)`` that reaches ``port`` of ``service`` from this process; closed on exit.

        Outside the cluster: a listener on 127.0.0.1 (a free port) that forwards each TCP connection through the
        API server's ``pods/portforward`` to a Running and Ready pod labelled ``app.kubernetes.io/name=<service>``
        and ``helix-ops/environment=<environment>`` in this namespace (waited for within ``deadline_s``: else
        :class:`WaitTimeout`). The forward is tried once before yielding, so a refusal surfaces here: a 403 is
        :class:`KubeForbidden` (verb ``create`` on ``pods/portforward``), a pod side failure a DriverError.

        In the cluster (``in_cluster``: the flow runs in a pod with a service account) nothing is forwarded: the
        Service's cluster DNS name ``(f"{service}.{namespace}.svc", port)`` is yielded (the NetworkPolicies must
        let the flow's pod in; not testable on the local bed, which routes no Service)."""
        if self.in_cluster:
            yield (f"{service}.{self.namespace}.svc", int(port))
            return
        pod = self._ready_pod(service, deadline_s)
        self._probe_portforward(pod["metadata"]["name"], int(port))
        from kr8s.objects import Pod as Kr8sPod

        target = Kr8sPod({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": pod["metadata"]["name"], "namespace": self.namespace}}, api=self._kr8s())
        try:
            forward = target.portforward(int(port), local_port="auto")
            local_port = forward.__enter__()
        except OSError as exc:
            raise DriverError(f"cannot listen on 127.0.0.1 for the port-forward to {service}: {exc}") from exc
        try:
            yield ("127.0.0.1", int(local_port))
        finally:
            forward.__exit__(None, None, None)

    def replicas(self, service: str) -> int | None:
        """``spec.replicas`` of the Deployment or StatefulSet named ``service``; None when neither exists."""
        found = self._workload(service)
        if found is None:
            return None
        return int((found[1].get("spec") or {}).get("replicas", 1))

    def scale(self, service: str, replicas: int, *, deadline_s: float = 120) -> int:
        """Set ``spec.replicas`` of the Deployment or StatefulSet named ``service`` (a merge patch of its scale
        subresource) and wait within ``deadline_s`` until its status shows it: ``readyReplicas == replicas``
        (and ``replicas``), and for 0 no pod of it is left. Returns the previous ``spec.replicas``."""
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, not {replicas}")
        found = self._workload(service)
        if found is None:
            raise KubeApiError("patch", "deployments/scale or statefulsets/scale", self.namespace, 404,
                               f"no Deployment or StatefulSet named {service}")
        kind, obj = found
        previous = int((obj.get("spec") or {}).get("replicas", 1))
        res = self._res(kind)
        plural = api_info(res).plural
        with self._api("patch", f"{plural}/scale", self.namespace):
            self.client.patch(res.Scale, service, {"spec": {"replicas": int(replicas)}}, namespace=self.namespace,
                              patch_type=PatchType.MERGE)
        what = f"{kind}/{self.namespace}/{service} to scale to {replicas}"
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        for poll in Deadline(deadline_s).polls(f"{what} within {deadline_s:g}s", 0.5):
            now = self._get(kind, service, self.namespace)
            if now is None:
                raise KubeApiError("get", plural, self.namespace, 404, f"{kind} {service} disappeared while scaling")
            status = now.get("status") or {}
            seen = {"observed": status.get("observedGeneration", 0) >= now["metadata"].get("generation", 0),
                    "replicas": status.get("replicas", 0), "ready": status.get("readyReplicas", 0)}
            if replicas == 0:
                seen["pods"] = len(self._pods_matching(selector)) if selector else 0
            if (seen["observed"] and seen["ready"] == replicas and seen["replicas"] == replicas
                    and seen.get("pods", 0) == 0):
                return previous
            poll.seen = seen
        raise AssertionError("unreachable: a Poll ends by raising WaitTimeout")  # pragma: no cover

    def exec(self, service: str, argv: list[str], *, timeout_s: float = 120) -> tuple[int, str, str]:
        """Run ``argv`` (no shell) in the first container of a Running and Ready pod of ``service`` through
        ``pods/exec`` (WebSocket, ``v4.channel.k8s.io``); ``(rc, stdout, stderr)``. A 403 is
        :class:`KubeForbidden` (``create`` on ``pods/exec``); no answer within ``timeout_s`` is
        :class:`WaitTimeout`. When the kubelet reports a failure without an exit code but its message says
        ``exit status N`` (kwok's local exec does), N is the rc; any other failure to run is a DriverError."""
        if not argv:
            raise ValueError("argv must not be empty")
        pod = self._ready_pod(service, min(timeout_s, 60))
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]["name"]
        params = {"command": [str(a) for a in argv], "container": container, "stdin": "false", "stdout": "true",
                  "stderr": "true"}
        outcome = self._run_async(_ws_exec, self._kr8s(), self.namespace, name, params, float(timeout_s))
        self._raise_ws(outcome, "pods/exec", f"exec in pod {self.namespace}/{name}")
        out, err = outcome["stdout"], outcome["stderr"]
        if outcome.get("timeout"):
            raise WaitTimeout(f"{argv[0]} in pod {self.namespace}/{name} within {timeout_s:g}s",
                              {"stdout": out[-500:], "stderr": err[-500:]})
        status = outcome.get("status")
        if status is None:
            raise DriverError(f"exec in pod {self.namespace}/{name} ended without a status (connection closed)",
                              hint="check the API server's and the node's logs")
        rc = _exit_code(status)
        if rc is None:
            raise DriverError(f"exec of {argv[0]} in pod {self.namespace}/{name} failed: "
                              f"{status.get('message', status)}", hint="is the command present in the image?")
        return rc, out, err

    # internals of data access

    def _kr8s(self):
        """A kr8s API over the same kubeconfig source as the lightkube client (kr8s does the WebSocket
        streaming: pods/portforward, pods/exec)."""
        if self._kr8s_api is None:
            import kr8s

            src = self.source
            kwargs: dict[str, Any] = {"namespace": self.namespace}
            if src.get("in_cluster"):
                kwargs["serviceaccount"] = "/var/run/secrets/kubernetes.io/serviceaccount"
            elif src.get("config_dict") is not None:
                kwargs["kubeconfig"] = dict(src["config_dict"])
            elif src.get("kubeconfig"):
                kwargs["kubeconfig"] = str(src["kubeconfig"])
            if src.get("context"):
                kwargs["context"] = src["context"]
            try:
                with warnings.catch_warnings():
                    # kr8s warns about server versions newer than the ones it was tested with; the calls used
                    # here (pods/portforward, pods/exec over WebSocket) are stable across versions
                    warnings.filterwarnings("ignore", message=r"Kubernetes version .* is not supported")
                    self._kr8s_api = kr8s.api(**kwargs)
            except Exception as exc:  # noqa: BLE001 - kr8s raises plain exceptions for a bad kubeconfig
                raise ConfigError("kubernetes.kubeconfig", f"kr8s cannot load the kubeconfig: {exc}") from None
        return self._kr8s_api

    @staticmethod
    def _run_async(fn, *args):
        """Run ``fn(*args)`` (a coroutine function) on kr8s's event-loop thread, where its API session lives."""
        from kr8s._async_utils import as_sync_func

        return as_sync_func(fn)(*args)

    def _raise_ws(self, outcome: Mapping[str, Any], resource: str, what: str) -> None:
        """Translate a refused WebSocket upgrade or a transport failure (as ``_ws_*`` report them)."""
        if outcome.get("unreachable"):
            raise KubeUnreachable(self.server, outcome["unreachable"])
        code = outcome.get("http_status")
        if code is None:
            return
        detail = outcome.get("detail") or ""
        if code == 403:
            raise KubeForbidden("create", resource, self.namespace, detail)
        raise KubeApiError("create", resource, self.namespace, code, f"{what}: {detail}")

    def _probe_portforward(self, pod: str, port: int) -> None:
        """One forward to ``pod:port`` before the listener opens: a refusal is an error here and now, not a reset
        connection later. kwok/kubelet report a failure to reach the port on the stream's error channel."""
        outcome = self._run_async(_ws_portforward_probe, self._kr8s(), self.namespace, pod, port, 0.5)
        self._raise_ws(outcome, "pods/portforward", f"port-forward to pod {self.namespace}/{pod}")
        if outcome.get("error"):
            raise DriverError(f"port-forward to pod {self.namespace}/{pod} port {port} failed: {outcome['error']}",
                              hint="does the pod listen on that port? (kubectl port-forward shows the same)")

    def _workload(self, name: str) -> tuple[str, dict[str, Any]] | None:
        for kind in WORKLOADS:
            obj = self._get(kind, name, self.namespace)
            if obj is not None:
                return kind, obj
        return None

    def _pods_matching(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        with self._api("list", "pods", self.namespace):
            return [_plain(p) for p in self.client.list(self._res("Pod", "v1"), namespace=self.namespace,
                                                         labels=dict(labels))]

    def _ready_pod(self, service: str, deadline_s: float) -> dict[str, Any]:
        """A Running, Ready, not terminating pod of ``service`` in this environment (the first by name), waited
        for within ``deadline_s``."""
        labels = {NAME_LABEL: service, ENV_LABEL: self.environment}
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        for poll in Deadline(deadline_s).polls(f"a Running and Ready pod of {service} ({selector}) in namespace "
                                               f"{self.namespace} within {deadline_s:g}s", 0.5):
            seen = []
            for p in sorted(self._pods_matching(labels), key=lambda p: p["metadata"]["name"]):
                status = p.get("status") or {}
                ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in status.get("conditions") or [])
                deleting = bool(p["metadata"].get("deletionTimestamp"))
                if status.get("phase") == "Running" and ready and not deleting:
                    return p
                seen.append({"pod": p["metadata"]["name"], "phase": status.get("phase"), "ready": ready,
                             "deleting": deleting})
            poll.seen = seen or "no pods"
        raise AssertionError("unreachable: a Poll ends by raising WaitTimeout")  # pragma: no cover


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
    return fields


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


# --- WebSocket streaming (run on kr8s's event-loop thread) -------------------------------------------------


async def _ws_connect_failure(exc: BaseException) -> dict[str, Any] | None:
    """A refused upgrade as {http_status, detail}; a transport failure as {unreachable}; else None."""
    import httpx
    import httpx_ws

    if isinstance(exc, httpx_ws.WebSocketUpgradeError):
        resp = exc.response
        try:
            await resp.aread()
            body = resp.json()
            detail = body.get("message") or resp.text
        except Exception:  # noqa: BLE001 - a non-JSON or unreadable body
            detail = getattr(resp, "reason_phrase", "") or ""
        return {"http_status": resp.status_code, "detail": detail}
    if isinstance(exc, httpx.TransportError):
        return {"unreachable": f"{type(exc).__name__}: {exc}"}
    return None


async def _ws_portforward_probe(api, namespace: str, pod: str, port: int, wait_s: float) -> dict[str, Any]:
    """Open one pods/portforward stream, wait ``wait_s`` for an error on its error channel, close it."""
    import anyio

    try:
        async with api.open_websocket(version="v1", url=f"pods/{pod}/portforward", namespace=namespace,
                                      params={"ports": str(port)}) as ws:
            headers: set[int] = set()
            with anyio.move_on_after(wait_s):
                while True:
                    message = await ws.receive_bytes()
                    channel, data = message[0], message[1:]
                    if channel not in headers:  # the first frame of each channel carries the port number
                        headers.add(channel)
                        continue
                    if channel % 2 == 1 and data:
                        return {"error": data.decode(errors="replace")}
                    break  # the remote end spoke first: it is reachable
            return {}
    except Exception as exc:  # noqa: BLE001 - translated below, or raised as it is
        failure = await _ws_connect_failure(exc)
        if failure is None:
            import httpx_ws

            if isinstance(exc, httpx_ws.WebSocketDisconnect):
                return {"error": f"the stream closed at once ({exc.code} {exc.reason})"}
            raise
        return failure


async def _ws_exec(api, namespace: str, pod: str, params: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """pods/exec over WebSocket (v4.channel.k8s.io): stdout, stderr and the final status."""
    import anyio
    import httpx_ws

    out, err = bytearray(), bytearray()
    result: dict[str, Any] = {}
    try:
        async with api.open_websocket(version="v1", url=f"pods/{pod}/exec", namespace=namespace, params=params,
                                      subprotocols=("v4.channel.k8s.io",)) as ws:
            result["timeout"] = True
            with anyio.move_on_after(timeout_s):
                while True:
                    try:
                        message = await ws.receive_bytes()
                    except httpx_ws.WebSocketDisconnect:
                        result["timeout"] = False
                        break
                    channel, data = message[0], message[1:]
                    if channel == 1:
                        out += data
                    elif channel == 2:
                        err += data
                    elif channel == 3 and data:
                        result["status"] = json.loads(data.decode())
                        result["timeout"] = False
                        break
    except Exception as exc:  # noqa: BLE001 - translated below, or raised as it is
        failure = await _ws_connect_failure(exc)
        if failure is None:
            raise
        result.update(failure)
    result["stdout"] = out.decode(errors="replace")
    result["stderr"] = err.decode(errors="replace")
    return result


def _exit_code(status: Mapping[str, Any]) -> int | None:
    """The exit code in a remotecommand status: 0 for Success, the ExitCode cause, or ``exit status N`` in the
    message (kwok wraps the command's error so the cause is missing); None when the command did not run."""
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", ""))
            except ValueError:
                pass
    found = re.search(r"exit status (\d+)", str(status.get("message", "")))
    return int(found.group(1)) if found else None
