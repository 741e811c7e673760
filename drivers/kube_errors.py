"""The Kubernetes driver's errors (all pickle): what :class:`drivers.kube.KubeDriver` translates the library's
errors into (an unreachable API server, a 403 naming the Role to bind, any other refusal), and the failure of a
rollout (:class:`RolloutFailed`, saying whether the previous revision serves again). ``drivers.kube`` imports
them all, so ``from drivers.kube import KubeApiError`` keeps working."""

from __future__ import annotations

from helix_ops.errors import DriverError, HelixOpsError

ROLE_FILE = "deployments/rbac/role.yaml"
"""The Role helix-ops needs (a KubeForbidden's hint names it)."""


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
