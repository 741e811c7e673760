"""The environment lease: runs that change one environment never overlap.

Built on Prefect's global concurrency limits with leases: a limit of 1 per environment
(``helix-env-<name>``); the holder's lease is renewed while it runs and expires ``ttl_s`` after a crashed
process stops renewing it, so a crash cannot hold an environment forever.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_client
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run

from helix_ops.errors import LockHeld


def lease_name(environment: str) -> str:
    return f"helix-env-{environment}"


@contextmanager
def environment_lease(environment: str, owner: str, ttl_s: float = 120, wait_s: float = 1800) -> Iterator[None]:
    """Hold ``environment``'s lease for the body; wait up to ``wait_s`` for another holder to finish.

    Raises LockHeld (naming the environment and this run) when the lease is not free within ``wait_s``.
    """
    name = lease_name(environment)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit=1)
    run_id = flow_run.get_id()
    holder = ConcurrencyLeaseHolder(type="flow_run", id=uuid.UUID(str(run_id)) if run_id else uuid.uuid4())
    try:
        with concurrency(name, occupy=1, timeout_seconds=wait_s, lease_duration=max(ttl_s, 60), strict=True,
                         holder=holder):
            yield
    except TimeoutError as exc:
        raise LockHeld(environment, f"another run (this is {owner})", f"its lease ends (waited {wait_s:.0f}s)") from exc


def break_lease(environment: str) -> int:
    """Free ``environment``'s lease held by a crashed or stuck run; returns how many slots were taken."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    name = lease_name(environment)
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except Exception:  # noqa: BLE001 - no limit yet: nothing to break
            return 0
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
        return int(limit.active_slots)
