"""The environment lease (``flows/lease.py``) against Prefect's test harness (no repossessor runs there, so a
killed holder's slot is never freed by the server): a holder that is alive is waited for, a holder that was
SIGKILLed is released by the next holder at once, by every flow that takes the lease (not only backup-helix);
a holder whose run is already Cancelled but whose process still runs (cleaning up) is waited for until that
process ends; a TimeoutError from the body is the body's, not LockHeld.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.bed

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from prefect import flow
from flows.lease import environment_lease

@flow(name="lease-holder")
def hold(environment: str) -> None:
    with environment_lease(environment, "the victim", ttl_s=600, wait_s=30):
        print("held", flush=True)
        time.sleep(600)

hold(sys.argv[1])
"""


def _active_slots(environment: str) -> int:
    from prefect import get_client

    from flows.lease import lease_name

    with get_client(sync_client=True) as client:
        return int(client.read_global_concurrency_limit_by_name(lease_name(environment)).active_slots)


def _start_holder(environment: str, log: Path) -> subprocess.Popen:
    """A flow process (its own session) that holds ``environment``'s lease and sleeps; returned once it holds."""
    from prefect.settings import PREFECT_API_URL

    with open(log, "w") as out:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(repo=str(REPO)), environment], cwd=REPO,
                                  env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while "held" not in log.read_text() and time.monotonic() < deadline:
        if holder.poll() is not None:
            raise AssertionError(f"the holder ended:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    if "held" not in log.read_text():
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(30)
        raise AssertionError(f"the holder took no lease within 120 s:\n{log.read_text()[-3000:]}")
    return holder


@pytest.mark.timeout(300)
def test_a_killed_flows_lease_is_released_by_the_next_holder_without_waiting(prefect_harness, tmp_path):
    from prefect.variables import Variable

    from helix_ops.errors import LockHeld
    from flows.lease import environment_lease, holder_variable

    environment = f"lease-{secrets.token_hex(3)}"
    victim = _start_holder(environment, tmp_path / "holder.log")
    try:
        record = Variable.get(holder_variable(environment), default=None)
        assert record and record["pid"] == victim.pid and record["lease_id"] and record["flow_run_id"], record

        # Alive: waited for, never released.
        with pytest.raises(LockHeld):
            with environment_lease(environment, "a run while the holder lives", wait_s=2):
                pass
        assert _active_slots(environment) == 1
        assert Variable.get(holder_variable(environment), default=None) == record

        os.killpg(victim.pid, signal.SIGKILL)  # no finally, no release; its flow run stays Running
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(30)
    assert victim.returncode == -signal.SIGKILL
    assert _active_slots(environment) == 1  # the server did not free it

    t0 = time.monotonic()
    with environment_lease(environment, "the next run", wait_s=60):
        took = time.monotonic() - t0
        mine = Variable.get(holder_variable(environment), default=None)
        assert mine and mine["pid"] == os.getpid() and mine["owner"] == "the next run", mine
        assert _active_slots(environment) == 1
    assert took < 15, f"the next holder waited {took:.0f}s for the killed holder's lease"
    assert _active_slots(environment) == 0
    assert Variable.get(holder_variable(environment), default=None) is None


@pytest.mark.timeout(120)
def test_a_timeout_error_from_the_body_propagates_unchanged_and_the_lease_is_released(prefect_harness):
    from prefect.variables import Variable

    from flows.lease import environment_lease, holder_variable

    environment = f"lease-{secrets.token_hex(3)}"
    own = TimeoutError("the caller's own wait ran out")
    with pytest.raises(TimeoutError) as raised:
        with environment_lease(environment, "a run whose own work times out", wait_s=5):
            raise own
    assert raised.value is own  # not LockHeld: the lease was free and taken
    assert _active_slots(environment) == 0
    assert Variable.get(holder_variable(environment), default=None) is None


@pytest.mark.timeout(300)
def test_a_cancelled_holder_whose_process_still_cleans_up_is_waited_for_until_it_ends(prefect_harness, tmp_path):
    from prefect import get_client
    from prefect.states import Cancelled
    from prefect.variables import Variable

    from helix_ops.errors import LockHeld
    from flows.lease import environment_lease, holder_variable

    environment = f"lease-{secrets.token_hex(3)}"
    victim = _start_holder(environment, tmp_path / "holder.log")
    ended_at: list[float] = []

    def end_victim() -> None:  # its cleanup done, the process ends without releasing (killed after its grace)
        ended_at.append(time.monotonic())
        os.killpg(victim.pid, signal.SIGKILL)

    timer = threading.Timer(4, end_victim)
    try:
        record = Variable.get(holder_variable(environment), default=None)
        assert record and record["pid"] == victim.pid and record["flow_run_id"], record
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(uuid.UUID(record["flow_run_id"]), Cancelled(), force=True)
            assert client.read_flow_run(uuid.UUID(record["flow_run_id"])).state.is_final()
        assert victim.poll() is None and _active_slots(environment) == 1

        # Its run is final but its process lives (restarting the writer it stopped, say): not gone, waited for.
        with pytest.raises(LockHeld):
            with environment_lease(environment, "a run while the cancelled holder cleans up", wait_s=3):
                pass
        assert _active_slots(environment) == 1
        assert Variable.get(holder_variable(environment), default=None) == record

        # Its process ends while the next run waits: released then, within the next run's deadline.
        timer.start()
        with environment_lease(environment, "the next run", wait_s=60):
            took = time.monotonic()
            mine = Variable.get(holder_variable(environment), default=None)
            assert mine and mine["pid"] == os.getpid() and mine["owner"] == "the next run", mine
        assert ended_at and took >= ended_at[0], "the lease was taken before the holder's process ended"
        assert took - ended_at[0] < 15, f"the next run took the lease {took - ended_at[0]:.0f}s after the holder ended"
        assert _active_slots(environment) == 0
    finally:
        timer.cancel()
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(30)
