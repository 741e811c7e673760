"""Redis backups without exec into the server's container, and restores that survive AOF.

* :func:`snapshot_rdb`: ``redis-cli --rdb <file>`` against the published port pulls an RDB over the
  replication protocol (the password only in ``REDISCLI_AUTH``); :func:`check_rdb` runs ``redis-check-rdb``;
  :func:`stream_rdb` is backup-helix's: ``redis-cli --rdb -`` streamed into the storage and ``redis-check-rdb``
  at once, with no copy on disk.
* :func:`bgsave` / :func:`wait_lastsave`: the other snapshot (BGSAVE, poll LASTSAVE until it changes) for a
  server whose data folder this process can read (the bench compares both).
* :func:`restore_rdb_into_dir`: the AOF-safe restore into the data folder of a **stopped** server. With AOF
  on, Redis loads the AOF and ignores an RDB copied back (ops-facts), so: drop the old AOF folder, put the
  RDB in place, start a temporary ``redis-server`` with ``appendonly no`` (it loads the RDB), ``CONFIG SET
  appendonly yes`` (Redis rewrites a fresh AOF from memory), wait for the rewrite, ``SHUTDOWN``. The real
  server then starts with AOF on and finds an AOF holding every restored key.
* :func:`dataset_fingerprint`: key count plus sampled values (DUMP payloads and TTLs) to compare after a restore.

Example::

    rdb = snapshot_rdb("127.0.0.1", 6379, password, Path("/tmp/x.rdb"))
    check_rdb(rdb)                 # 'RDB looks OK (12 keys read)'
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr

from drivers.plain import plain
from helix_ops.backup_tools import parse_redis_check_rdb, redis_check_rdb_argv, redis_cli_rdb_argv, redis_keyspace_counts
from helix_ops.errors import BackupIntegrityError, CommandFailed, DriverError, PlanError, WaitTimeout
from helix_ops.wait import Deadline, wait_until


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout_s: float = 600,
        secret: str | None = None) -> str:
    """Run an argument list (never a shell); output on success, :class:`CommandFailed` (secret scrubbed) else."""
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError as exc:
        raise DriverError(f"{argv[0]} is not installed", hint="install redis-tools") from exc
    except subprocess.TimeoutExpired as exc:
        raise WaitTimeout(f"{argv[0]} to finish", f"still running after {timeout_s:.0f}s") from exc
    out = proc.stdout + proc.stderr
    if secret:
        out = out.replace(secret, "***")
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, out)
    return out


def connect(host: str, port: int, password: SecretStr | str | None, username: str | None = None,
            timeout_s: float = 10) -> redis.Redis:
    return redis.Redis(host=host, port=port, password=plain(password), username=username,
                       socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def server_facts(client: redis.Redis) -> dict[str, Any]:
    """Version, key counts and persistence settings (no secret)."""
    try:
        info = client.info()
        keyspace = client.info("keyspace")
    except redis.RedisError as exc:
        raise DriverError(f"Redis: {type(exc).__name__} reading INFO", hint="is Redis up, the password right?") from exc
    keys, expires, by_db = redis_keyspace_counts(keyspace)
    return {"version": str(info.get("redis_version", "")), "keys": keys, "expires": expires, "keys_by_db": by_db,
            "aof_enabled": bool(info.get("aof_enabled")), "rdb_last_save_time": info.get("rdb_last_save_time")}


def snapshot_rdb(host: str, port: int, password: SecretStr | str | None, to_file: Path,
                 username: str | None = None, timeout_s: float = 900, redis_cli: str = "redis-cli") -> Path:
    """Pull an RDB from ``host:port`` with ``redis-cli --rdb`` into ``to_file`` (replication protocol: no
    access to the server's disk or container needed). The password is passed as ``REDISCLI_AUTH`` only."""
    argv = redis_cli_rdb_argv(host, port, str(to_file), redis_cli=redis_cli, user=username)
    secret = plain(password)
    env = {"REDISCLI_AUTH": secret} if secret else {}
    run(argv, env=env, timeout_s=timeout_s, secret=secret)
    if not to_file.exists() or to_file.stat().st_size < 9:
        raise BackupIntegrityError(f"redis-cli --rdb wrote no RDB to {to_file}")
    return to_file


def check_rdb(rdb: Path, tool: str = "redis-check-rdb") -> str:
    """``redis-check-rdb`` verdict; :class:`BackupIntegrityError` when it refuses the file."""
    try:
        out = run(redis_check_rdb_argv(str(rdb), tool=tool), timeout_s=900)
    except CommandFailed as exc:
        _check_verdict(exc.rc, exc.stderr)  # raises BackupIntegrityError when it reads as a refusal
        raise
    return _check_verdict(0, out)


def _check_verdict(rc: int, output: str) -> str:
    """``redis-check-rdb``'s verdict from its exit code and output; :class:`BackupIntegrityError` on a refusal."""
    try:
        return parse_redis_check_rdb(rc, output)
    except PlanError as refused:
        raise BackupIntegrityError(str(refused)) from None


def stream_rdb(host: str, port: int, password: SecretStr | str | None, write: Callable[[bytes], Any],
               username: str | None = None, timeout_s: float = 900, redis_cli: str = "redis-cli",
               check_tool: str = "redis-check-rdb", chunk: int = 1 << 20) -> str:
    """Pull an RDB with ``redis-cli --rdb -`` and hand each chunk to ``write`` (compress, checksum, store) and
    to ``redis-check-rdb /dev/stdin`` as it arrives; returns the check's verdict. No copy lands on disk, and
    storing and checking overlap the transfer (one after the other they made the snapshot 1.25x a bare
    ``redis-cli --rdb`` at 1M keys). A transfer cut short fails redis-cli and the check (no RDB end marker and
    checksum), either raises; the caller's uncommitted backup writer then removes what ``write`` stored."""
    secret = plain(password)
    env = {**os.environ, **({"REDISCLI_AUTH": secret} if secret else {})}
    cli_argv = redis_cli_rdb_argv(host, port, "-", redis_cli=redis_cli, user=username)
    check_argv = redis_check_rdb_argv("/dev/stdin", tool=check_tool)
    expired: list[bool] = []
    with tempfile.TemporaryFile() as cli_err, tempfile.TemporaryFile() as check_out:
        try:
            cli = subprocess.Popen(cli_argv, stdout=subprocess.PIPE, stderr=cli_err, env=env)
        except FileNotFoundError as exc:
            raise DriverError(f"{redis_cli} is not installed", hint="install redis-tools") from exc
        try:
            check = subprocess.Popen(check_argv, stdin=subprocess.PIPE, stdout=check_out, stderr=subprocess.STDOUT)
        except FileNotFoundError as exc:
            cli.kill()
            cli.wait()
            raise DriverError(f"{check_tool} is not installed", hint="install redis-tools") from exc

        def stop() -> None:  # the deadline: both end, the read loop sees EOF
            expired.append(True)
            cli.kill()
            check.kill()

        timer = threading.Timer(timeout_s, stop)
        timer.start()
        size, checking = 0, True
        try:
            assert cli.stdout is not None and check.stdin is not None
            while block := cli.stdout.read(chunk):
                size += len(block)
                if checking:
                    try:
                        check.stdin.write(block)
                    except BrokenPipeError:  # it stopped reading: a refusal, its verdict follows
                        checking = False
                write(block)
        except BaseException:  # write() failed or we were interrupted: no one reads the rest of the transfer
            cli.kill()
            raise
        finally:
            timer.cancel()
            for stream in (check.stdin, cli.stdout):
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
            cli.wait()
            check.wait()
        if expired:
            raise WaitTimeout("redis-cli --rdb to finish", f"still running after {timeout_s:.0f}s")
        cli_err.seek(0)
        err = cli_err.read().decode(errors="replace")
        if secret:
            err = err.replace(secret, "***")
        if cli.returncode != 0:
            raise CommandFailed(cli_argv, cli.returncode, err)
        if size < 9:
            raise BackupIntegrityError(f"redis-cli --rdb sent no RDB ({size} bytes)")
        check_out.seek(0)
        return _check_verdict(check.returncode, check_out.read().decode(errors="replace"))


def bgsave(client: redis.Redis, deadline_s: float = 600) -> int:
    """``BGSAVE`` and wait until ``LASTSAVE`` moves past its old value; returns the new LASTSAVE (unix s).

    LASTSAVE has a one-second resolution, so a save within the same second as the previous one is waited
    for until the next second ticks and the save status says ok.
    """
    before = int(client.lastsave().timestamp())
    while int(time.time()) <= before:  # same second as the last save: LASTSAVE could not show a change
        time.sleep(0.05)
    try:
        client.bgsave()
    except redis.ResponseError as exc:
        if "in progress" not in str(exc):
            raise
        client.bgsave(schedule=True)
    return wait_lastsave(client, before, deadline_s)


def wait_lastsave(client: redis.Redis, before: int, deadline_s: float) -> int:
    for poll in Deadline(deadline_s).polls("Redis BGSAVE (LASTSAVE to change)", 0.05):
        now = int(client.lastsave().timestamp())
        info = client.info("persistence")
        if now > before and not info.get("rdb_bgsave_in_progress"):
            if info.get("rdb_last_bgsave_status") != "ok":
                raise DriverError("Redis BGSAVE failed", hint="read the Redis log (disk full? permissions?)")
            return now
        poll.seen = {"lastsave": now, "before": before}
    raise AssertionError("unreachable: a Poll ends by raising WaitTimeout")  # pragma: no cover


_VALUE = {b"string": ("GET",), b"hash": ("HGETALL",), b"list": ("LRANGE", 0, -1), b"set": ("SMEMBERS",),
          b"zset": ("ZRANGE", 0, -1, "WITHSCORES"), b"stream": ("XRANGE", "-", "+")}


def _canonical(kind: bytes, value: Any) -> bytes:
    """A value as bytes that do not depend on its encoding or on hash-table order (sets and hashes sorted)."""
    if kind == b"hash":
        items = value.items() if isinstance(value, dict) else zip(value[0::2], value[1::2])
        return repr(sorted(items)).encode()
    if kind == b"set":
        return repr(sorted(value)).encode()
    return repr(value).encode()


def dataset_fingerprint(host: str, port: int, password: SecretStr | str | None, username: str | None = None,
                        sample: int = 200) -> dict[str, Any]:
    """Key counts per db plus a digest of ``sample`` keys: name, type, value and whether it has a TTL.

    Keys are sampled deterministically (the ``sample`` smallest key names per db, found by SCAN), so two
    servers holding the same data give the same fingerprint. Values are compared by content (sets and hashes
    sorted), not by ``DUMP`` bytes: an RDB load may re-encode a value (a set's hash-table order) without
    changing it.
    """
    with connect(host, port, password, username) as client:
        keyspace = client.info("keyspace")
    out: dict[str, Any] = {"keys": 0, "dbs": {}}
    for db in sorted(keyspace):
        with redis.Redis(host=host, port=port, password=plain(password), username=username, db=int(db[2:]),
                         socket_timeout=30) as c:
            smallest: list[bytes] = []
            for key in c.scan_iter(count=1000):
                smallest.append(key)
                if len(smallest) > 4 * sample:
                    smallest = sorted(smallest)[:sample]
            smallest = sorted(smallest)[:sample]
            h = hashlib.sha256()
            for lo in range(0, len(smallest), 500):
                keys = smallest[lo:lo + 500]
                pipe = c.pipeline(transaction=False)
                for key in keys:
                    pipe.type(key)
                    pipe.pttl(key)
                meta = pipe.execute()
                kinds = [k if isinstance(k, bytes) else str(k).encode() for k in meta[0::2]]
                pipe = c.pipeline(transaction=False)
                for key, kind in zip(keys, kinds):
                    pipe.execute_command(*_VALUE.get(kind, ("DUMP",))[:1], key, *_VALUE.get(kind, ("DUMP",))[1:])
                values = pipe.execute()
                for key, kind, ttl, value in zip(keys, kinds, meta[1::2], values):
                    h.update(key + b"\0" + kind + b"\0" + _canonical(kind, value) + (b"T" if ttl > 0 else b"-"))
        n = int(keyspace[db].get("keys", 0))
        out["dbs"][db] = {"keys": n, "sample": len(smallest), "digest": h.hexdigest()}
        out["keys"] += n
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def restore_rdb_into_dir(data_dir: Path, rdb: Path, *, redis_server: str | None = None,
                         appenddirname: str = "appendonlydir", dbfilename: str = "dump.rdb",
                         deadline_s: float = 600, aof: bool = True, log: Callable[[str], None] = lambda m: None
                         ) -> dict[str, Any]:
    """Restore ``rdb`` into the data folder of a stopped Redis (see the module docstring). Returns the key
    counts the temporary server loaded. ``aof=False``: just place the RDB (for servers with AOF off)."""
    binary = redis_server or shutil.which("redis-server") or "/usr/bin/redis-server"
    data_dir.mkdir(parents=True, exist_ok=True)
    staged = data_dir / f".{dbfilename}.restore"
    shutil.copyfile(rdb, staged)
    os.replace(staged, data_dir / dbfilename)
    if not aof:
        return {"aof": "off"}
    # The old AOF would win over the RDB: move it aside until the new one is written.
    old_aof = data_dir / appenddirname
    aside = data_dir / f"{appenddirname}.before-restore"
    shutil.rmtree(aside, ignore_errors=True)
    if old_aof.exists():
        os.replace(old_aof, aside)
    port = _free_port()
    password = os.urandom(18).hex()
    conf = "\n".join([f"port {port}", "bind 127.0.0.1", f"dir {data_dir}", f"dbfilename {dbfilename}",
                      "appendonly no", f'appenddirname "{appenddirname}"', "save \"\"", f"requirepass {password}",
                      "daemonize no", "loglevel warning"]) + "\n"
    fd, conf_path = tempfile.mkstemp(prefix="helix-redis-restore-", suffix=".conf")
    with os.fdopen(fd, "w") as f:
        f.write(conf)
    proc = subprocess.Popen([binary, conf_path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=10)
    try:
        deadline = Deadline(deadline_s)  # one budget for loading the RDB and rewriting the AOF
        _wait(proc, "loading the RDB", lambda: client.ping() and not client.info("persistence").get("loading"),
              deadline)
        facts = server_facts(client)
        log(f"temporary redis loaded {facts['keys']} keys; turning AOF on")
        client.config_set("appendonly", "yes")

        def rewritten() -> bool:
            p = client.info("persistence")
            return (p.get("aof_enabled") == 1 and not p.get("aof_rewrite_in_progress")
                    and not p.get("aof_rewrite_scheduled") and p.get("aof_last_bgrewrite_status") == "ok")

        _wait(proc, "the AOF rewrite", rewritten, deadline)
        try:
            client.shutdown(save=True)
        except redis.ConnectionError:
            pass
        proc.wait(timeout=60)
        if not (data_dir / appenddirname).is_dir():
            raise DriverError("the restore wrote no AOF", hint="check appenddirname")
        shutil.rmtree(aside, ignore_errors=True)
        return {"keys": facts["keys"], "expires": facts["expires"], "keys_by_db": facts["keys_by_db"],
                "aof": "rewritten"}
    except BaseException:
        # Put the old AOF back so the server starts as it was (the RDB alone is ignored while AOF is on).
        if aside.exists() and not (data_dir / appenddirname).exists():
            os.replace(aside, data_dir / appenddirname)
        raise
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.unlink(conf_path)


def _wait(proc: subprocess.Popen, what: str, cond: Callable[[], Any], deadline: Deadline) -> Any:
    """Wait for ``cond`` on the temporary redis-server ``proc`` (not answering yet or still loading is "not
    yet"); DriverError at once when ``proc`` exits."""
    def check() -> Any:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise DriverError(f"temporary redis-server exited while {what}: {out[-500:]}",
                              hint="is the RDB from a newer Redis than this host's redis-server?")
        return cond()

    return wait_until(what, check, deadline, interval_s=0.05,
                      retry_on=(redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError))


def replay_rdb(rdb: Path, host: str, port: int, password: SecretStr | str | None, username: str | None = None,
               *, redis_server: str | None = None, batch: int = 500, deadline_s: float = 1800,
               log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Restore ``rdb`` into the **running** Redis at ``host:port`` without touching its disk or container.

    A private temporary ``redis-server`` (no persistence, loopback, random password) loads the RDB; the target
    is emptied (``FLUSHALL``) and every key of every database is copied with ``DUMP`` / ``RESTORE … REPLACE``
    keeping its remaining TTL. Every write goes through the target's own command path, so with AOF on it is
    in the target's AOF (the "RDB copied back is ignored while AOF is on" trap cannot happen), and nothing
    needs a restart. The writers must be stopped by the caller; the target must be at least the RDB's version.

    Returns the counts the temporary server loaded and the counts the target holds afterwards.
    """
    binary = redis_server or shutil.which("redis-server") or "/usr/bin/redis-server"
    secret = plain(password)
    with tempfile.TemporaryDirectory(prefix="helix-redis-replay-") as tmp:
        os.symlink(Path(rdb).resolve(), Path(tmp) / "load.rdb")
        tport = _free_port()
        tpass = os.urandom(18).hex()
        conf = Path(tmp) / "redis.conf"
        conf.write_text("\n".join([f"port {tport}", "bind 127.0.0.1", f"dir {tmp}", "dbfilename load.rdb",
                                   "appendonly no", 'save ""', f"requirepass {tpass}", "daemonize no",
                                   "loglevel warning"]) + "\n")
        os.chmod(conf, 0o600)
        proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        src = redis.Redis(host="127.0.0.1", port=tport, password=tpass, socket_timeout=30)
        try:
            _wait(proc, "loading the RDB", lambda: src.ping() and not src.info("persistence").get("loading"),
                  Deadline(deadline_s))
            loaded = server_facts(src)
            log(f"temporary redis loaded {loaded['keys']} keys; replaying them into {host}:{port}")
            try:
                with connect(host, port, secret, username, timeout_s=60) as dst:
                    dst.flushall()
                for db in sorted(loaded["keys_by_db"]):
                    n = int(db[2:])
                    with redis.Redis(host="127.0.0.1", port=tport, password=tpass, db=n, socket_timeout=60) as s, \
                            redis.Redis(host=host, port=port, password=secret, username=username, db=n,
                                        socket_timeout=60) as d:
                        keys: list[bytes] = []

                        def flush() -> None:
                            pipe = s.pipeline(transaction=False)
                            for k in keys:
                                pipe.pttl(k)
                                pipe.dump(k)
                            got = pipe.execute()
                            out = d.pipeline(transaction=False)
                            for k, ttl, payload in zip(keys, got[0::2], got[1::2]):
                                if payload is None or ttl == -2:  # expired meanwhile
                                    continue
                                out.restore(k, max(int(ttl), 0) if ttl and ttl > 0 else 0, payload, replace=True)
                            out.execute()
                            keys.clear()

                        for key in s.scan_iter(count=1000):
                            keys.append(key)
                            if len(keys) >= batch:
                                flush()
                        if keys:
                            flush()
                with connect(host, port, secret, username) as dst:
                    after = server_facts(dst)
            except redis.RedisError as exc:
                raise DriverError(f"Redis at {host}:{port}: {type(exc).__name__} while replaying the backup",
                                  hint="is the target Redis up, the password right, its version >= the RDB's?"
                                  ) from exc
            return {"loaded": {k: loaded[k] for k in ("keys", "expires", "keys_by_db")},
                    "restored": {k: after[k] for k in ("keys", "expires", "keys_by_db")}}
        finally:
            src.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
