"""Redis 7 from Debian's ``redis-server`` with a password, AOF on and its own data folder."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from testbed import procs


def render_conf(data_dir: Path, port: int, password: str) -> str:
    """redis.conf for a loopback-only server with AOF on (everysec) and RDB snapshots in ``data_dir``."""
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        "protected-mode yes",
        f"dir {data_dir}",
        "daemonize no",
        "appendonly yes",
        "appendfsync everysec",
        'appenddirname "appendonlydir"',
        "dbfilename dump.rdb",
        "save 900 1",
        f"requirepass {password}",
        "loglevel notice",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class RedisServer:
    """One redis-server on loopback; its config file is mode 0600 (it holds the password)."""

    home: Path
    port: int
    password: str
    proc: procs.Proc | None = field(default=None, repr=False)

    @property
    def conf_path(self) -> Path:
        return self.home / "redis.conf"

    def start(self, deadline_s: float = 30) -> None:
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.conf_path.touch(mode=0o600)
        self.conf_path.write_text(render_conf(data, self.port, self.password))
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = procs.start("redis", [binary, str(self.conf_path)], self.home)
        procs.wait_until(f"redis on 127.0.0.1:{self.port}", self._ping, deadline_s)

    def client(self, **kwargs):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kwargs)

    def _ping(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise RuntimeError(f"redis exited; log tail:\n{self.proc.log_tail()}")
        with self.client(socket_timeout=1) as c:
            return bool(c.ping())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
