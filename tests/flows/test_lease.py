"""The environment lease (``tasks/lease.py``) against Prefect's test harness (no repossessor runs there, so a
killed holder's slot is never freed by the server): a holder that is alive is waited for, a holder that was
SIGKILLed is released by the next holder at once, by every flow that takes the lease (not only backup-helix).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.bed

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from prefect import flow
from tasks.lease import environment_lease

@flow(name="lease-holder")
def hold(environment: str) -> None:
    with environment_lease(environment, "the victim", ttl_s=600, wait_s=30):
        print("held", flush=True)
        time.sleep(600)

hold(sys.argv[1])
"""


def _active_slots(environment: str) -> int:
    from prefect import get_client

    from tasks.lease import lease_name

    with get_client(sync_client=True) as client:
        return int(client.read_global_concurrency_limit_by_name(lease_name(environment)).active_slots)


@pytest.mark.timeout(300)
def test_a_killed_flows_lease_is_released_by_the_next_holder_without_waiting(prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL
    from prefect.variables import Variable

    from helix_ops.errors import LockHeld
    from tasks.lease import environment_lease, holder_variable

    environment = f"lease-{secrets.token_hex(3)}"
    log = tmp_path / "holder.log"
    with open(log, "w") as out:
        victim = subprocess.Popen([sys.executable, "-c", HOLDER.format(repo=str(REPO)), environment], cwd=REPO,
                                  env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "held" not in log.read_text() and time.monotonic() < deadline:
            assert victim.poll() is None, f"the holder ended:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        assert "held" in log.read_text(), f"the holder took no lease within 120 s:\n{log.read_text()[-3000:]}"
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
