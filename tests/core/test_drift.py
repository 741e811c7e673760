"""Drift on Kubernetes (helix_ops/drift.py): the owned fields of a workload compare equal between the rendering
and the same object as the API server returns it (defaults filled in, quantities canonical), and every
out-of-band change to them (image, env, resources, probes, replicas) becomes a drift update in the plan."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from core_helpers import DEPLOYMENTS, helix_config_text

from helix_ops.descriptor import load_descriptor
from helix_ops.drift import drifted, owned_fields, quantity
from helix_ops.plan import CurrentObject, CurrentState, compute_plan, kubernetes_objects, state_of
from helix_ops.render.kubernetes import render_kubernetes
from helix_ops.stack import build_stack

VALUES = {"neo4j-password": "pw1", "redis-password": "r", "nextauth-secret": "n", "anthropic-api-key": "k"}


@pytest.fixture(scope="module")
def rendered():
    stack = build_stack(load_descriptor(DEPLOYMENTS / "prod.yaml"), helix_config_text())
    return render_kubernetes(stack, VALUES)


def workload(manifests, name):
    (m,) = [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet") and m["metadata"]["name"] == name]
    return m


def as_served(manifest):
    """The manifest as the API server returns it: probe defaults and httpGet's scheme filled in, quantities in
    canonical form, ``optional: false`` nowhere, extra server-side fields."""
    live = copy.deepcopy(manifest)
    live["status"] = {"replicas": 3}
    live["metadata"]["resourceVersion"] = "42"
    for c in live["spec"]["template"]["spec"]["containers"]:
        c["imagePullPolicy"] = "IfNotPresent"
        c["terminationMessagePath"] = "/dev/termination-log"
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            if kind in c:
                c[kind] = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3,
                           **c[kind]}
                if "httpGet" in c[kind]:
                    c[kind]["httpGet"] = {"scheme": "HTTP", **c[kind]["httpGet"]}
        for section in (c.get("resources") or {}).values():
            for k, v in (section.items() if isinstance(section, dict) else ()):
                section[k] = {"0.5": "500m", "1024Mi": "1Gi", "1000m": "1"}.get(str(v), v)
    return live


@pytest.mark.parametrize("text,same", [("500m", "0.5"), ("1Gi", "1024Mi"), ("1", "1000m"), ("2G", "2000M"),
                                       ("1.5Gi", "1536Mi")])
def test_quantities_compare_by_value(text, same):
    assert quantity(text) == quantity(same)


def test_different_quantities_differ_and_junk_stays_junk():
    assert quantity("1G") != quantity("1Gi")
    assert quantity("256Mi") != quantity("512Mi")
    assert quantity("lots") == "lots"


def test_every_workload_as_served_shows_no_drift(rendered):
    workloads = [m for m in rendered if m["kind"] in ("Deployment", "StatefulSet")]
    assert len(workloads) >= 7
    for m in workloads:
        desired, live = owned_fields(m), owned_fields(as_served(m))
        assert any(k.endswith(".image") for k in desired)
        assert drifted(desired, live) == [], m["metadata"]["name"]


@pytest.mark.parametrize("change,path", [
    (lambda c, s: c.update(image="ghcr.io/example/helix-dashboard:9.9.9"), "containers.dashboard.image"),
    (lambda c, s: c.setdefault("env", []).append({"name": "DEBUG", "value": "1"}), "containers.dashboard.env.DEBUG"),
    (lambda c, s: c["env"].pop(0), None),
    (lambda c, s: c["resources"].setdefault("limits", {}).update(memory="7Gi"),
     "containers.dashboard.resources.limits.memory"),
    (lambda c, s: c["readinessProbe"].update(periodSeconds=99), "containers.dashboard.readinessProbe.periodSeconds"),
    (lambda c, s: s.update(replicas=1), "replicas"),
])
def test_an_out_of_band_change_is_a_drift_update_naming_the_field(rendered, change, path):
    m = workload(rendered, "dashboard")
    live = as_served(m)
    c = live["spec"]["template"]["spec"]["containers"][0]
    removed = f"containers.dashboard.env.{c['env'][0]['name']}"
    change(c, live["spec"])
    desired_objs = kubernetes_objects(rendered)
    current = state_of(desired_objs)  # every object as applied: same hashes
    served = {"image": live["spec"]["template"]["spec"]["containers"][0]["image"], **owned_fields(live)}
    objs = tuple(dataclasses.replace(o, fields=served) if o.identity == "Deployment/helix/dashboard" else o
                 for o in current.objects)
    plan = compute_plan(desired_objs, CurrentState(objs))
    (change_,) = [c for c in plan.changes if c.action != "noop"]
    assert change_.identity == "Deployment/helix/dashboard" and change_.action == "update" and change_.drift
    assert plan.drift == (change_,)
    assert [d.path for d in change_.diff] == [path or removed]
    assert "changed outside helix-ops" in change_.reason and (path or removed) in change_.reason
    assert plan.to_dict()["changes"][[c.identity for c in plan.changes].index(change_.identity)]["drift"] is True


def test_env_values_never_appear_in_clear(rendered):
    m = workload(rendered, "dashboard")
    live = as_served(m)
    c = live["spec"]["template"]["spec"]["containers"][0]
    c.setdefault("env", []).append({"name": "LEAKED", "value": "hunter2-very-secret"})
    drift = drifted(owned_fields(m), owned_fields(live))
    assert [p for p, _, _ in drift] == ["containers.dashboard.env.LEAKED"]
    assert "hunter2" not in repr(drift) and drift[0][1].startswith("sha256:")
    # a plan shows neither the value nor its hash (a short secret's hash could be searched for)
    desired_objs = kubernetes_objects(rendered)
    served = {"image": c["image"], **owned_fields(live)}
    objs = tuple(dataclasses.replace(o, fields=served) if o.identity == "Deployment/helix/dashboard" else o
                 for o in state_of(desired_objs).objects)
    plan = compute_plan(desired_objs, CurrentState(objs))
    text = repr(plan.to_dict()) + "\n".join(plan.lines())
    assert "hunter2" not in text and "sha256:" not in text and "containers.dashboard.env.LEAKED" in text


def test_probe_headers_and_exec_commands_are_compared_but_never_shown(rendered):
    m = copy.deepcopy(workload(rendered, "dashboard"))
    c = m["spec"]["template"]["spec"]["containers"][0]
    c["livenessProbe"] = {"exec": {"command": ["check", "--password", "s3cr3t"]}}
    c["readinessProbe"] = {**c["readinessProbe"], "httpGet": {**c["readinessProbe"]["httpGet"],
                                                              "httpHeaders": [{"name": "Authorization",
                                                                               "value": "Bearer tok3n"}]}}
    live = as_served(m)
    lc = live["spec"]["template"]["spec"]["containers"][0]
    lc["livenessProbe"]["exec"]["command"][-1] = "other"
    lc["readinessProbe"]["httpGet"]["httpHeaders"][0]["value"] = "Bearer t0ken2"
    drift = drifted(owned_fields(m), owned_fields(live))
    assert {p for p, _, _ in drift} == {"containers.dashboard.livenessProbe.exec.command",
                                        "containers.dashboard.readinessProbe.httpGet.httpHeaders.Authorization"}
    assert "s3cr3t" not in repr(drift) and "tok3n" not in repr(drift)


def test_api_server_defaults_of_probes_and_a_list_of_resource_claims_are_not_drift(rendered):
    m = copy.deepcopy(workload(rendered, "dashboard"))
    c = m["spec"]["template"]["spec"]["containers"][0]
    c["startupProbe"] = {"httpGet": {"port": 3000}, "initialDelaySeconds": 0, "timeoutSeconds": 0}
    c["resources"]["claims"] = [{"name": "gpu"}]
    live = as_served(m)
    lc = live["spec"]["template"]["spec"]["containers"][0]
    lc["startupProbe"] = {"httpGet": {"port": 3000, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                          "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    assert drifted(owned_fields(m), owned_fields(live)) == []


@pytest.mark.parametrize("text", ["NaN", "inf", "1_000", "1e3k", "12 Mi", ""])
def test_what_is_not_a_kubernetes_quantity_stays_as_it_is(text):
    assert quantity(text) == text.strip()


def test_replicas_the_rendering_leaves_to_an_autoscaler_are_not_drift(rendered):
    m = copy.deepcopy(workload(rendered, "mcp-discovery"))
    m["spec"].pop("replicas", None)
    live = as_served(m)
    live["spec"]["replicas"] = 7
    assert drifted(owned_fields(m), owned_fields(live)) == []


def test_a_hash_change_is_an_ordinary_update_not_drift(rendered):
    before = kubernetes_objects(rendered)
    after_manifests = copy.deepcopy(rendered)
    workload(after_manifests, "dashboard")["spec"]["template"]["spec"]["containers"][0]["image"] = "x/y:2"
    plan = compute_plan(kubernetes_objects(after_manifests), state_of(before))
    (change,) = [c for c in plan.changes if c.action != "noop"]
    assert change.action == "update" and not change.drift and plan.drift == ()
    assert any(d.path == "containers.dashboard.image" for d in change.diff)


def test_other_kinds_own_no_drift_fields(rendered):
    assert all(owned_fields(m) == {} for m in rendered if m["kind"] not in ("Deployment", "StatefulSet"))
    assert CurrentObject("Service/helix/x", "h", {}).fields == {}
