"""Data access to one environment's pods through the API server, for :class:`drivers.kube.KubeDriver`.

A flow reaches Neo4j/Redis of the environment from its own process through the API server's
``pods/portforward`` (kr8s: a local listener on 127.0.0.1, one WebSocket per TCP connection) to a Running and
Ready pod labelled ``app.kubernetes.io/name=<service>`` and ``helix-ops/environment=<env>``; in-cluster (a flow
run in a pod) the Service's DNS name is used instead. ``scale`` patches the scale subresource and waits;
``exec`` runs a command through ``pods/exec``. ``replicas`` reads a workload's ``spec.replicas``.

Holds :class:`KubeAccess` (the helper a :class:`~drivers.kube.KubeDriver` delegates ``endpoint``, ``replicas``,
``scale`` and ``exec`` to, with the kr8s API it opens for the WebSocket streams and the ready-pod wait) and the
WebSocket streaming coroutines (run on kr8s's event-loop thread). Errors are translated as the driver does:
a refused upgrade is :class:`~drivers.kube.KubeForbidden` (403) or :class:`~drivers.kube.KubeApiError`, a
transport failure :class:`~drivers.kube.KubeUnreachable`.
"""

from __future__ import annotations

import errno
import json
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lightkube.core.resource import api_info
from lightkube.types import PatchType

from drivers.kube import ENV_LABEL, NAME_LABEL, WORKLOADS, plain_object
from drivers.kube_errors import KubeApiError, KubeForbidden, KubeUnreachable
from helix_ops.errors import ConfigError, DriverError, WaitTimeout
from helix_ops.wait import Deadline

if TYPE_CHECKING:
    from drivers.kube import KubeDriver


class KubeAccess:
    """Port-forward, exec, scale and replicas of one :class:`~drivers.kube.KubeDriver`'s environment (its
    client, namespace and labels); opens one kr8s API, on first use, over the driver's kubeconfig source."""

    def __init__(self, driver: KubeDriver) -> None:
        self.driver = driver
        self.namespace = driver.namespace
        self.environment = driver.environment
        self.server = driver.server
        self._kr8s_api: Any = None

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
        if self.driver.in_cluster:
            yield (f"{service}.{self.namespace}.svc", int(port))
            return
        pod = self._ready_pod(service, deadline_s)
        self._probe_portforward(pod["metadata"]["name"], int(port))
        from kr8s.objects import Pod as Kr8sPod

        target = Kr8sPod({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": pod["metadata"]["name"], "namespace": self.namespace}}, api=self._kr8s())
        for attempt in range(5):  # kr8s picks a free port, then binds it: another process may take it in between
            try:
                forward = target.portforward(int(port), local_port="auto")
                local_port = forward.__enter__()
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == 4:
                    raise DriverError(f"cannot listen on 127.0.0.1 for the port-forward to {service}: {exc}") \
                        from exc
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
        res = self.driver._res(kind)
        plural = api_info(res).plural
        with self.driver._api("patch", f"{plural}/scale", self.namespace):
            self.driver.client.patch(res.Scale, service, {"spec": {"replicas": int(replicas)}},
                                     namespace=self.namespace, patch_type=PatchType.MERGE)
        what = f"{kind}/{self.namespace}/{service} to scale to {replicas}"
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        for poll in Deadline(deadline_s).polls(f"{what} within {deadline_s:g}s", 0.5):
            now = self.driver._get(kind, service, self.namespace)
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

    # --- internals ---------------------------------------------------------------------------------------

    def _kr8s(self):
        """A kr8s API over the same kubeconfig source as the lightkube client (kr8s does the WebSocket
        streaming: pods/portforward, pods/exec)."""
        if self._kr8s_api is None:
            import kr8s

            src = self.driver.source
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
            obj = self.driver._get(kind, name, self.namespace)
            if obj is not None:
                return kind, obj
        return None

    def _pods_matching(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        with self.driver._api("list", "pods", self.namespace):
            return [plain_object(p) for p in self.driver.client.list(self.driver._res("Pod", "v1"),
                                                                namespace=self.namespace, labels=dict(labels))]

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
