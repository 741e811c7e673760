"""The logical export's JVM reader (``exporter/``, built with ``mvn -B -q -f exporter/pom.xml package``): the same
lines as the Python workers of :mod:`drivers.neo4j_export` (which stay the oracle and the fallback), about 5x less
client CPU per node. :func:`drivers.neo4j_export.export_logical` uses it when the jar is built, ``java`` is on the
path and the URI is plain ``bolt://``; ``HELIX_EXPORTER=python`` turns it off.

It is one process with a thread and a Bolt connection per worker (its own Bolt 5.4 client: map keys in the order
the server sends them, as the Python driver keeps them, values written straight from Bolt's bytes), given the
Python path's queries and parts, and it answers with the Python worker's protocol (a header line and the part's
bytes, in order). A server it cannot log in to (another Bolt version, another auth scheme) makes it say so before
any part, and the export goes the Python way.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from helix_ops.errors import DriverError

EXPORTER_DIR = Path(__file__).resolve().parents[1] / "exporter" / "target"
JAR = EXPORTER_DIR / "helix-export.jar"
MAIN = "dev.helixops.export.HelixExport"
JVM_OPTS = ("-Xms16m", "-Xmx96m", "-XX:+UseSerialGC", "-XX:MaxMetaspaceSize=48m", "-XX:ReservedCodeCacheSize=48m",
            "-Xss512k", "-XX:-UsePerfData")
"""Small and fixed: a part (2500 ids) is a few MiB, the parts in flight at most 2 per worker."""


class Unavailable(Exception):
    """The JVM reader cannot serve this export (not built, no java, a URI or server it does not speak)."""


def available(uri: str) -> bool:
    if os.environ.get("HELIX_EXPORTER", "").lower() == "python":
        return False
    return JAR.is_file() and shutil.which("java") is not None and urlsplit(uri).scheme == "bolt"


def _b64(value: object) -> bytes:
    return base64.b64encode(str(value).encode()) + b"\n"


class JvmExport:
    """One exporter process for ``parts``; :meth:`parts` yields ``(count, kinds, pieces)`` in order."""

    def __init__(self, connect: tuple[str, str, str, str], queries: tuple[str, str, str, str],
                 parts: list[tuple[str, int, int]], workers: int, chunk: int) -> None:
        uri, user, password, database = connect
        u = urlsplit(uri)
        if u.scheme != "bolt" or not u.hostname:
            raise Unavailable(f"the JVM reader speaks plain bolt:// only, not {u.scheme}://")
        argv = [shutil.which("java") or "java", *JVM_OPTS, "-cp", f"{JAR}{os.pathsep}{EXPORTER_DIR / 'lib'}/*", MAIN]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=None if os.environ.get("HELIX_EXPORTER_DEBUG") else subprocess.PIPE)
        try:
            cfg = b"".join(_b64(x) for x in (u.hostname, u.port or 7687, user, password, database, *queries,
                                             max(1, workers), chunk))
            cfg += b"".join(f"{k} {lo} {hi}\n".encode() for k, lo, hi in parts)
            self.proc.stdin.write(cfg)  # the password on a pipe, not argv
            self.proc.stdin.close()
            first = self.proc.stdout.readline()
            head = orjson.loads(first) if first.strip() else {}
        except (OSError, ValueError) as exc:
            self.close()
            raise Unavailable(f"the JVM reader did not start: {exc}") from None
        if not head.get("ready"):
            self.close()
            if head.get("fallback"):
                raise Unavailable(head.get("error", "refused"))
            raise Unavailable(f"the JVM reader exited (code {self.proc.returncode}): {self._stderr()}")

    def _stderr(self) -> str:
        try:
            return self.proc.stderr.read()[-2000:].decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""

    def parts(self, n: int) -> Iterator[tuple[int, dict[str, int], Iterator[bytes]]]:
        for _ in range(n):
            line = self.proc.stdout.readline()
            if not line:
                raise DriverError(f"the JVM export reader exited (code {self.proc.wait()}): {self._stderr()}",
                                  hint="its last lines are above; is the machine out of memory?")
            head = orjson.loads(line)
            if "error" in head:
                raise DriverError(head["error"], hint=head["hint"])
            yield head["count"], head["kinds"], self._pieces(head["size"])

    def _pieces(self, size: int, piece: int = 1 << 20) -> Iterator[bytes]:
        while size > 0:
            got = self.proc.stdout.read(min(size, piece))
            if not got:
                raise DriverError("the JVM export reader's output ended early", hint="did it get killed?")
            size -= len(got)
            yield got

    def close(self) -> None:
        """End the process (killed if it is still busy after 10 s: it holds only read transactions)."""
        proc: Any = self.proc
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            proc.stderr.close()
        except (OSError, ValueError):
            pass
