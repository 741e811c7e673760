"""What the real node did around a failed request: a record of the namespace's EndpointSlices and pods (polled
every 0.25 s while a load runs) and kube-proxy's rule syncs, printed for the seconds around each failure.

A test under load that loses a request says why with it: was the endpoint of the pod that refused still in the
Service's slice, had kube-proxy synced its rules after the pod left it, did a readiness probe fail?"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from pathlib import Path

POLL_S = 0.25
GLOG_TIME = re.compile(r"^[IWE](\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2}\.\d+)")


def _slice_state(obj: dict) -> str:
    service = obj["metadata"].get("labels", {}).get("kubernetes.io/service-name", "?")
    eps = []
    for e in obj.get("endpoints") or []:
        c = e.get("conditions") or {}
        flags = "".join(f for f, k in (("R", "ready"), ("S", "serving"), ("T", "terminating")) if c.get(k))
        pod = (e.get("targetRef") or {}).get("name", "?")
        eps.append(f"{pod}({','.join(e.get('addresses', []))}):{flags or '-'}")
    return f"slice {service}: " + " ".join(sorted(eps))


def _pod_state(obj: dict) -> str:
    st = obj.get("status") or {}
    ready = all(c.get("ready") for c in st.get("containerStatuses") or [{}])
    gone = " deleting" if obj["metadata"].get("deletionTimestamp") else ""
    return f"pod {obj['metadata']['name']} {st.get('podIP', '-')} {st.get('phase')} ready={ready}{gone}"


class Timeline:
    """Polls ``admin``'s namespace in a thread between ``start()`` and ``stop()``; records each change."""

    def __init__(self, admin, proxy_log: Path | None = None) -> None:
        self.admin, self.proxy_log = admin, proxy_log
        self.entries: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def start(self) -> Timeline:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        seen: dict[str, str] = {}
        while not self._stop.is_set():
            try:
                now = {}
                for key, obj in self.admin.objects(("EndpointSlice", "Pod")).items():
                    now[key] = _slice_state(obj) if key.startswith("EndpointSlice/") else _pod_state(obj)
                at = time.time()
                for key, state in now.items():
                    if seen.get(key) != state:
                        self.entries.append((at, state))
                for key in seen.keys() - now.keys():
                    self.entries.append((at, f"{key} gone"))
                seen = now
            except Exception as exc:  # noqa: BLE001 - a diagnostic: record and go on
                self.entries.append((time.time(), f"poll failed: {exc!r}"[:200]))
            self._stop.wait(POLL_S)

    def _proxy_lines(self) -> list[tuple[float, str]]:
        if not self.proxy_log or not self.proxy_log.exists():
            return []
        year = dt.datetime.now(dt.timezone.utc).year
        out = []
        for line in self.proxy_log.read_text(errors="replace").splitlines():
            m = GLOG_TIME.match(line)
            if m:
                mo, d, h, mi, s = m.groups()
                when = dt.datetime(year, int(mo), int(d), int(h), int(mi), tzinfo=dt.timezone.utc).timestamp()
                out.append((when + float(s), "kube-proxy: " + line[30:200]))
        return out

    def around(self, times: list[float], before_s: float = 15, after_s: float = 3) -> str:
        """Every record (and kube-proxy log line) from ``before_s`` before to ``after_s`` after each of ``times``
        (wall clock), each with its offset from that time."""
        events = sorted(self.entries + self._proxy_lines())
        parts = []
        for t in times:
            parts.append(f"--- around the failure at {dt.datetime.fromtimestamp(t, dt.timezone.utc):%H:%M:%S.%f}")
            parts += [f"{at - t:+7.2f}s {what}" for at, what in events if t - before_s <= at <= t + after_s]
        return "\n".join(parts)
