"""The overrides upgrade-helix and scale-helix keep for deploy-helix (helix_ops/overrides.py, pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helix_ops.errors import ConfigError
from helix_ops.descriptor import load_descriptor
from helix_ops.overrides import Overrides, image_ref, variable_name

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def desc():
    return load_descriptor(REPO / "deployments" / "local.yaml")


def test_overrides_apply_on_top_of_the_descriptor_and_say_what_it_says(desc):
    o = Overrides().upgraded({"dashboard": "ghcr.io/acme/dash:2.0"}).scaled("mcp-discovery", 3)
    d = o.applied_to(desc)
    assert image_ref(d, "dashboard") == "ghcr.io/acme/dash:2.0" and d.services.mcp_discovery.replicas == 3
    assert o.lines(desc) == [
        f"dashboard: image ghcr.io/acme/dash:2.0 (the descriptor says {image_ref(desc, 'dashboard')})",
        f"mcp-discovery: 3 replicas (the descriptor says {desc.services.mcp_discovery.replicas})"]
    assert "repository: ghcr.io/acme/dash" in o.patch() and "replicas: 3" in o.patch()


def test_what_the_descriptor_already_says_is_pruned(desc):
    same = Overrides().upgraded({"dashboard": image_ref(desc, "dashboard")}).scaled(
        "mcp-discovery", desc.services.mcp_discovery.replicas)
    assert same.pruned(desc).is_empty
    o = Overrides().upgraded({"dashboard": "x:1", "mcp-cascade": "y:2"})
    assert o.without_images({"dashboard"}).images == {"mcp-cascade": "y:2"}


def test_overrides_keep_the_descriptor_rules(desc):
    with pytest.raises(ConfigError, match="single writer"):
        Overrides().scaled("mcp-graph", 2).applied_to(desc)
    with pytest.raises(ValueError):
        Overrides(images={"dashboard": "bad tag"})


def test_the_variable_is_per_project_and_environment():
    assert variable_name("helix", "prod") == "helix-overrides-helix-prod"
    assert variable_name("helix", "prod") != variable_name("other", "prod")
