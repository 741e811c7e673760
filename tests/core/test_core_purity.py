"""The core imports no I/O: no network, subprocess, prefect, docker, neo4j, redis or boto3.

In-process and without subprocesses: forbidden modules are hidden from sys.modules and blocked by a
meta-path finder, every helix_ops module is imported afresh, then sys.modules is inspected.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import pytest

import helix_ops

FORBIDDEN = (
    "subprocess", "socket", "ssl", "http.client", "urllib.request", "requests", "httpx", "urllib3", "aiohttp",
    "prefect", "docker", "neo4j", "redis", "boto3", "botocore", "kubernetes", "kubernetes_asyncio",
)


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


class _Blocker:
    """A meta-path finder that refuses forbidden imports and records who tried."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if _forbidden(name):
            self.attempts.append(name)
            raise ImportError(f"helix_ops must not import {name}")
        return None


def all_core_modules() -> list[str]:
    names = ["helix_ops"]
    for info in pkgutil.walk_packages(helix_ops.__path__, "helix_ops."):
        names.append(info.name)
    return names


@pytest.fixture
def isolated_modules():
    saved = dict(sys.modules)
    blocker = _Blocker()
    for name in list(sys.modules):
        if _forbidden(name) or name == "helix_ops" or name.startswith("helix_ops."):
            del sys.modules[name]
    sys.meta_path.insert(0, blocker)
    try:
        yield blocker
    finally:
        sys.meta_path.remove(blocker)
        sys.modules.clear()
        sys.modules.update(saved)


def test_core_modules_import_nothing_forbidden(isolated_modules):
    names = all_core_modules()
    assert "helix_ops.cli" in names and "helix_ops.render.kubernetes" in names
    assert not any(n.startswith("helix_ops.drivers") for n in names), "drivers belong outside the core"
    for name in names:
        importlib.import_module(name)
    loaded = sorted(n for n in sys.modules if _forbidden(n))
    assert loaded == []
    assert isolated_modules.attempts == []


def test_rendering_and_validation_import_nothing_forbidden(isolated_modules):
    from helix_ops.descriptor import load_descriptor
    from helix_ops.render.compose import render_compose, validate_compose
    from helix_ops.render.kubernetes import render_kubernetes, validate_kubernetes
    from helix_ops.stack import build_stack

    stack = build_stack(load_descriptor(helix_ops.__path__[0] + "/../deployments/prod.yaml"))
    validate_compose(render_compose(stack))
    validate_kubernetes(render_kubernetes(stack)[:3], "1.31")
    assert sorted(n for n in sys.modules if _forbidden(n)) == []
    assert isolated_modules.attempts == []


def test_the_blocker_really_blocks(isolated_modules):
    with pytest.raises(ImportError, match="must not import subprocess"):
        importlib.import_module("subprocess")


def test_import_linter_contract_is_kept(monkeypatch):
    from core_helpers import ROOT
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / ".importlinter")) == 0
