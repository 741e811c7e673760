"""One way to wait: a :class:`Deadline` on the monotonic clock, :class:`Poll` (a loop body tried again until
the deadline) and :func:`wait_until` (a ``check`` called until it returns something truthy).

A missed deadline is always :class:`~helix_ops.errors.WaitTimeout` ``(what, last_seen)``; every try happens,
at the latest, at the deadline itself (the last pause is cut short), and there is always at least one try,
so a zero deadline means "check once".

* ``wait_until(what, check, deadline_s)``: the common case. ``check`` may raise (the exception is "not yet"
  unless ``retry_on`` says otherwise, and it becomes ``last_seen``); a falsy result is "not yet" too, and
  ``describe()`` (called once, at the timeout) or the result's ``repr`` becomes ``last_seen``::

      wait_until(f"redis on 127.0.0.1:{port}", ping, 30, interval_s=0.5)

* ``for poll in Deadline(s).polls(what, interval_s): ...``: when the body needs more than a check: give up
  early with another error (a container that exited, a rollout that failed), report structured state
  (``poll.seen = {...}``), read ``poll.deadline.remaining()`` (a connection timeout that must not outlast the
  deadline) or keep state between tries. The body returns (or ``break``s) when done; when the deadline has
  passed, the iteration itself raises ``WaitTimeout(what, poll.seen)``::

      for poll in Deadline(deadline_s).polls(f"{kind}/{name} to roll out", 0.5):
          done, failure, seen = status()
          if done:
              return seen
          if failure:
              raise WaitTimeout(f"{kind}/{name} to roll out ({failure})", seen)
          poll.seen = seen

* ``Deadline.pause(interval_s)``: for a loop that does not fail at its deadline but goes on (stop waiting for
  a lease holder, then decide; SIGTERM's grace, then SIGKILL): ``if not deadline.pause(1): break``. Any
  interval (a backoff too) can be paused this way. One ``Deadline`` can be shared by several waits that have
  one budget between them (load an RDB, then rewrite the AOF, within one ``deadline_s``).

Why not tenacity (which drivers/neo4j_users.py uses for a retried connection): its model is "retry a call
until it stops raising", with the last attempt wrapped in a ``RetryError``. The waits here are polls of
state: most give up early with their own error, report the last *observed state* (a dict of replicas, a
LASTSAVE) rather than an exception, need the time left inside the body, share one budget between waits or
simply stop waiting without failing. Expressing that with stop/retry predicates and callbacks is longer than
this module, and the result would still need translating into ``WaitTimeout``. Here it is about 65 lines, with an
injectable clock and sleep so that the tests need no real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from helix_ops.errors import WaitTimeout

T = TypeVar("T")

NOTHING_YET = "nothing yet"


class Deadline:
    """``seconds`` from now on a monotonic clock. ``clock`` and ``sleep`` can be replaced (tests)."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.seconds = float(seconds)
        self._clock = clock
        self._sleep = sleep
        self.end = clock() + self.seconds

    def __repr__(self) -> str:
        return f"Deadline({self.seconds:g}s, {self.remaining():.3f}s left)"

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.end - self._clock())

    def expired(self) -> bool:
        return self._clock() >= self.end

    def pause(self, interval_s: float) -> bool:
        """Sleep ``interval_s``, cut short at the deadline, and return True; once the deadline has passed,
        return False without sleeping. ``while ...: if not deadline.pause(1): break``."""
        left = self.end - self._clock()
        if left <= 0:
            return False
        self._sleep(max(0.0, min(interval_s, left)))
        return True

    def polls(self, what: str, interval_s: float = 0.25, seen: object = NOTHING_YET) -> Poll:
        """Tries of a loop body every ``interval_s`` until this deadline; see :class:`Poll`."""
        return Poll(what, self, interval_s, seen)


class Poll:
    """An iterator of tries (each yields this object): the first at once, then one every ``interval_s`` until
    the deadline. When the deadline has passed, ``next()`` raises ``WaitTimeout(what, last_seen)``:
    ``describe()`` if it is set (called once, then), else ``seen``. The loop body sets ``seen`` (what it
    observed) and ends the loop by returning, breaking or raising its own error."""

    def __init__(self, what: str, deadline: Deadline, interval_s: float = 0.25, seen: object = NOTHING_YET) -> None:
        self.what = what
        self.deadline = deadline
        self.interval_s = interval_s
        self.seen = seen
        self.describe: Callable[[], object] | None = None
        self.tries = 0

    def __iter__(self) -> Poll:
        return self

    def __next__(self) -> Poll:
        if self.tries and not self.deadline.pause(self.interval_s):
            raise WaitTimeout(self.what, self._last_seen())
        self.tries += 1
        return self

    def _last_seen(self) -> object:
        if self.describe is None:
            return self.seen
        try:
            return self.describe()
        except Exception as exc:  # noqa: BLE001 - the timeout is the error to report, not describe's
            return f"{self.seen} (describe failed: {type(exc).__name__}: {exc})"


def as_deadline(deadline: float | Deadline) -> Deadline:
    """``deadline`` itself when it is a :class:`Deadline` (shared), else a new one of that many seconds."""
    return deadline if isinstance(deadline, Deadline) else Deadline(deadline)


def wait_until(what: str, check: Callable[[], T], deadline_s: float | Deadline, interval_s: float = 0.25,
               describe: Callable[[], object] | None = None, *,
               retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception) -> T:
    """Call ``check`` until it returns something truthy (returned), or raise WaitTimeout after ``deadline_s``
    (seconds, or a shared :class:`Deadline`).

    ``check`` may raise: an exception of ``retry_on`` (any ``Exception`` by default; ``()`` for none) is
    "not yet" and ``"Type: message"`` becomes ``last_seen`` if it was the last try; any other propagates at
    once (the way to give up early). After a falsy result, ``last_seen`` is ``describe()`` (called once, at
    the timeout) or ``repr(result)``.
    """
    poll = as_deadline(deadline_s).polls(what, interval_s)
    for _ in poll:
        try:
            result = check()
        except retry_on as exc:
            poll.seen, poll.describe = f"{type(exc).__name__}: {exc}", None
            continue
        if result:
            return result
        poll.seen, poll.describe = repr(result), describe
    raise AssertionError("unreachable: a Poll ends by raising WaitTimeout")  # pragma: no cover
