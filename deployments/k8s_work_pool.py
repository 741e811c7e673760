"""Render ``deployments/k8s-work-pool.json``: the base job template of the ``helix-ops-k8s`` Kubernetes work pool.

It starts from prefect-kubernetes' own default template (``KubernetesWorker.get_default_base_job_template()``)
and changes only what helix-ops needs:

* defaults: namespace ``helix-ops``, the service account ``helix-ops`` (bound to the Role in
  ``deployments/rbac/role.yaml`` of each Helix namespace it manages), the flow-run image at the project's
  version, requests and limits sized for a flow run, ``backoffLimit: 0`` (Prefect retries flow runs, not the Job), finished Jobs kept
  one hour;
* the pod passes Pod Security ``restricted`` (non-root, RuntimeDefault seccomp, no privilege escalation, every
  capability dropped) and carries ``app.kubernetes.io/part-of: helix-ops`` labels;
* the default template puts ``completions`` and ``parallelism`` in the *pod* spec, where Kubernetes does not
  know them (the API server drops them with a warning, strict validation refuses them): they are moved to the
  Job spec.

    python deployments/k8s_work_pool.py            # rewrite the JSON
    python deployments/k8s_work_pool.py --check    # exit 1 when the JSON is not what this renders

Create the pool with it::

    prefect work-pool create helix-ops-k8s --type kubernetes --base-job-template deployments/k8s-work-pool.json
"""

from __future__ import annotations

import copy
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("k8s-work-pool.json")
# the flow-run image (testbed/images/flow-run/Containerfile), tagged with the project's version: the test bed builds
# it under this name; a site pushes it to its own registry and sets the pool's image (docs/kubernetes.md)
VERSION = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"localhost/helix-ops-flow-run:{VERSION}"
DEFAULTS: dict[str, Any] = {
    "namespace": "helix-ops",
    "image": IMAGE,
    "service_account_name": "helix-ops",
    "image_pull_policy": "IfNotPresent",
    "backoff_limit": 0,
    "finished_job_ttl": 3600,
    "cpu_request": "250m",
    "cpu_limit": "1",
    "memory_request": "512Mi",
    "memory_limit": "1Gi",
    "labels": {"app.kubernetes.io/part-of": "helix-ops", "app.kubernetes.io/component": "flow-run"},
    "env": {"PREFECT_LOGGING_LEVEL": "INFO", "HELIX_OPS_HOME": "/opt/helix-ops"},
}


def render(default: dict[str, Any]) -> dict[str, Any]:
    """The helix-ops template from prefect-kubernetes' default one (pure)."""
    template = copy.deepcopy(default)
    props = template["variables"]["properties"]
    for name, value in DEFAULTS.items():
        props[name]["default"] = value
    manifest = template["job_configuration"]["job_manifest"]
    job_spec = manifest["spec"]
    pod_spec = job_spec["template"]["spec"]
    for key in ("completions", "parallelism"):
        if key in pod_spec:
            job_spec[key] = pod_spec.pop(key)
    job_spec["template"]["metadata"] = {"labels": "{{ labels }}"}
    pod_spec["automountServiceAccountToken"] = True  # the flow run talks to the API server in-cluster
    pod_spec["securityContext"] = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                   "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    container = pod_spec["containers"][0]
    container["securityContext"] = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}
    container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    pod_spec["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    return template


def default_template() -> dict[str, Any]:
    from prefect_kubernetes.worker import KubernetesWorker

    return KubernetesWorker.get_default_base_job_template()


def text(template: dict[str, Any]) -> str:
    return json.dumps(template, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    rendered = text(render(default_template()))
    if "--check" in argv:
        same = OUT.exists() and OUT.read_text() == rendered
        print(f"{OUT.name}: {'up to date' if same else 'differs from what prefect-kubernetes renders now'}")
        return 0 if same else 1
    OUT.write_text(rendered)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
