"""Neo4j over Bolt: readiness, server identity, the migration ledger and schema statements.

The one place helix-ops talks to Neo4j. Every ``neo4j`` exception is translated here into the helix-ops error
tree (``raise DriverError(..., hint=...) from exc``); the password is held as a ``SecretStr``, never logged and
scrubbed from any message. Which Cypher to run is decided by the pure core (:mod:`helix_ops.migrations`).

Example::

    from drivers.neo4j import Neo4jClient
    with Neo4jClient("bolt://127.0.0.1:7687", "neo4j", password) as db:
        db.wait_ready(deadline_s=60)
        print(db.server_info())           # ('5.26.0', 'community')
        print(db.applied_migrations())    # {1: '307e…', 2: '93f4…'}
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import neo4j
import neo4j.exceptions as nex
from pydantic import BaseModel, ConfigDict, SecretStr

from helix_ops import migrations as mig
from helix_ops.errors import ConfigError, DriverError, PlanError, WaitTimeout
from helix_ops.wait import Deadline

log = logging.getLogger(__name__)

T = TypeVar("T")

BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
"""URI schemes accepted (as in helix.config.yaml's ``graph.uri``); the driver's preview HTTP API is not used."""


class Neo4jUnavailable(DriverError):
    """Neo4j could not be reached or was briefly unable to serve (transient: worth a retry)."""


class MigrationOutcome(BaseModel):
    """What ``apply_migration`` did: ``applied`` (this call recorded it) or ``already-applied`` (a concurrent
    run recorded it first), with the ledger's checksum, time and applier."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int
    name: str
    checksum: str
    outcome: str
    reason: str
    applied_at: str | None = None
    applied_by: str | None = None


def _secret(password: SecretStr | str) -> SecretStr:
    return password if isinstance(password, SecretStr) else SecretStr(password)


class Neo4jClient:
    """A context manager over the official driver for one Neo4j database.

    ``password`` may be a ``SecretStr`` or a plain string; either way it is kept as a ``SecretStr``.
    ``connection_timeout_s`` bounds each connection attempt.
    """

    def __init__(self, uri: str, user: str, password: SecretStr | str, *, database: str = "neo4j",
                 connection_timeout_s: float = 10.0) -> None:
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if scheme not in BOLT_SCHEMES:
            raise ConfigError("neo4j_uri", f"{uri!r}: expected bolt://host:port or neo4j://host:port "
                                           f"(schemes: {', '.join(BOLT_SCHEMES)})")
        self.uri = uri
        self.user = user
        self._password = _secret(password)
        self.database = database
        self.connection_timeout_s = connection_timeout_s
        self._driver: neo4j.Driver | None = None

    def __repr__(self) -> str:
        return f"Neo4jClient(uri={self.uri!r}, user={self.user!r}, database={self.database!r})"

    # --- lifecycle ---------------------------------------------------------------------------------

    def _new_driver(self, connection_timeout_s: float) -> neo4j.Driver:
        try:
            return neo4j.GraphDatabase.driver(
                self.uri,
                auth=(self.user, self._password.get_secret_value()),
                connection_timeout=connection_timeout_s,
                connection_acquisition_timeout=max(connection_timeout_s, 1.0),
                max_transaction_retry_time=15.0,
            )
        except (nex.ConfigurationError, ValueError) as exc:
            raise DriverError(f"cannot use Neo4j URI {self.uri!r}: {self._scrub(str(exc))}",
                              hint="expected bolt://host:port or neo4j://host:port") from exc

    def __enter__(self) -> Neo4jClient:
        self._driver = self._new_driver(self.connection_timeout_s)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    @property
    def driver(self) -> neo4j.Driver:
        if self._driver is None:
            raise DriverError("Neo4jClient used outside its `with` block", hint="use `with Neo4jClient(...) as db:`")
        return self._driver

    # --- error translation -------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        secret = self._password.get_secret_value()
        return text.replace(secret, "***") if secret else text

    def _translate(self, exc: Exception, doing: str) -> DriverError:
        """The helix-ops error for a ``neo4j`` exception raised while ``doing`` something."""
        where = f"Neo4j at {self.uri}"
        detail = self._scrub(getattr(exc, "message", None) or str(exc) or type(exc).__name__)
        code = getattr(exc, "code", None)
        if isinstance(exc, nex.AuthError):
            return DriverError(
                f"{where} rejected the credentials of user {self.user!r} while {doing}",
                hint="check the password in the Neo4j credentials block; Neo4j locks a user for a few seconds "
                     "after repeated failures",
            )
        if isinstance(exc, (nex.ServiceUnavailable, nex.SessionExpired, nex.TransientError)):
            return Neo4jUnavailable(f"{where} is unavailable while {doing}: {detail}",
                                    hint="is the server running and the URI's host and port right?")
        if isinstance(exc, nex.ConstraintError):
            return DriverError(f"{where}: a constraint rejected a write while {doing}: {detail}",
                               hint="a duplicate uid or migration version")
        if isinstance(exc, nex.Neo4jError):
            hint = "read the Neo4j error code"
            if code and "ConstraintCreationFailed" in code:
                hint = ("existing data breaks the constraint, e.g. duplicate uids: find them with "
                        "MATCH (n:Entity) WITH n.uid AS uid, count(*) AS c WHERE c > 1 RETURN uid, c")
            return DriverError(f"{where} failed while {doing}: {code}: {detail}", hint=hint)
        if isinstance(exc, nex.DriverError):
            return DriverError(f"{where}: driver error while {doing}: {detail}", hint="check the URI and the network")
        return DriverError(f"{where}: {type(exc).__name__} while {doing}: {detail}")

    def _call(self, doing: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (nex.Neo4jError, nex.DriverError, OSError) as exc:
            raise self._translate(exc, doing) from exc

    def _run(self, doing: str, cypher: str, **params: Any) -> list[dict[str, Any]]:
        """One auto-commit query (no driver-side retries); records as dicts."""
        def go() -> list[dict[str, Any]]:
            with self.driver.session(database=self.database) as session:
                return [r.data() for r in session.run(cypher, params)]
        return self._call(doing, go)

    # --- readiness -----------------------------------------------------------------------------------

    def wait_ready(self, deadline_s: float, interval_s: float = 0.5) -> None:
        """Wait until a ``RETURN 1`` succeeds with these credentials, at most ``deadline_s`` seconds.

        Unreachable or still starting: try again until the deadline, then raise :class:`WaitTimeout` with
        the last error seen. Rejected credentials: raise :class:`DriverError` at once (waiting cannot help,
        and every failed attempt counts towards Neo4j's lockout).
        """
        deadline = Deadline(deadline_s)
        for poll in deadline.polls(f"Neo4j Bolt at {self.uri}", interval_s):
            # A connection attempt must not outlast the deadline.
            probe = self._new_driver(connection_timeout_s=max(0.2, min(deadline.remaining(),
                                                                       self.connection_timeout_s)))
            try:
                with probe.session(database=self.database) as session:
                    session.run("RETURN 1").consume()
                return
            except nex.AuthError as exc:
                raise self._translate(exc, "waiting for it to be ready") from exc
            except (nex.ServiceUnavailable, nex.SessionExpired, nex.TransientError, OSError) as exc:
                poll.seen = self._scrub(f"{type(exc).__name__}: {exc}")
                log.debug("neo4j not ready at %s: %s", self.uri, poll.seen)
            except nex.Neo4jError as exc:
                raise self._translate(exc, "waiting for it to be ready") from exc
            finally:
                probe.close()
        raise AssertionError("unreachable: a Poll ends by raising WaitTimeout")  # pragma: no cover

    def server_info(self) -> tuple[str, str]:
        """``(version, edition)``, e.g. ``('5.26.0', 'community')``."""
        rows = self._run("reading dbms.components()", mig.SERVER_INFO_QUERY)
        if not rows:
            raise DriverError(f"Neo4j at {self.uri} reported no components", hint="is this a Neo4j 5 server?")
        return str(rows[0]["version"]), str(rows[0]["edition"])

    # --- migrations ----------------------------------------------------------------------------------

    def applied_migrations(self) -> dict[int, str]:
        """The ledger: ``{version: checksum}`` of every recorded migration (empty on a fresh database)."""
        rows = self._run("reading the migration ledger", mig.APPLIED_QUERY)
        return {int(r["version"]): str(r["checksum"]) for r in rows}

    def apply_migration(self, m: mig.Migration, applied_by: str = "", index_timeout_s: float = 300) -> MigrationOutcome:
        """Run ``m``'s schema statements, wait for indexes to come online, then record ``m`` in the ledger.

        Each statement runs in its own auto-commit transaction (Neo4j does not mix schema and data writes in
        one transaction); the statements are idempotent, so a run that races another one repeats them
        harmlessly. The ledger record is a MERGE on the unique ``version``: of two racing runs one records it
        (``applied``), the other finds it (``already-applied``). A ledger record with another checksum
        raises :class:`PlanError`.
        """
        for statement in m.statements:
            try:
                self._run(f"applying migration {m.version} ({m.name})", statement)
            except DriverError as err:
                # Two runs creating the same schema rule at once: the loser may be told it already exists.
                cause = err.__cause__
                if not (isinstance(cause, nex.Neo4jError) and cause.code
                        and "EquivalentSchemaRuleAlreadyExists" in cause.code):
                    raise
        self.await_indexes(index_timeout_s)

        def record(tx: neo4j.ManagedTransaction) -> tuple[dict[str, Any], int]:
            result = tx.run(mig.RECORD_MIGRATION_QUERY, version=m.version, name=m.name, checksum=m.checksum,
                            applied_by=applied_by)
            row = result.single(strict=True).data()
            return row, result.consume().counters.nodes_created

        row, created = self._record(m, record)
        if row["checksum"] != m.checksum:
            raise PlanError(
                f"migration {m.version} ({m.name}) is recorded with checksum {str(row['checksum'])[:12]}… but the "
                f"code has {m.checksum[:12]}…: an applied migration was edited"
            )
        if created:
            return MigrationOutcome(version=m.version, name=m.name, checksum=m.checksum, outcome="applied",
                                    reason="applied and recorded by this run", applied_at=row["applied_at"],
                                    applied_by=row["applied_by"])
        return MigrationOutcome(version=m.version, name=m.name, checksum=m.checksum, outcome="already-applied",
                                reason=f"recorded concurrently by {row['applied_by'] or 'another run'} "
                                       f"at {row['applied_at']}",
                                applied_at=row["applied_at"], applied_by=row["applied_by"])

    def _record(self, m: mig.Migration, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
        def go() -> T:
            with self.driver.session(database=self.database) as session:
                return session.execute_write(work)
        return self._call(f"recording migration {m.version} ({m.name})", go)

    def await_indexes(self, timeout_s: float) -> None:
        """Wait until every index is online (``db.awaitIndexes``); :class:`WaitTimeout` after ``timeout_s``."""
        try:
            self._run("waiting for indexes", "CALL db.awaitIndexes($timeout)", timeout=int(max(1, timeout_s)))
        except DriverError as err:
            cause = err.__cause__
            if isinstance(cause, nex.Neo4jError) and "Timeout" in (cause.code or "") + (cause.message or ""):
                states = self._run("reading index states",
                                   "SHOW INDEXES YIELD name, state WHERE state <> 'ONLINE' RETURN name, state")
                raise WaitTimeout("Neo4j indexes online", states) from err
            raise

    # --- uid prefix ------------------------------------------------------------------------------------

    def record_uid_prefix(self, prefix: str) -> str:
        """Record ``prefix`` in the singleton ``HelixSchema`` node unless one is recorded; return the recorded one."""
        def work(tx: neo4j.ManagedTransaction) -> str:
            return str(tx.run(mig.RECORD_UID_PREFIX_QUERY, key=mig.SCHEMA_KEY, prefix=prefix).single(strict=True)["uid_prefix"])

        def go() -> str:
            with self.driver.session(database=self.database) as session:
                return session.execute_write(work)
        return self._call("recording the uid prefix", go)

    def recorded_uid_prefix(self) -> str | None:
        """The uid prefix ``init-helix-db`` recorded, or None (read-only)."""
        rows = self._run("reading the uid prefix", mig.RECORDED_UID_PREFIX_QUERY, key=mig.SCHEMA_KEY)
        return str(rows[0]["uid_prefix"]) if rows and rows[0]["uid_prefix"] is not None else None

    def count_uid_prefix_offenders(self, prefix: str, label: str | None = None) -> int:
        """How many nodes (of ``label``, or all) have a ``uid`` that does not start with ``prefix``."""
        rows = self._run("counting uid prefix offenders", mig.uid_prefix_offenders_query(label), prefix=prefix)
        return int(rows[0]["offenders"])
