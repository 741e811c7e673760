"""The flows' parameter types: what the Prefect UI renders as form fields (choices, bounded numbers, patterns) and
what the Prefect API checks before a run exists (a deployment enforces its flow's parameter schema), so a typo is
refused at ``prefect deployment run`` or in the UI's Run form, not mid-run.

Every allowed value comes from the core's one definition (the service names of ``helix_ops.guide``, the
credentials of ``helix_ops.rotation``, the backup id of ``helix_ops.backup``, the environment name of
``helix_ops.descriptor``); the Literals are built from those tuples, not spelt a second time. The flows still run
their own checks (the scaling rules, the backup id's time, …): these types only move the simple ones earlier.

``run_name`` gives each flow a ``flow_run_name`` that says what the run does (``scale-prod-mcp-discovery-3``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field

from helix_ops import guide
from helix_ops.backup import BACKUP_ID_PATTERN
from helix_ops.descriptor import ENV_NAME_PATTERN, IMAGE_REF_PATTERN, MAX_APP_REPLICAS
from helix_ops.rotation import CREDENTIALS

NEO4J_STRATEGIES = ("auto", "logical", "dump")
"""backup-helix's ``neo4j_strategy`` (unset: the descriptor's ``backup.neo4j_strategy``)."""
COMPONENTS = ("neo4j", "redis")
"""What one backup holds, in order; backup-helix's and restore-helix's ``components``."""
NEO4J_LOADS = ("import", "transactional")
"""restore-helix's ``neo4j_load`` of a logical backup."""

EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN, description="the environment (deployments/<env>.yaml)")]
ServiceName = Literal[guide.SERVICE_NAMES]  # type: ignore[valid-type] - built from the guide's one tuple
AppService = Literal[guide.APP_SERVICES]  # type: ignore[valid-type]
Replicas = Annotated[int, Field(ge=1, le=MAX_APP_REPLICAS)]
BackupId = Annotated[str, Field(pattern=BACKUP_ID_PATTERN, description="<env>-<YYYYMMDDTHHMMSSZ>-<6 hex>")]
Neo4jStrategy = Literal[NEO4J_STRATEGIES]  # type: ignore[valid-type]
Component = Literal[COMPONENTS]  # type: ignore[valid-type]
Neo4jLoad = Literal[NEO4J_LOADS]  # type: ignore[valid-type]
Credential = Literal[CREDENTIALS]  # type: ignore[valid-type]
Parallelism = Annotated[int, Field(ge=1)]
ImageRef = Annotated[str, Field(pattern=IMAGE_REF_PATTERN, max_length=400,
                                description="a tag (1.4.2), or repository:tag (ghcr.io/acme/dashboard:1.4.2)")]
KeepCount = Annotated[int, Field(ge=0)]
"""How many backups a retention bucket keeps (the descriptor's ``backup.retention`` bounds it further)."""


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "+".join(str(v) for v in value)
    return str(value)


def descriptor_environment(path: Any) -> str | None:
    """The environment a descriptor file names, for a run's name; None when it cannot tell. Read as the flow
    reads it (:func:`helix_ops.descriptor.load_descriptor`: bounded, a FIFO is not waited on); a run's name
    must never fail its run, so whatever goes wrong here leaves the deployment's ``env``."""
    from helix_ops.descriptor import load_descriptor

    try:
        return load_descriptor(str(path)).environment
    except Exception:  # noqa: BLE001 - naming a run never fails it; the flow reports a bad descriptor itself
        return None


def format_run_name(template: str, unset: dict[str, str], parameters: dict[str, Any]) -> str:
    """``template`` with ``parameters`` (see :func:`run_name`). A run given a ``descriptor`` acts on the
    environment that file names, whatever its deployment's ``env``; the name says that one."""
    given = {k: _shown(v) for k, v in parameters.items() if v is not None}
    if parameters.get("descriptor") is not None and (named := descriptor_environment(parameters["descriptor"])):
        given["env"] = named
    return template.format_map({**unset, **given})


def run_name(template: str, **unset: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable: ``template`` formatted with the run's parameters (lists joined by ``+``,
    dicts as ``key=value,…``); a parameter that is None or missing is shown as ``unset[name]``, e.g.
    ``run_name("restore-{env}-{backup_id}", backup_id="newest")``. ``{env}`` is the environment of the
    ``descriptor`` parameter when one is given (the deployment's ``env`` is then not what the run acts on)."""

    def name() -> str:
        from prefect.runtime import flow_run

        return format_run_name(template, unset, dict(flow_run.parameters or {}))

    name.__qualname__ = name.__name__ = f"run_name({template!r})"
    return name
