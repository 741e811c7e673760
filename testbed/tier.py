"""The test tiers: ``make check`` (no server) and ``make test`` (everything).

``make check`` sets ``HELIX_TIER=check``. Then nothing may start a server: :func:`refuse_servers` raises in
every place the test bed starts one (:meth:`testbed.bed.Bed.create` and each of its parts), the session fixtures
that give a server fail with what to do, and Prefect may not start its ephemeral API (a server too). A test that
needs a server is marked ``bed`` (``tests/conftest.py`` marks every test whose fixtures reach one of
:data:`SERVER_FIXTURES`), and ``make check`` deselects ``-m bed``; a test that reaches a server any other way
fails in the check tier instead of quietly starting one.
"""

from __future__ import annotations

import os

#: the session fixtures that start (or are) a real server; every fixture that needs a server depends on one
SERVER_FIXTURES = frozenset({"bed", "prefect_harness"})
TIER_ENV = "HELIX_TIER"


class ServerRefused(RuntimeError):
    """Something tried to start a server in the check tier."""


def check_tier() -> bool:
    """True inside ``make check`` (``HELIX_TIER=check``)."""
    return os.environ.get(TIER_ENV, "").strip().lower() == "check"


def refuse_servers(what: str) -> None:
    """Raise :class:`ServerRefused` in the check tier: ``what`` would start a server."""
    if check_tier():
        raise ServerRefused(
            f"{what} starts a server, but this is the check tier ({TIER_ENV}=check: no servers). "
            "Mark the test `@pytest.mark.bed` (or give it a server fixture such as `bed`) so that it runs in "
            "`make test`, or make it work without the server.")


def no_ephemeral_prefect() -> dict[str, str]:
    """Settings that make Prefect refuse to start its ephemeral API in this process and its children."""
    return {"PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false", "PREFECT_API_URL": ""}
