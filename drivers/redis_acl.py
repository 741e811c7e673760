"""Redis ACL passwords, live: several passwords per user during a rotation, persisted so a restart keeps them.

Redis 7 lets an ACL user hold several passwords (``ACL SETUSER u >new`` adds, ``<old`` removes). Persisting:
with an ``aclfile`` (the helix-ops start script keeps one on the data volume) ``ACL SAVE`` writes it, hashed;
a server with a config file and no aclfile persists through ``CONFIG REWRITE`` (a ``user default on #… #…``
line). :meth:`RedisAcl.persist` uses whichever the server has.

Redis echoes an ``ACL SETUSER`` modifier in its errors (``'<password>'``): every error here is re-raised as a
:class:`DriverError` that names the operation, never the server's text.

Example::

    acl = RedisAcl("127.0.0.1", 6379)
    with acl.login([old, new]) as conn:
        acl.add_password(conn, new)
        acl.persist(conn)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import redis
from pydantic import SecretStr

from drivers.plain import plain
from helix_ops.errors import DriverError

Secret = SecretStr | str


def password_hash(secret: Secret) -> str:
    """The SHA-256 hex digest Redis keeps for a password (what ``ACL GETUSER`` lists)."""
    return hashlib.sha256(plain(secret).encode()).hexdigest()


class RedisAcl:
    """One Redis server's ACL user (``default`` unless told otherwise)."""

    def __init__(self, host: str, port: int, username: str = "default", timeout_s: float = 3) -> None:
        self.host, self.port, self.username, self.timeout_s = host, port, username, timeout_s

    def __repr__(self) -> str:
        return f"RedisAcl({self.host}:{self.port}, user={self.username})"

    def _client(self, password: Secret | None) -> redis.Redis:
        kwargs = {"username": self.username} if password is not None and self.username != "default" else {}
        return redis.Redis(host=self.host, port=self.port, password=None if password is None else plain(password),
                           socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s, **kwargs)

    def can_login(self, password: Secret) -> bool:
        """AUTH with ``password`` and PING succeed. False on a refused login; DriverError if unreachable."""
        try:
            with self._client(password) as conn:
                return conn.ping() is True
        except redis.AuthenticationError:
            return False
        except redis.ResponseError as exc:  # WRONGPASS arrives as a ResponseError on some paths
            if "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
                return False
            raise DriverError(f"Redis at {self.host}:{self.port} refused PING", hint="check the server") from None
        except redis.RedisError as exc:
            raise DriverError(f"Redis at {self.host}:{self.port} is not reachable: {type(exc).__name__}",
                              hint="is the container running and its port published?") from None

    def unauthenticated_refused(self) -> bool:
        """A PING without AUTH is refused (NOAUTH): Redis AUTH is on."""
        try:
            with self._client(None) as conn:
                conn.ping()
            return False
        except (redis.AuthenticationError, redis.ResponseError) as exc:
            if "NOAUTH" in str(exc) or isinstance(exc, redis.AuthenticationError):
                return True
            raise DriverError(f"Redis at {self.host}:{self.port}: unexpected answer to PING", hint="") from None
        except redis.RedisError as exc:
            raise DriverError(f"Redis at {self.host}:{self.port} is not reachable: {type(exc).__name__}",
                              hint="is the container running and its port published?") from None

    @contextmanager
    def login(self, candidates: Iterable[Secret]) -> Iterator[redis.Redis]:
        """A connection authenticated with the first of ``candidates`` that works (a resumed rotation does
        not know which of old/new the server still takes). DriverError when none does."""
        tried = 0
        for candidate in candidates:
            if candidate is None:
                continue
            tried += 1
            if self.can_login(candidate):
                conn = self._client(candidate)
                try:
                    yield conn
                finally:
                    conn.close()
                return
        raise DriverError(f"none of {tried} known password(s) logs in to Redis at {self.host}:{self.port}",
                          hint="the server and the credentials block disagree; restore the password from the "
                               "rotation state or the .env backup")

    def password_hashes(self, conn: redis.Redis) -> set[str]:
        """The SHA-256 digests of every password the user holds."""
        try:
            info = conn.execute_command("ACL", "GETUSER", self.username)
        except redis.RedisError as exc:
            raise DriverError(f"ACL GETUSER {self.username} failed: {type(exc).__name__}", hint="") from None
        if info is None:
            raise DriverError(f"Redis has no ACL user {self.username}", hint="")
        fields = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
        raw = fields.get(b"passwords", fields.get("passwords", []))
        return {p.decode() if isinstance(p, bytes) else p for p in raw}

    def holds(self, conn: redis.Redis, password: Secret) -> bool:
        return password_hash(password) in self.password_hashes(conn)

    def add_password(self, conn: redis.Redis, password: Secret) -> bool:
        """Add ``password`` unless the user holds it already; True if it was added."""
        if self.holds(conn, password):
            return False
        self._setuser(conn, ">" + plain(password), "adding a password")
        return True

    def remove_password(self, conn: redis.Redis, password: Secret) -> bool:
        """Remove ``password`` if the user holds it (refusing to remove the last one); True if removed."""
        hashes = self.password_hashes(conn)
        if password_hash(password) not in hashes:
            return False
        if len(hashes) == 1:
            raise DriverError(f"refusing to remove the only password of Redis user {self.username}",
                              hint="add the new password first")
        self._setuser(conn, "<" + plain(password), "removing a password")
        return True

    def _setuser(self, conn: redis.Redis, modifier: str, what: str) -> None:
        try:
            conn.execute_command("ACL", "SETUSER", self.username, modifier)
        except redis.RedisError as exc:  # the server's message quotes the modifier: never pass it on
            raise DriverError(f"ACL SETUSER {self.username} ({what}) failed: {type(exc).__name__}",
                              hint="check the ACL user exists and this login may change it") from None

    def persist(self, conn: redis.Redis) -> str:
        """Write the ACL where the server reads it at start: ``ACL SAVE`` with an aclfile, else
        ``CONFIG REWRITE``. Returns which one ran; DriverError when neither can (no config file)."""
        try:
            aclfile = conn.config_get("aclfile").get("aclfile", "")
        except redis.RedisError as exc:
            raise DriverError(f"CONFIG GET aclfile failed: {type(exc).__name__}", hint="") from None
        try:
            if aclfile:
                conn.execute_command("ACL", "SAVE")
                return "ACL SAVE"
            conn.execute_command("CONFIG", "REWRITE")
            return "CONFIG REWRITE"
        except redis.RedisError as exc:
            raise DriverError(f"persisting the ACL of Redis at {self.host}:{self.port} failed: {type(exc).__name__}",
                              hint="a Redis started without a config file cannot persist ACL changes; deploy it "
                                   "with the helix-ops start script (aclfile on /data)") from None

    def set_masterauth(self, conn: redis.Redis, password: Secret) -> bool:
        """Make ``password`` what this server sends to its primary when it (re)connects as a replica
        (``CONFIG SET masterauth``, live: the current replication link is kept). True if it changed. Not
        persisted: the helix-ops start script writes ``masterauth`` from the container's environment, so a
        replica keeps it across a restart only once re-created from the blocks' value."""
        try:
            current = conn.config_get("masterauth").get("masterauth", "")
        except redis.RedisError as exc:
            raise DriverError(f"CONFIG GET masterauth failed: {type(exc).__name__}", hint="") from None
        if current == plain(password):
            return False
        try:
            conn.config_set("masterauth", plain(password))
        except redis.RedisError as exc:  # never pass on the server's text: it may quote the value
            raise DriverError(f"CONFIG SET masterauth on {self.host}:{self.port} failed: {type(exc).__name__}",
                              hint="check this login may run CONFIG SET") from None
        return True

    def role(self, conn: redis.Redis) -> str:
        """``master`` or ``slave`` (``INFO replication``)."""
        try:
            return str(conn.info("replication").get("role", ""))
        except redis.RedisError as exc:
            raise DriverError(f"INFO replication on {self.host}:{self.port} failed: {type(exc).__name__}",
                              hint="") from None


DOWN_FLAGS = frozenset({"s_down", "o_down", "disconnected"})
"""Flags of ``SENTINEL MASTER`` / ``SENTINEL REPLICAS`` that say a Sentinel cannot use an instance."""


class SentinelAuth:
    """One Redis Sentinel: the password it uses towards the Redis servers of ``master`` (``auth-pass``).

    ``password`` is the Sentinel's own password when it requires one (``RedisCredentials.sentinel_password``);
    the helix-ops Sentinels require none."""

    def __init__(self, host: str, port: int, master: str, password: Secret | None = None,
                 timeout_s: float = 3) -> None:
        self.host, self.port, self.master, self.timeout_s = host, port, master, timeout_s
        self._password = password

    def __repr__(self) -> str:
        return f"SentinelAuth({self.host}:{self.port}, master={self.master})"

    def _call(self, what: str, *args: str):
        try:
            with redis.Redis(host=self.host, port=self.port, socket_timeout=self.timeout_s,
                             socket_connect_timeout=self.timeout_s,
                             password=None if self._password is None else plain(self._password)) as conn:
                return conn.execute_command("SENTINEL", *args)
        except redis.RedisError as exc:  # SENTINEL SET echoes nothing secret today; never rely on it
            raise DriverError(f"Sentinel {self.host}:{self.port}: {what} failed: {type(exc).__name__}",
                              hint="is the Sentinel running and does it monitor this master?") from None

    def set_auth_pass(self, password: Secret) -> None:
        """``SENTINEL SET <master> auth-pass <password>`` (idempotent). The Sentinel drops its links to the
        master and replicas and logs in again with it, and rewrites its config file (which the helix-ops start
        script rebuilds from the environment at the next start: re-create the Sentinel to keep it)."""
        self._call("SENTINEL SET auth-pass", "SET", self.master, "auth-pass", plain(password))

    def master_state(self) -> dict[str, str]:
        """``SENTINEL MASTER <master>`` as text fields (``flags``, ``num-other-sentinels``, ``num-slaves``…)."""
        return _fields(self._call("SENTINEL MASTER", "MASTER", self.master))

    def replicas_state(self) -> list[dict[str, str]]:
        """``SENTINEL REPLICAS <master>``: one dict per replica (``name``, ``flags``, ``master-link-status``…)."""
        return [_fields(r) for r in self._call("SENTINEL REPLICAS", "REPLICAS", self.master)]

    def problems(self) -> list[str]:
        """What this Sentinel reports wrong about the master and its replicas (empty: all usable)."""
        out = []
        m = self.master_state()
        bad = DOWN_FLAGS & set(m.get("flags", "").split(","))
        if bad:
            out.append(f"master {m.get('name')} flags {m.get('flags')}")
        for r in self.replicas_state():
            flags = set(r.get("flags", "").split(","))
            if DOWN_FLAGS & flags or r.get("master-link-status") not in (None, "ok"):
                out.append(f"replica {r.get('name')} flags {r.get('flags')} link {r.get('master-link-status')}")
        return out


def _fields(reply) -> dict[str, str]:
    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)
    if isinstance(reply, dict):
        return {text(k): text(v) for k, v in reply.items()}
    return {text(k): text(v) for k, v in zip(reply[::2], reply[1::2])}
