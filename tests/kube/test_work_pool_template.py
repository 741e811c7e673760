"""The Kubernetes work-pool base job template (``deployments/k8s-work-pool.json``): rendered from
prefect-kubernetes' default template, accepted by a Prefect server, and its Job manifest valid for Kubernetes
(strict schema, and a server-side dry run of the Job and of its pod in a ``restricted`` namespace)."""

from __future__ import annotations

import asyncio
import json
import uuid

import jsonschema
import pytest

from testbed.paths import REPO

TEMPLATE = REPO / "deployments" / "k8s-work-pool.json"


def template() -> dict:
    return json.loads(TEMPLATE.read_text())


def job_manifest() -> dict:
    """The Job the worker would create for a flow run, from the template's defaults."""
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template(), {}, client=object()))
    config.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="brave-otter"))
    return config.job_manifest


def test_the_committed_template_is_what_the_renderer_gives_from_prefect_kubernetes_default():
    import importlib.util

    spec = importlib.util.spec_from_file_location("k8s_work_pool", REPO / "deployments" / "k8s_work_pool.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert TEMPLATE.read_text() == mod.text(mod.render(mod.default_template()))


def test_variables_are_a_json_schema_and_every_default_fits_it():
    variables = template()["variables"]
    jsonschema.Draft202012Validator.check_schema(variables)
    defaults = {k: v["default"] for k, v in variables["properties"].items() if "default" in v}
    jsonschema.validate(defaults, variables)
    assert defaults["namespace"] == "helix-ops" and defaults["service_account_name"] == "helix-ops"
    assert not defaults["image"].endswith(":latest")


def test_the_job_manifest_passes_kubernetes_validate_strict():
    import kubernetes_validate

    manifest = job_manifest()
    assert manifest["spec"]["template"]["spec"]["containers"][0]["env"]  # the worker's env made a list
    assert kubernetes_validate.validate(manifest, "1.31", strict=True) == "1.31"
    pod_spec = manifest["spec"]["template"]["spec"]
    assert "completions" not in pod_spec and manifest["spec"]["completions"] == 1


def test_a_prefect_server_accepts_the_template(prefect_harness):
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"helix-ops-k8s-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        pool = client.create_work_pool(WorkPoolCreate(name=name, type="kubernetes", base_job_template=template()))
        try:
            assert pool.base_job_template == template()
        finally:
            client.delete_work_pool(name)


def test_the_job_and_its_pod_pass_a_server_side_dry_run_in_a_restricted_namespace(kube):
    ns = kube.new_namespace("wp")
    r = kube.api("PATCH", f"/api/v1/namespaces/{ns}",
                 {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
                 headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    manifest = job_manifest()
    manifest["metadata"]["namespace"] = ns
    r = kube.api("POST", f"/apis/batch/v1/namespaces/{ns}/jobs?dryRun=All&fieldValidation=Strict", manifest)
    assert r.status_code == 201, r.text
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "flow-run-", "namespace": ns},
           "spec": manifest["spec"]["template"]["spec"]}
    pod["spec"] = {**pod["spec"], "serviceAccountName": "default"}
    r = kube.api("POST", f"/api/v1/namespaces/{ns}/pods?dryRun=All&fieldValidation=Strict", pod)
    assert r.status_code == 201, r.text
    kube.api("DELETE", f"/api/v1/namespaces/{ns}")


@pytest.mark.parametrize("key", ["completions", "parallelism"])
def test_prefect_kubernetes_default_puts_job_fields_in_the_pod_spec(key):
    """Why the renderer moves them: if this starts failing, prefect-kubernetes fixed its default template."""
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    assert key in default["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
