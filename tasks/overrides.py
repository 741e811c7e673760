"""The environment's desired overrides (``helix_ops.overrides``), kept in a Prefect Variable: durable in
Prefect's database (it outlives any worker), visible and editable under Variables in the UI."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.variables import Variable

from helix_ops.descriptor import Descriptor
from helix_ops.errors import ConfigError
from helix_ops.overrides import Overrides, variable_name


@task(name="load-overrides", retries=2, retry_delay_seconds=1, timeout_seconds=30, cache_policy=NO_CACHE)
def load_overrides(desc: Descriptor) -> Overrides:
    """The kept overrides of ``desc``'s environment (none: empty)."""
    name = variable_name(desc.project, desc.environment)
    value = Variable.get(name, default=None)
    if value is None:
        return Overrides()
    try:
        return Overrides.model_validate(value)
    except ValueError as exc:
        raise ConfigError(f"variable {name}", f"is not a valid overrides value ({exc.__class__.__name__}): fix it "
                                              "under Variables in the Prefect UI, or deploy with "
                                              "reset_overrides=true") from None


@task(name="save-overrides", retries=2, retry_delay_seconds=1, timeout_seconds=30, cache_policy=NO_CACHE)
def save_overrides(desc: Descriptor, overrides: Overrides) -> None:
    """Keep ``overrides`` (minus what the descriptor already says); none left: the variable is removed."""
    name = variable_name(desc.project, desc.environment)
    kept = overrides.pruned(desc)
    if kept.is_empty:
        Variable.unset(name)
    else:
        Variable.set(name, kept.model_dump(mode="json"), overwrite=True, tags=["helix-ops", desc.environment])
