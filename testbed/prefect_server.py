"""A real Prefect server (``prefect server start``, SQLite) on loopback, with its own PREFECT_HOME."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from testbed import procs

QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_UI_ENABLED": "false",
}


@dataclass
class PrefectServer:
    home: Path
    port: int
    proc: procs.Proc | None = field(default=None, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def env(self) -> dict[str, str]:
        """Environment for a client (CLI, worker, flow) that talks to this server."""
        return {**QUIET, "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api_url}

    def start(self, deadline_s: float = 180) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**QUIET, "PREFECT_HOME": str(self.home),
               "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
               "PREFECT_LOGGING_LEVEL": "WARNING"}
        prefect = str(Path(sys.executable).with_name("prefect"))
        argv = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = procs.start("prefect-server", argv, self.home, env=env)
        procs.wait_until(f"prefect server on {self.api_url}", self._healthy, deadline_s, interval_s=0.5)

    def _healthy(self) -> bool:
        import httpx

        if self.proc is not None and not self.proc.alive():
            raise RuntimeError(f"prefect server exited; log tail:\n{self.proc.log_tail()}")
        return httpx.get(f"{self.api_url}/health", timeout=2).json() is True

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
