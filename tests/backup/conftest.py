"""Fixtures shared by the backup modules that need a deployed local stack: it is deployed ONCE per session
(a deploy is the slowest part of these tests) and removed at the end."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def helix_stack(bed, engine, images, prefect_harness, tmp_path_factory):
    """One full deploy of the local stack (own project and port): ``{path, project, result}``."""
    from blocks.bootstrap import main as bootstrap
    from drivers.engine import EngineDriver
    from flows.deploy import deploy_helix
    from testbed.helix import local_descriptor

    project = f"bk{bed.run_id.split('-')[-1]}"
    path = local_descriptor(tmp_path_factory.mktemp("backup") / "local.yaml", project)
    assert bootstrap(["--descriptor", str(path)]) == 0
    try:
        result = deploy_helix(env="local", descriptor=str(path), engine_url=engine.base_url,
                              container_labels=bed.container_labels())
        assert result["unhealthy"] == []
        yield {"path": path, "project": project, "result": result}
    finally:
        EngineDriver.connect(engine.base_url, project, "local").remove_project()
