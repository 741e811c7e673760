"""Helpers for tests and benchmarks that deploy Helix on the test bed: a copy of the local descriptor with its
own project and host port, and the identity of every container of a project."""

from __future__ import annotations

from pathlib import Path

import yaml

from testbed import procs
from testbed.paths import REPO


def local_descriptor(dest: Path, project: str, **service_tags: str) -> Path:
    """Write ``deployments/local.yaml`` with ``project``, a free host port and image tags overridden."""
    data = yaml.safe_load((REPO / "deployments" / "local.yaml").read_text())
    data["project"] = project
    data["services"]["nginx"]["host_port"] = procs.free_port()
    for service, tag in service_tags.items():
        data["services"][service.replace("_", "-")]["image"]["tag"] = tag
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def container_ids(client, project: str) -> dict[str, str]:
    """Container name → (id, start time) of every container of ``project``."""
    out = {}
    for c in client.containers.list(all=True, filters={"label": f"helix-ops.project={project}"}):
        out[c.name] = (c.id, c.attrs["State"]["StartedAt"], c.status)
    return out
