"""Golden tests: the prod descriptor's Compose document, nginx.conf and Kubernetes manifests, compared as
data with files under tests/core/golden/.

Regenerate after an intended change (then review the diff in git):

    HELIX_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/core/test_core_golden.py
"""

from __future__ import annotations

import os

import pytest
import yaml
from core_helpers import DEPLOYMENTS, GOLDEN, helix_config_text

from helix_ops.cli import dump_yaml, dump_yaml_all
from helix_ops.descriptor import load_descriptor
from helix_ops.render.compose import render_compose
from helix_ops.render.kubernetes import render_kubernetes
from helix_ops.render.nginx import render_nginx_conf
from helix_ops.stack import build_stack

UPDATE = os.environ.get("HELIX_UPDATE_GOLDEN") == "1"


def prod_stack():
    return build_stack(load_descriptor(DEPLOYMENTS / "prod.yaml"), helix_config_text())


def local_stack():
    return build_stack(load_descriptor(DEPLOYMENTS / "local.yaml"))


CASES = {
    "prod-compose.yaml": lambda: (render_compose(prod_stack()), "one"),
    "prod-kubernetes.yaml": lambda: (render_kubernetes(prod_stack()), "all"),
    "local-compose.yaml": lambda: (render_compose(local_stack()), "one"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendering_matches_golden(name):
    data, kind = CASES[name]()
    path = GOLDEN / name
    if UPDATE:
        path.write_text(dump_yaml(data) if kind == "one" else dump_yaml_all(data))
    golden = yaml.safe_load(path.read_text()) if kind == "one" else list(yaml.safe_load_all(path.read_text()))
    assert data == golden


def test_prod_nginx_conf_matches_golden():
    text = render_nginx_conf(prod_stack())
    path = GOLDEN / "prod-nginx.conf"
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text()
