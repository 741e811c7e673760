"""Backups, the tools' side (pure): argument lists for ``neo4j-admin`` (Neo4j 5), ``redis-cli`` and
``redis-check-rdb``, and the reading of their output.

* :func:`neo4j_dump_argv` & co: ``neo4j-admin database …`` argument lists (never shell strings);
  :func:`neo4j_store_swap_argv`: the fixed script a restore's import swaps the staged store in with.
* :func:`parse_enterprise_backup_output` reads the summary table of ``database backup`` (exit 1 may mean
  "succeeded with problems").
* :func:`redis_cli_rdb_argv` / :func:`parse_redis_check_rdb` / :func:`redis_backup_counts`: pulling an RDB,
  checking it, and the Redis counts a manifest records.

Example::

    neo4j_dump_argv("neo4j", "/backups")   # ["neo4j-admin", "database", "dump", "neo4j", "--to-path=/backups", ...]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from helix_ops.errors import ConfigError, PlanError


# --- neo4j-admin argv (Neo4j 5) -----------------------------------------------------------------------------

_DB = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}\Z")
_ADDR = re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}\Z")


def _database(name: str) -> str:
    if not _DB.match(name):
        raise ConfigError("database", f"{name!r} is not a Neo4j database name")
    return name


def _path(p: str, what: str) -> str:
    if not p.startswith("/") or "\0" in p or "\n" in p:
        raise ConfigError(what, f"{p!r} must be an absolute path")
    return p


def neo4j_dump_argv(database: str, to_path: str, admin: str = "neo4j-admin") -> list[str]:
    """``neo4j-admin database dump <db> --to-path=<dir> --overwrite-destination=true`` (server stopped)."""
    return [admin, "database", "dump", _database(database), f"--to-path={_path(to_path, 'to_path')}",
            "--overwrite-destination=true"]


def neo4j_load_argv(database: str, from_path: str, admin: str = "neo4j-admin") -> list[str]:
    """``neo4j-admin database load <db> --from-path=<dir> --overwrite-destination=true`` (server stopped)."""
    return [admin, "database", "load", _database(database), f"--from-path={_path(from_path, 'from_path')}",
            "--overwrite-destination=true"]


def neo4j_import_argv(database: str, folder: str, nodes: list[tuple[str, str]],
                      relationships: list[tuple[str, str]], *, multiline: bool = False,
                      admin: str = "neo4j-admin") -> list[str]:
    """``neo4j-admin database import full`` of CSV files in ``folder`` (``(header, data)`` file names) over
    ``database`` (server stopped): integer ids, U+001F between list elements, no bad entry tolerated."""
    folder = _path(folder, "folder").rstrip("/")
    for header, data in [*nodes, *relationships]:
        for name in (header, data):
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}\Z", name):
                raise ConfigError("csv file", f"{name!r}: expected a plain file name")
    # the database before the options: after a --nodes / --relationships list it would be read as one more file
    return [admin, "database", "import", "full", _database(database), "--overwrite-destination=true",
            "--id-type=integer",
            "--array-delimiter=U+001F", "--bad-tolerance=0", "--skip-bad-relationships=false",
            "--skip-duplicate-nodes=false", f"--multiline-fields={'true' if multiline else 'false'}",
            f"--report-file={folder}/import.report",
            *(f"--nodes={folder}/{h},{folder}/{d}" for h, d in nodes),
            *(f"--relationships={folder}/{h},{folder}/{d}" for h, d in relationships)]


STAGING_DATABASE = "helix-restore"
"""The database a restore's import writes into while Neo4j still serves the old store (Community never
hosts a second user database, so the server ignores it); swapped in during the window."""
BEFORE_RESTORE = "helix-restore-before"
"""Where the swap keeps the replaced store (under the data folder) until the restored one is up."""

_STORE_SWAP = {
    # $1 data folder, $2 database, $3 staging database, $4 the folder keeping the replaced store
    "in": 'set -eu; cd "$1"; for d in databases transactions; do mkdir -p "$4/$d"; rm -rf "${4:?}/$d/$2"; '
          'if [ -e "$d/$2" ]; then mv "$d/$2" "$4/$d/$2"; fi; mv "$d/$3" "$d/$2"; done',
    "back": 'set -eu; cd "$1"; for d in databases transactions; do if [ -e "$4/$d/$2" ]; then '
            'rm -rf "${d:?}/$2"; mv "$4/$d/$2" "$d/$2"; fi; done; rmdir "$4/databases" "$4/transactions" "$4" '
            '2>/dev/null || true',
    "drop": 'set -eu; cd "$1"; rm -rf "./$4" "databases/$3" "transactions/$3"',
    # exit 3: a store is kept aside in $4 (a restore interrupted inside its window, or whose drop failed): any
    # database's, since drop removes all of $4; an unmatched glob stays literal and does not exist
    "check": 'set -eu; cd "$1"; for f in "$4"/*/*; do if [ -e "$f" ]; then echo "$f" >&2; exit 3; fi; done',
}
LEFTOVER_EXIT = 3
"""``check``'s exit code when a previous restore's kept-aside store is still there."""


def neo4j_store_swap_argv(op: str, data: str, database: str, staging: str = STAGING_DATABASE) -> list[str]:
    """argv that, over Neo4j's data folder ``data`` (server stopped for ``in`` and ``back``), swaps the
    ``staging`` database's store and transaction logs in for ``database``'s, keeping the replaced ones aside
    (``in``); puts them back (``back``: the restored store did not come up); removes what is kept aside
    and any staging leftovers (``drop``); or exits :data:`LEFTOVER_EXIT` when a store is still kept aside
    (``check``: a restore was interrupted between ``in`` and ``drop``). A fixed script; the names come as
    arguments, checked first."""
    if op not in _STORE_SWAP:
        raise ConfigError("store swap", f"{op!r}: expected one of {sorted(_STORE_SWAP)}")
    if _database(database) == _database(staging):
        raise ConfigError("store swap", f"the staging database must differ from {database!r}")
    return ["sh", "-c", _STORE_SWAP[op], "helix-store-swap", _path(data, "data"), database, staging, BEFORE_RESTORE]


def neo4j_check_argv(database: str, from_path: str | None = None, admin: str = "neo4j-admin") -> list[str]:
    """``neo4j-admin database check <db> [--from-path=<dump dir>]`` (never on a database in use)."""
    argv = [admin, "database", "check", _database(database)]
    if from_path:
        argv.append(f"--from-path={_path(from_path, 'from_path')}")
    return argv


def neo4j_backup_argv(database: str, from_address: str, to_path: str, *, backup_type: str = "AUTO",
                      compress: bool = True, admin: str = "neo4j-admin") -> list[str]:
    """Enterprise online backup: ``neo4j-admin database backup --from=<host:port> --to-path=<dir> --type=…``."""
    if not _ADDR.match(from_address):
        raise ConfigError("from_address", f"{from_address!r}: expected host:port of server.backup.listen_address")
    if backup_type not in ("AUTO", "FULL", "DIFF"):
        raise ConfigError("backup_type", f"{backup_type!r}: expected AUTO, FULL or DIFF")
    return [admin, "database", "backup", f"--from={from_address}", f"--to-path={_path(to_path, 'to_path')}",
            f"--type={backup_type}", f"--compress={'true' if compress else 'false'}", _database(database)]


def neo4j_restore_argv(database: str, from_path: str, *, restore_until: str | None = None,
                       admin: str = "neo4j-admin") -> list[str]:
    """Enterprise restore: ``neo4j-admin database restore --from-path=<last backup file> --overwrite-destination=true``."""
    argv = [admin, "database", "restore", f"--from-path={_path(from_path, 'from_path')}"]
    if restore_until:
        if not re.match(r"^[0-9T:.+\-Z ]{1,40}\Z", restore_until):
            raise ConfigError("restore_until", f"{restore_until!r}: expected a transaction id or a timestamp")
        argv.append(f"--restore-until={restore_until}")
    return [*argv, "--overwrite-destination=true", _database(database)]


@dataclass(frozen=True)
class EnterpriseBackupResult:
    """The outcome of ``neo4j-admin database backup``, from its exit code and summary table.

    ``status``: ``ok`` (exit 0, every database successful), ``with-problems`` (the backups were taken but the
    tool reported problems, e.g. exit 1 with every row successful), ``failed``.
    """

    status: Literal["ok", "with-problems", "failed"]
    rows: tuple[dict[str, str], ...]
    problems: tuple[str, ...]

    @property
    def succeeded(self) -> bool:
        return self.status != "failed"


def parse_enterprise_backup_output(rc: int, output: str) -> EnterpriseBackupResult:
    """Read ``neo4j-admin database backup`` output: the ``| DATABASE | LAST BACKUP | STATUS | DETAILS |``
    table, and any ERROR/WARN lines. Exit 0 → ok (unless a row failed); exit 1 → with-problems when every
    database row says successful, else failed; any other exit → failed."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    problems: list[str] = []
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip().strip('"').strip() for c in line.strip("|").split("|")]
            if header is None and any(c.upper() == "DATABASE" for c in cells):
                header = [c.upper() for c in cells]
                continue
            if header is not None and len(cells) == len(header):
                rows.append(dict(zip(header, cells)))
        elif re.match(r"^(\S+\s+)?(ERROR|WARN|WARNING)\b", line) or "problem" in line.lower():
            problems.append(line)
    bad = [r for r in rows if r.get("STATUS", "").lower() not in ("successful", "success")]
    problems += [f"{r.get('DATABASE', '?')}: {r.get('STATUS', '?')} {r.get('DETAILS', '')}".strip() for r in bad]
    if rc == 0 and rows and not bad:
        status: Literal["ok", "with-problems", "failed"] = "ok" if not problems else "with-problems"
    elif rc in (0, 1) and rows and not bad:
        status = "with-problems"
        if rc == 1 and not problems:
            problems.append("neo4j-admin exited 1 although every database reports a successful backup")
    else:
        status = "failed"
        if not rows:
            problems.append(f"no backup summary table in the output (exit {rc})")
    return EnterpriseBackupResult(status, tuple(rows), tuple(problems))


# --- redis argv ---------------------------------------------------------------------------------------------


def redis_cli_rdb_argv(host: str, port: int, to_file: str, redis_cli: str = "redis-cli",
                       user: str | None = None) -> list[str]:
    """``redis-cli --rdb <file>`` against ``host:port``: pulls an RDB over the replication protocol.

    The password is never on argv: the runner passes it as ``REDISCLI_AUTH`` in the environment.
    """
    if not re.match(r"^[A-Za-z0-9.:-]+\Z", host):
        raise ConfigError("redis.host", f"{host!r} is not a host name or address")
    if not 0 < int(port) < 65536:
        raise ConfigError("redis.port", f"{port!r} is not a port")
    argv = [redis_cli, "-h", host, "-p", str(int(port)), "--no-auth-warning"]
    if user and user != "default":
        if not re.match(r"^[A-Za-z0-9._-]+\Z", user):
            raise ConfigError("redis.user", f"{user!r} is not a Redis user name")
        argv += ["--user", user]
    return [*argv, "--rdb", "-" if to_file == "-" else _path(to_file, "to_file")]  # "-": to standard output


def redis_check_rdb_argv(rdb_file: str, tool: str = "redis-check-rdb") -> list[str]:
    """``redis-check-rdb <file>``."""
    return [tool, _path(rdb_file, "rdb_file")]


def parse_redis_check_rdb(rc: int, output: str) -> str:
    """The one-line verdict of ``redis-check-rdb``; raises :class:`PlanError` when the RDB is not OK."""
    ok = rc == 0 and "RDB looks OK" in output
    keys = re.search(r"(\d+)\s+keys read", output)
    if not ok:
        tail = [ln for ln in output.strip().splitlines() if ln.strip()][-3:]
        raise PlanError(f"redis-check-rdb refused the RDB (exit {rc}): {' | '.join(tail)}")
    return f"RDB looks OK ({keys.group(1)} keys read)" if keys else "RDB looks OK"


def redis_backup_counts(before: dict[str, Any], after: dict[str, Any], rdb_verdict: str) -> dict[str, Any]:
    """The manifest's Redis counts: what the RDB holds, not what the live server held at some moment.

    ``keys`` is ``redis-check-rdb``'s "keys read" (the snapshot itself). The per-database counts and the TTL
    count can only come from ``INFO`` on the live server: they are kept when INFO gave the same figures before
    and after the snapshot and they add up to the RDB's keys, else left empty (``{}`` / None: unknown), so
    verification and restore never fail a healthy backup of a Redis that was being written to. ``expires``
    (informational) is INFO's before the snapshot."""
    read = re.search(r"\((\d+) keys read\)", rdb_verdict)
    keys = int(read.group(1)) if read else int(before["keys"])
    steady = before["keys_by_db"] == after["keys_by_db"] and sum(before["keys_by_db"].values()) == keys
    return {"keys": keys, "keys_by_db": dict(before["keys_by_db"]) if steady else {},
            "expires": int(before["expires"])}


def redis_keyspace_counts(info_keyspace: dict[str, object]) -> tuple[int, int, dict[str, int]]:
    """``(keys, expires, keys by db)`` from redis-py's ``INFO keyspace`` dict (``{'db0': {'keys': 3, …}}``)."""
    total = expires = 0
    by_db: dict[str, int] = {}
    for db, stats in sorted(info_keyspace.items()):
        if not isinstance(stats, dict):
            continue
        by_db[db] = int(stats.get("keys", 0))
        total += by_db[db]
        expires += int(stats.get("expires", 0))
    return total, expires, by_db
