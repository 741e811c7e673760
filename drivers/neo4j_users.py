"""Neo4j native users, live: what the two-user rotation needs on Community and Enterprise.

Checked on the test bed's Neo4j 5.26 Community: ``CREATE USER … IF NOT EXISTS SET PASSWORD $p CHANGE NOT
REQUIRED``, ``ALTER USER … SET PASSWORD $p CHANGE NOT REQUIRED`` (any user may change another's: Community
has no roles) and ``DROP USER … IF EXISTS`` work; ``ALTER USER … SET STATUS SUSPENDED`` is refused
("not available in community edition"), so a retired user is dropped, not suspended.

Passwords travel only as query parameters; errors name the user and the operation, never a password.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import neo4j
import neo4j.exceptions
from pydantic import SecretStr
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from drivers.plain import plain
from helix_ops.errors import ConfigError, DriverError

Secret = SecretStr | str
_USER = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def quoted_user(name: str) -> str:
    """A user name as a Cypher identifier (backticks); ConfigError for a name the blocks would refuse."""
    if not _USER.match(name):
        raise ConfigError("neo4j.user", f"{name!r} is not a user name (letters, digits, _ . -)")
    return f"`{name}`"


def _driver(uri: str, auth) -> neo4j.Driver:
    return neo4j.GraphDatabase.driver(uri, auth=auth, connection_timeout=3, max_transaction_retry_time=0,
                                      notifications_min_severity="OFF")


def can_login(uri: str, user: str, password: Secret) -> bool:
    """A Bolt login as ``user`` succeeds. False when refused; DriverError when Neo4j cannot be reached."""
    try:
        with _driver(uri, (user, plain(password))) as drv:
            drv.verify_connectivity()
        return True
    except neo4j.exceptions.AuthError:
        return False
    except neo4j.exceptions.Neo4jError as exc:
        if "Unauthorized" in (exc.code or "") or "AuthenticationRateLimit" in (exc.code or ""):
            return False
        raise DriverError(f"Neo4j at {uri} failed a login check: {exc.code}", hint="") from None
    except Exception as exc:  # noqa: BLE001 - driver/service errors
        raise DriverError(f"Neo4j at {uri} is not reachable: {type(exc).__name__}",
                          hint="is the container running and its Bolt port published?") from None


@retry(retry=retry_if_exception_type((neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired,
                                      OSError)),
       stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.5, max=4), reraise=True)
def _login_works(uri: str, auth: tuple[str, str] | None) -> bool:
    """Whether a login with ``auth`` (None: none) is accepted; a connection that fails before Neo4j answers
    (a port-forward's stream that blips) is tried again, twice."""
    with _driver(uri, auth) as drv:
        drv.verify_connectivity()
    return True


def unauthenticated_refused(uri: str) -> tuple[bool, bool]:
    """``(no-credentials refused, wrong-password refused)``: both True when authentication is on.

    The wrong-password login uses a throwaway user name: Neo4j locks a user for a while after failed logins
    (``dbms.security.auth_max_failed_attempts``), and an audit must not lock the real ``neo4j`` user out."""
    results = []
    for auth in (None, (f"helix-audit-probe-{secrets.token_hex(4)}", "helix-audit-wrong-password")):
        try:
            _login_works(uri, auth)
            results.append(False)
        except neo4j.exceptions.AuthError:
            results.append(True)
        except neo4j.exceptions.Neo4jError as exc:
            if "Security" in (exc.code or ""):
                results.append(True)
            else:
                raise DriverError(f"Neo4j at {uri}: {exc.code}", hint="") from None
        except Exception as exc:  # noqa: BLE001
            raise DriverError(f"Neo4j at {uri} is not reachable: {type(exc).__name__}",
                              hint="is the container running and its Bolt port published?") from None
    return results[0], results[1]


@contextmanager
def admin(uri: str, candidates: Iterable[tuple[str, Secret | None]]) -> Iterator[neo4j.Driver]:
    """A driver logged in as the first ``(user, password)`` of ``candidates`` that works."""
    tried = []
    for user, password in candidates:
        if password is None:
            continue
        tried.append(user)
        if can_login(uri, user, password):
            drv = _driver(uri, (user, plain(password)))
            try:
                yield drv
            finally:
                drv.close()
            return
    raise DriverError(f"no known login works on Neo4j at {uri} (tried users {', '.join(tried) or 'none'})",
                      hint="the server and the credentials block disagree; the rotation state block holds the "
                           "passwords of a rotation in progress")


def _system(drv: neo4j.Driver, query: str, what: str, **params) -> list[dict]:
    try:
        records, _, _ = drv.execute_query(query, params, database_="system")
        return [r.data() for r in records]
    except neo4j.exceptions.Neo4jError as exc:
        raise DriverError(f"Neo4j {what} failed: {exc.code}", hint="the login needs user-management rights") from None


def users(drv: neo4j.Driver) -> set[str]:
    """The names of every native user."""
    return {row["user"] for row in _system(drv, "SHOW USERS YIELD user", "SHOW USERS")}


def set_password(drv: neo4j.Driver, user: str, password: Secret, create: bool = False) -> str:
    """Give ``user`` the password (creating the user when ``create`` and absent); idempotent."""
    name = quoted_user(user)
    if create and user not in users(drv):
        _system(drv, f"CREATE USER {name} IF NOT EXISTS SET PASSWORD $p CHANGE NOT REQUIRED", f"CREATE USER {user}",
                p=plain(password))
        return f"user {user} created"
    _system(drv, f"ALTER USER {name} SET PASSWORD $p CHANGE NOT REQUIRED", f"ALTER USER {user}", p=plain(password))
    return f"password of {user} set"


def drop_user(drv: neo4j.Driver, user: str) -> str:
    """Drop ``user`` if it exists (Community cannot suspend a user)."""
    _system(drv, f"DROP USER {quoted_user(user)} IF EXISTS", f"DROP USER {user}")
    return f"user {user} dropped"
