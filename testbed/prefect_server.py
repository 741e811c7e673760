"""A real Prefect server (``prefect server start``, SQLite) on loopback, with its own PREFECT_HOME.

The server runs Prefect's event services (event persister, reactive and proactive triggers, actions: all on
by default in ``prefect server start``), so automations fire and send their notifications (tests/notifications).

The UI is off unless asked for (``ui=True``): the quickstart serves it on a fixed port (4200 by default), the
test bed (for the browser tests in ``tests/ui``) on its random port. Then ``ui_url`` is where a browser opens it.
"""

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
    ui: bool = False
    proc: procs.Proc | None = field(default=None, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for a client (CLI, worker, flow) that talks to this server."""
        env = {**QUIET, "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api_url}
        if self.ui:  # the CLI then prints links into the UI (`prefect deployment run` names the run's page)
            env["PREFECT_UI_URL"] = self.ui_url
        return env

    def start(self, deadline_s: float = 180) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**QUIET, "PREFECT_HOME": str(self.home),
               "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
               "PREFECT_LOGGING_LEVEL": "WARNING"}
        if self.ui:
            # PREFECT_UI_URL: the server's own links (the `ui_url` filter of automations' notifications, see
            # blocks/notifications.py) name the run's page; unset, a notification says "UI: None"
            env.update({"PREFECT_SERVER_UI_ENABLED": "true", "PREFECT_UI_ENABLED": "true",
                        "PREFECT_SERVER_UI_API_URL": self.api_url, "PREFECT_UI_API_URL": self.api_url,
                        "PREFECT_UI_URL": self.ui_url})
        prefect = str(Path(sys.executable).with_name("prefect"))
        argv = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = procs.start("prefect-server", argv, self.home, env=env)
        procs.wait_until(f"prefect server on {self.api_url}", self._healthy, deadline_s, interval_s=0.5)

    def _healthy(self) -> bool:
        import httpx

        if self.proc is not None and not self.proc.alive():
            raise RuntimeError(f"prefect server exited; log tail:\n{self.proc.log_tail()}")
        if httpx.get(f"{self.api_url}/health", timeout=2).json() is not True:
            return False
        # the UI's page (its static files are copied into PREFECT_HOME at start): a real page, not an error
        return not self.ui or "<div id=\"app\"" in httpx.get(self.ui_url, timeout=5).text

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
