"""Rendered output passes its schemas: Kubernetes (kubernetes-validate, strict) and the Compose spec."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from core_helpers import DEPLOYMENTS, descriptor_data, dump, helix_config_text, mutate

from helix_ops.descriptor import load_descriptor, parse_descriptor
from helix_ops.errors import RenderError
from helix_ops.render.compose import render_compose, validate_compose
from helix_ops.render.kubernetes import render_kubernetes, validate_kubernetes
from helix_ops.stack import build_stack


def stack(env):
    return build_stack(load_descriptor(DEPLOYMENTS / f"{env}.yaml"), helix_config_text())


@pytest.mark.parametrize("env", ["prod", "staging", "local"])
def test_every_manifest_passes_kubernetes_validate_strict(env):
    s = stack(env)
    for obj in render_kubernetes(s, None):
        assert kubernetes_validate.validate(obj, s.descriptor.kubernetes.version, strict=True) == "1.31"


@pytest.mark.parametrize("version", ["1.28", "1.31", "1.37"])
def test_prod_manifests_validate_for_other_cluster_versions(version):
    data = mutate(descriptor_data("prod"), "kubernetes.version", version)
    s = build_stack(parse_descriptor(dump(data)), helix_config_text())
    validate_kubernetes(render_kubernetes(s), version)


def test_strict_validation_rejects_an_unknown_field():
    objects = render_kubernetes(stack("prod"))
    bad = copy.deepcopy(objects)
    deployment = next(o for o in bad if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicey"] = "Always"
    with pytest.raises(RenderError, match="Deployment/dashboard"):
        validate_kubernetes(bad, "1.31")


def test_unsupported_cluster_version_is_a_render_error():
    with pytest.raises(RenderError, match="does not support"):
        validate_kubernetes(render_kubernetes(stack("prod")), "1.99")


@pytest.mark.parametrize("env", ["prod", "staging", "local"])
def test_compose_passes_the_compose_spec_schema(env):
    validate_compose(render_compose(stack(env)))


def test_compose_schema_rejects_a_bad_document():
    doc = render_compose(stack("local"))
    doc["services"]["dashboard"]["deploy"]["replica"] = 2
    with pytest.raises(RenderError, match="services.dashboard.deploy: 'replica' does not match"):
        validate_compose(doc)
