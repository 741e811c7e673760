"""Who must say yes before an environment changes (pure): the descriptor's ``approval`` policy, and the
fingerprint that binds an answer to the plan it was given for.

A descriptor says, for its environment::

    approval:
      when: on-change        # always | on-change | never (the default)
      timeout: 1h            # how long a run waits for the answer (s, m, h, d)
      actions: [deploy, upgrade, scale, restore]   # which flows ask (default: every change)
      audit: true            # deploy: the security audit must pass before the question is asked

``on-change`` asks when the plan changes something; ``always`` asks also for a no-op plan; ``never`` applies
without asking. No environment name is special: a ``prod`` descriptor without ``approval`` asks nobody.

An answer approves one plan: :func:`fingerprint` of what the flow planned. The change gate
(``flows/gate.py``) plans again under the environment lease after the answer, and applies only when the plan
is still the one that was approved.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool, StrictStr

ACTIONS = ("deploy", "upgrade", "scale", "restore", "rotate", "prune")
"""Every flow that changes an environment, as the policy and the change records name it."""
WHEN = ("always", "on-change", "never")

_DURATION = re.compile(r"^([1-9][0-9]{0,5})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TIMEOUT_S = 7 * 86400


def duration_s(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"2d"`` → seconds (at most 7 days)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30m, 1h or 2d (a number and one of s, m, h, d)")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds > MAX_TIMEOUT_S:
        raise ValueError(f"{text!r} is longer than 7d: nobody is waiting that long; use at most 7d")
    return seconds


def _check_duration(text: str) -> str:
    duration_s(text)
    return text


Duration = Annotated[StrictStr, AfterValidator(_check_duration)]
Action = Literal[ACTIONS]  # type: ignore[valid-type] - built from the one tuple


class ApprovalPolicy(BaseModel):
    """The descriptor's ``approval``: when an operator must approve a change of this environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    when: Literal[WHEN] = "never"  # type: ignore[valid-type]
    timeout: Duration = "1h"
    actions: tuple[Action, ...] = ACTIONS
    audit: StrictBool = False

    @property
    def timeout_s(self) -> int:
        return duration_s(self.timeout)

    def asks(self, action: str) -> bool:
        """Whether ``action`` may need an answer at all (the gate then plans once before the lease)."""
        return self.when != "never" and action in self.actions

    def required(self, action: str, is_noop: bool) -> bool:
        """Whether a plan of ``action`` (a no-op or not) waits for an operator's answer."""
        return self.asks(action) and (self.when == "always" or not is_noop)


def fingerprint(plan: Any) -> str:
    """A short, stable digest of a plan's JSON-ready data: equal plans (in any process) give equal prints."""
    text = json.dumps(plan, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def approval_key(action: str, plan: Any) -> str:
    """The key one question is asked under: a resumed run that plans the same again gets the same answer;
    a run whose plan changed asks again."""
    return f"approve-{action}-{fingerprint(plan)}"
