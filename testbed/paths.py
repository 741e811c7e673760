"""Where the test bed keeps its state: built artifacts (shared, cached) and per-run folders."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAVEN_DIR = REPO / "testbed" / "maven"
NEO4J_LIB = MAVEN_DIR / "target" / "neo4j-lib"
S3PROXY_JAR = MAVEN_DIR / "target" / "s3proxy" / "s3proxy.jar"
PROBE_DIR = REPO / "testbed" / "probe"
IMAGES_DIR = REPO / "testbed" / "images"


def home() -> Path:
    """Root of all test-bed state; ``HELIX_TESTBED_HOME`` overrides ``<repo>/.testbed``."""
    path = Path(os.environ.get("HELIX_TESTBED_HOME", REPO / ".testbed"))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def runs_dir() -> Path:
    path = home() / "runs"
    path.mkdir(exist_ok=True)
    return path
