"""``helix_ops.wait``: the one deadline/poll helper. A fake clock whose sleep advances it makes every test
instant and exact; one test uses the real clock with a tiny deadline."""

from __future__ import annotations

import time

import pytest

from helix_ops.errors import HelixOpsError, WaitTimeout
from helix_ops.wait import Deadline, Poll, as_deadline, wait_until


class FakeClock:
    """Monotonic time that only moves when slept on (or when a test moves it)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds

    def deadline(self, seconds: float) -> Deadline:
        return Deadline(seconds, clock=self, sleep=self.sleep)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_returns_the_first_truthy_value_without_sleeping(clock):
    assert wait_until("x", lambda: {"ready": 1}, clock.deadline(10)) == {"ready": 1}
    assert clock.sleeps == []


def test_tries_again_every_interval_until_truthy(clock):
    answers = iter([None, 0, "", "up"])
    assert wait_until("x", lambda: next(answers), clock.deadline(10), interval_s=0.5) == "up"
    assert clock.sleeps == [0.5, 0.5, 0.5]


def test_a_timeout_is_wait_timeout_with_what_and_the_last_falsy_result(clock):
    with pytest.raises(WaitTimeout) as err:
        wait_until("redis on 127.0.0.1:1", lambda: [], clock.deadline(2), interval_s=0.5)
    assert isinstance(err.value, HelixOpsError)
    assert err.value.what == "redis on 127.0.0.1:1"
    assert err.value.last_seen == "[]"
    assert "timed out waiting for redis on 127.0.0.1:1" in str(err.value)


def test_an_exception_is_not_yet_and_becomes_last_seen(clock):
    def check():
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(WaitTimeout) as err:
        wait_until("x", check, clock.deadline(1))
    assert err.value.last_seen == "ConnectionRefusedError: [Errno 111] Connection refused"


def test_the_last_try_decides_last_seen(clock):
    answers = iter([False, RuntimeError("starting")] * 100)

    def check():
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    with pytest.raises(WaitTimeout) as err:  # tries at 0 (False), 1 (raises), 2 (False)
        wait_until("x", check, clock.deadline(2), interval_s=1)
    assert err.value.last_seen == "False"


def test_an_exception_recovered_from_is_forgotten(clock):
    answers = iter([RuntimeError("starting"), "ok"])

    def check():
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    assert wait_until("x", check, clock.deadline(5)) == "ok"


def test_an_exception_outside_retry_on_propagates_at_once(clock):
    def check():
        raise KeyError("gone")

    with pytest.raises(KeyError):
        wait_until("x", check, clock.deadline(10), retry_on=(ConnectionError,))
    assert clock.sleeps == []
    with pytest.raises(KeyError):
        wait_until("x", check, clock.deadline(10), retry_on=())


def test_a_retry_on_exception_is_waited_on(clock):
    def check():
        raise ConnectionError("refused")

    with pytest.raises(WaitTimeout, match="refused"):
        wait_until("x", check, clock.deadline(1), retry_on=(ConnectionError,))


def test_describe_is_called_once_at_the_timeout(clock):
    calls = []

    def describe():
        calls.append(clock.now)
        return {"status": "created"}

    with pytest.raises(WaitTimeout) as err:
        wait_until("x", lambda: False, clock.deadline(3), interval_s=1, describe=describe)
    assert err.value.last_seen == {"status": "created"}
    assert calls == [103.0]


def test_describe_is_not_called_when_the_last_try_raised(clock):
    def check():
        raise OSError("no route")

    with pytest.raises(WaitTimeout) as err:
        wait_until("x", check, clock.deadline(1), describe=lambda: pytest.fail("describe called"))
    assert err.value.last_seen == "OSError: no route"


def test_a_failing_describe_still_raises_the_timeout(clock):
    def describe():
        raise RuntimeError("logs gone")

    with pytest.raises(WaitTimeout) as err:
        wait_until("x", lambda: None, clock.deadline(1), describe=describe)
    assert "describe failed: RuntimeError: logs gone" in err.value.last_seen


def test_the_last_try_is_at_the_deadline_and_nothing_sleeps_past_it(clock):
    tries = []

    def check():
        tries.append(clock.now - 100)
        return False

    with pytest.raises(WaitTimeout):
        wait_until("x", check, clock.deadline(1), interval_s=0.4)
    assert tries == pytest.approx([0, 0.4, 0.8, 1.0])  # the last pause is cut short to 0.2
    assert clock.now == pytest.approx(101.0)


def test_a_zero_deadline_checks_once(clock):
    tries = []
    with pytest.raises(WaitTimeout):
        wait_until("x", lambda: tries.append(1), clock.deadline(0))
    assert tries == [1] and clock.sleeps == []
    assert wait_until("x", lambda: "yes", clock.deadline(0)) == "yes"


def test_a_slow_check_past_the_deadline_is_not_tried_again(clock):
    tries = []

    def slow():
        tries.append(1)
        clock.now += 5
        return False

    with pytest.raises(WaitTimeout):
        wait_until("x", slow, clock.deadline(2))
    assert tries == [1] and clock.sleeps == []


def test_a_shared_deadline_is_one_budget_for_several_waits(clock):
    deadline = clock.deadline(3)
    answers = iter([False, False, True])
    assert wait_until("first", lambda: next(answers), deadline, interval_s=1) is True
    with pytest.raises(WaitTimeout) as err:
        wait_until("second", lambda: False, deadline, interval_s=1)
    assert err.value.what == "second"
    assert clock.now == pytest.approx(103.0)  # 2 s for the first wait, 1 s left for the second
    assert as_deadline(deadline) is deadline
    assert as_deadline(5).seconds == 5


def test_the_real_clock_with_a_tiny_deadline():
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as err:
        wait_until("never", lambda: 0, 0.05, interval_s=0.01)
    elapsed = time.monotonic() - started
    assert 0.05 <= elapsed < 1, elapsed
    assert err.value.last_seen == "0"


# --- Deadline -------------------------------------------------------------------------------------------


def test_deadline_remaining_and_expired(clock):
    d = clock.deadline(2)
    assert d.remaining() == 2 and not d.expired()
    clock.now += 1.5
    assert d.remaining() == pytest.approx(0.5)
    clock.now += 1
    assert d.remaining() == 0 and d.expired()
    assert "2s" in repr(d)


def test_pause_sleeps_cut_short_then_reports_the_deadline(clock):
    d = clock.deadline(1)
    assert d.pause(0.7) is True
    assert d.pause(0.7) is True  # cut short to 0.3
    assert clock.sleeps == pytest.approx([0.7, 0.3])
    assert d.pause(0.7) is False  # expired: no sleep
    assert len(clock.sleeps) == 2


def test_a_loop_that_goes_on_after_its_deadline(clock):
    """The lease / SIGTERM-grace pattern: stop waiting at the deadline without failing."""
    d = clock.deadline(3)
    looks = 0
    while True:
        looks += 1
        if not d.pause(1):
            break
    assert looks == 4 and clock.now == pytest.approx(103.0)


# --- Poll -----------------------------------------------------------------------------------------------


def test_poll_raises_with_what_the_body_saw(clock):
    seen = iter([{"ready": 0}, {"ready": 1}, {"ready": 1}])
    with pytest.raises(WaitTimeout) as err:
        for poll in clock.deadline(2).polls("web to roll out within 2s", 1):
            assert isinstance(poll, Poll)
            poll.seen = next(seen)
    assert err.value.what == "web to roll out within 2s"
    assert err.value.last_seen == {"ready": 1}
    assert poll.tries == 3


def test_poll_default_seen_and_early_give_up(clock):
    with pytest.raises(WaitTimeout) as err:
        for _ in clock.deadline(1).polls("x", 1, seen="no answer yet"):
            pass
    assert err.value.last_seen == "no answer yet"

    with pytest.raises(WaitTimeout, match="rollout failed"):  # the body's own error, at once
        for _ in clock.deadline(100).polls("x"):
            raise WaitTimeout("x (rollout failed)", {"reason": "ProgressDeadlineExceeded"})
    assert clock.now == pytest.approx(101.0)


def test_poll_body_returns_and_reads_the_time_left(clock):
    def wait() -> float:
        deadline = clock.deadline(10)
        for poll in deadline.polls("x", 2):
            if poll.tries == 3:
                return deadline.remaining()
        raise AssertionError("unreachable")

    assert wait() == pytest.approx(6.0)
