"""One Helix stack for the audit, provision and rotation tests: provision-helix on a fresh project, then
deploy-helix (the session's only full deploy in tests/rotate), removed at the end of the session.

Its credential blocks have names of their own (``rt<run>-…``), so rotating them touches no other test's."""

from __future__ import annotations

import pytest
import yaml

from testbed.helix import local_descriptor


def own_blocks(path, prefix: str) -> None:
    data = yaml.safe_load(path.read_text())
    data["credentials"] = {k: f"{prefix}-{k}" for k in ("neo4j", "redis", "dashboard", "anthropic")}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="session")
def helix_env(bed, engine, images, prefect_harness, tmp_path_factory):
    from drivers.engine import EngineDriver
    from flows.deploy import deploy_helix
    from flows.provision import provision_helix

    run = bed.run_id.split("-")[-1]
    project = f"rt{run}"
    folder = tmp_path_factory.mktemp("helix-env")
    path = local_descriptor(folder / "local.yaml", project)
    own_blocks(path, f"rt{run}")
    env_file = folder / ".env"
    try:
        provisioned = provision_helix(env="local", descriptor=str(path), engine_url=engine.base_url,
                                      env_file=str(env_file), container_labels=bed.container_labels())
        deployed = deploy_helix(env="local", descriptor=str(path), engine_url=engine.base_url,
                                container_labels=bed.container_labels())
        yield {"path": path, "project": project, "provisioned": provisioned, "deployed": deployed,
               "env_file": env_file}
    finally:
        EngineDriver.connect(engine.base_url, project, "local").remove_project()
