"""Plans: create / update with a field diff / delete / no-op with its reason; the spec hash."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from core_helpers import DEPLOYMENTS, descriptor_data, dump, helix_config_text, mutate

from helix_ops.descriptor import load_descriptor, parse_descriptor
from helix_ops.errors import ConfigError, PlanError
from helix_ops.plan import (
    REDACTED,
    Change,
    CurrentObject,
    CurrentState,
    DesiredObject,
    FieldChange,
    compose_objects,
    compute_plan,
    kubernetes_objects,
    parse_state,
    spec_hash,
    state_of,
)
from helix_ops.render.compose import render_compose
from helix_ops.render.kubernetes import render_kubernetes
from helix_ops.stack import build_stack


def local_desired(data=None):
    d = parse_descriptor(dump(data)) if data else load_descriptor(DEPLOYMENTS / "local.yaml")
    return compose_objects(render_compose(build_stack(d)))


def test_spec_hash_is_stable_and_ignores_key_order():
    a = {"image": "x:1", "env": {"A": "1", "B": "2"}}
    b = {"env": {"B": "2", "A": "1"}, "image": "x:1"}
    assert spec_hash(a) == spec_hash(b)
    assert spec_hash(a) == spec_hash(copy.deepcopy(a))
    assert len(spec_hash(a)) == 32 and set(spec_hash(a)) <= set("0123456789abcdef")
    assert spec_hash(a) != spec_hash({**a, "image": "x:2"})


def test_spec_hash_is_pinned():
    # A change here means every deployed object would look changed: bump deliberately only.
    assert spec_hash({"image": "localhost/helix-probe:v1"}) == "4ac5256a2b1a531ff2d9d7e8a327217c"
    assert spec_hash({}) == "44136fa355b3678a1146ad16f7e8649e"


def test_plan_against_empty_state_creates_everything_in_apply_order():
    desired = local_desired()
    plan = compute_plan(desired, CurrentState())
    assert [c.action for c in plan.changes] == ["create"] * len(desired)
    services = [c.identity for c in plan.changes if c.identity.startswith("service/")]
    assert services == [f"service/{n}" for n in (
        "neo4j", "redis", "dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade",
        "mcp-verification", "nginx")]
    dash = next(c for c in plan.changes if c.identity == "service/dashboard")
    assert dash.reason == "absent; create at image localhost/helix-probe:v1"


def test_second_identical_plan_is_all_noop_with_reasons():
    desired = local_desired()
    plan = compute_plan(desired, state_of(desired))
    assert plan.is_noop
    assert plan.counts() == {"create": 0, "update": 0, "delete": 0, "noop": len(desired)}
    dash = next(c for c in plan.changes if c.identity == "service/dashboard")
    h = next(d for d in desired if d.identity == "service/dashboard").spec_hash
    assert dash.reason == f"dashboard already at image localhost/helix-probe:v1, spec hash {h}"


def test_image_change_is_an_update_with_field_diff():
    before = local_desired()
    after = local_desired(mutate(descriptor_data("local"), "services.dashboard.image.tag", "v2"))
    plan = compute_plan(after, state_of(before))
    updates = [c for c in plan.changes if c.action == "update"]
    assert [c.identity for c in updates] == ["service/dashboard"]
    assert updates[0].diff == (
        FieldChange("image", "localhost/helix-probe:v1", "localhost/helix-probe:v2"),
    )


def test_replica_change_shows_in_diff_and_other_fields_from_state_are_compared():
    before = local_desired()
    after = local_desired(mutate(descriptor_data("local"), "services.dashboard.replicas", 4))
    current = state_of(before)
    objs = [dataclasses.replace(o, fields={**o.fields, "restart": "always"}) if o.identity == "service/dashboard"
            else o for o in current.objects]
    plan = compute_plan(after, CurrentState(tuple(objs)))
    dash = next(c for c in plan.changes if c.identity == "service/dashboard")
    assert dash.action == "update"
    assert dash.diff == (
        FieldChange("replicas", 2, 4),
        FieldChange("restart", "always", "unless-stopped"),
    )


def test_hash_differs_but_summary_fields_equal_reports_the_hash():
    desired = [DesiredObject("service/x", {"image": "a:1", "x": 1}, {"image": "a:1"})]
    plan = compute_plan(desired, CurrentState((CurrentObject("service/x", "0" * 32, {"image": "a:1"}),)))
    assert plan.changes == (
        Change("update", "service/x", f"spec hash {'0' * 32} -> {desired[0].spec_hash}", desired[0].spec_hash,
               (FieldChange("(spec hash)", "0" * 32, desired[0].spec_hash),)),
    )


def test_objects_no_longer_desired_are_deleted_last_in_reverse_order():
    desired = local_desired()
    extra = (CurrentObject("service/old-a", "a" * 32), CurrentObject("service/old-b", "b" * 32))
    plan = compute_plan(desired, CurrentState(state_of(desired).objects + extra))
    assert [(c.action, c.identity) for c in plan.changes[-2:]] == [
        ("delete", "service/old-b"), ("delete", "service/old-a")]
    assert plan.changes[-1].reason == "not in the desired rendering"


def test_secret_values_are_redacted_in_diffs():
    stack = build_stack(load_descriptor(DEPLOYMENTS / "prod.yaml"), helix_config_text())
    values = {"neo4j-password": "pw1", "redis-password": "r", "nextauth-secret": "n", "anthropic-api-key": "k"}
    before = kubernetes_objects(render_kubernetes(stack, values))
    after = kubernetes_objects(render_kubernetes(stack, {**values, "neo4j-password": "pw2"}))
    current = state_of(before)
    objs = [dataclasses.replace(o, fields={"stringData.neo4j-password": "pw1"}) if o.identity.startswith("Secret/")
            else o for o in current.objects]
    plan = compute_plan(after, CurrentState(tuple(objs)))
    (change,) = [c for c in plan.changes if c.action != "noop"]
    assert change.identity == "Secret/helix/helix-secrets"
    assert change.diff == (FieldChange("stringData.neo4j-password", REDACTED, REDACTED),)
    assert "pw" not in repr(plan.to_dict())


def test_kubernetes_identities_and_summary_fields():
    stack = build_stack(load_descriptor(DEPLOYMENTS / "prod.yaml"), helix_config_text())
    objs = {o.identity: o for o in kubernetes_objects(render_kubernetes(stack))}
    dashboard = objs["Deployment/helix/dashboard"].fields
    assert {k: dashboard[k] for k in ("replicas", "image")} == {"replicas": 3,
                                                                "image": "ghcr.io/example/helix-dashboard:1.4.2"}
    assert dashboard["containers.dashboard.image"] == "ghcr.io/example/helix-dashboard:1.4.2"  # drift's fields
    assert objs["StatefulSet/helix/neo4j"].fields["replicas"] == 3
    assert "Namespace/helix" in objs


def test_duplicate_identities_are_a_plan_error():
    d = DesiredObject("service/x", {}, {})
    with pytest.raises(PlanError, match="duplicate"):
        compute_plan([d, d], CurrentState())


def test_state_file_is_validated_with_a_path():
    with pytest.raises(ConfigError) as info:
        parse_state({"objects": [{"identity": "service/x", "spec_hash": "NOT-HEX"}]}, "state.json")
    assert info.value.path == "objects[0].spec_hash"
    state = parse_state({"objects": [{"identity": "service/x", "spec_hash": "ab" * 16, "fields": {"image": "a"}}]})
    assert state.objects == (CurrentObject("service/x", "ab" * 16, {"image": "a"}),)


def test_plan_lines_and_dict():
    desired = local_desired()
    plan = compute_plan(desired, CurrentState())
    assert plan.lines()[-1] == f"{len(desired)} create, 0 update, 0 delete, 0 noop"
    assert plan.to_dict()["counts"]["create"] == len(desired)
