"""The core imports no I/O: no network, subprocess, prefect, docker, neo4j, redis or boto3.

In a fresh interpreter: a meta-path finder blocks forbidden imports, every helix_ops module is imported,
then sys.modules is inspected.
"""

from __future__ import annotations

import pkgutil
import subprocess  # only to start a fresh interpreter for the checks
import sys


import helix_ops
from core_helpers import ROOT

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


PREAMBLE = f"""
import importlib, pkgutil, sys
FORBIDDEN = {FORBIDDEN!r}
def _forbidden(name):
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
class _Blocker:
    attempts = []
    def find_spec(self, name, path=None, target=None):
        if _forbidden(name):
            self.attempts.append(name)
            raise ImportError(f"helix_ops must not import {{name}}")
        return None
# The core's allowed libraries are loaded first, with whatever the standard library pulls in for them
# (pydantic's plugin lookup imports importlib.metadata, hence email and socket); then every forbidden module
# is dropped from sys.modules, so only what helix_ops itself imports counts.
import pydantic, yaml, jsonschema, kubernetes_validate, importlib.metadata  # noqa: E401
for _name in list(sys.modules):
    if _forbidden(_name):
        del sys.modules[_name]
blocker = _Blocker()
sys.meta_path.insert(0, blocker)
def report():
    print(sorted(n for n in sys.modules if _forbidden(n)), blocker.attempts)
"""


def run_isolated(code: str) -> str:
    """Run ``code`` in a fresh interpreter with the blocker installed first; return its last output line.

    A fresh process, because other tests of the session leave threads running (Prefect's API server, rollouts)
    that import modules at any moment: hiding modules from a shared ``sys.modules`` would race with them.
    """
    out = subprocess.run([sys.executable, "-c", PREAMBLE + code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_core_modules_import_nothing_forbidden():
    names = all_core_modules()
    assert "helix_ops.cli" in names and "helix_ops.render.kubernetes" in names
    assert not any(n.startswith("helix_ops.drivers") for n in names), "drivers belong outside the core"
    code = f"for name in {names!r}: importlib.import_module(name)\nreport()\n"
    assert run_isolated(code) == "[] []"


def test_rendering_and_validation_import_nothing_forbidden():
    code = (
        "import helix_ops\n"
        "from helix_ops.descriptor import load_descriptor\n"
        "from helix_ops.render.compose import render_compose, validate_compose\n"
        "from helix_ops.render.kubernetes import render_kubernetes, validate_kubernetes\n"
        "from helix_ops.stack import build_stack\n"
        "stack = build_stack(load_descriptor(helix_ops.__path__[0] + '/../deployments/prod.yaml'))\n"
        "validate_compose(render_compose(stack))\n"
        "validate_kubernetes(render_kubernetes(stack)[:3], '1.31')\n"
        "report()\n"
    )
    assert run_isolated(code) == "[] []"


def test_the_blocker_really_blocks():
    code = (
        "try:\n    importlib.import_module('ssl')\nexcept ImportError as e:\n    print('blocked:', e)\n"
    )
    assert run_isolated(code) == "blocked: helix_ops must not import ssl"


def test_import_linter_contract_is_kept(monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / ".importlinter")) == 0
