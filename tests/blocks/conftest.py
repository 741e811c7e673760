"""Fixtures for the block tests: every test here talks to the session's real Prefect API
(``prefect_harness``), and gets descriptors whose block names are unique to the test, so tests never see
each other's blocks."""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _prefect_api(prefect_harness):
    """Every block test runs against the real local Prefect API."""
    yield


def unique_descriptor_text(env: str, suffix: str) -> str:
    """``deployments/<env>.yaml`` with each credential block name suffixed by ``suffix``."""
    text = (REPO / "deployments" / f"{env}.yaml").read_text(encoding="utf-8")
    head, sep, creds = text.partition("\ncredentials:\n")
    assert sep, f"{env}.yaml has no credentials section"
    creds = re.sub(r"^(  [a-z0-9]+: )(helix-[a-z0-9-]+)$", rf"\g<1>\g<2>-{suffix}", creds, flags=re.M)
    return head + sep + creds


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def env_root(tmp_path, suffix, monkeypatch):
    """A cwd holding ``deployments/{local,staging}.yaml`` with test-unique block names; returns it."""
    (tmp_path / "deployments").mkdir()
    for env in ("local", "staging"):
        (tmp_path / "deployments" / f"{env}.yaml").write_text(unique_descriptor_text(env, suffix), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def local_descriptor(env_root):
    from helix_ops.descriptor import load_descriptor

    return load_descriptor(env_root / "deployments" / "local.yaml")


@pytest.fixture
def all_logs(caplog):
    """Capture every log record (DEBUG and up, Prefect's and httpx's included)."""
    caplog.set_level(logging.DEBUG)
    for name in ("prefect", "httpx", "httpcore"):
        logging.getLogger(name).addHandler(caplog.handler)
    yield caplog
    for name in ("prefect", "httpx", "httpcore"):
        logging.getLogger(name).removeHandler(caplog.handler)


def assert_no_secret(texts, values) -> None:
    """No value of ``values`` occurs in any of ``texts``."""
    for value in values:
        assert value, "empty secret in the test's list"
        for text in texts:
            assert value not in text, "a secret value leaked"
