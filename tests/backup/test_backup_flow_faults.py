"""Faults at the level of the backup-helix FLOW (issue 5), against the session's deployed local stack
(``helix_stack``), the real engine, Neo4j, Redis, S3Proxy and Prefect's test harness:

* the flow process SIGKILLed mid-backup (while the Neo4j export object is being written, with mcp-graph
  stopped for the export): no manifest, the earlier backup still verifies deeply, the killed run's lease and
  writer pause are recovered by the next run on its own (no lease break by hand), which succeeds, and
  mcp-graph runs and answers its health probe again;
* S3 unreachable from the start (a closed port): one error naming the endpoint with a hint, after the S3
  client's retries, nothing listed, mcp-graph never stopped;
* S3 lost in the middle of the export (a TCP proxy in front of S3Proxy cut when the Neo4j object's upload
  starts; the shared S3Proxy stays up): the same one error after the client's and the task's retries,
  mcp-graph stopped for the window and started again (healthy), nothing listed and nothing left in the bucket.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from drivers.storage import LocalStore, S3Store, s3_client
from flows.backup import backup_helix
from helix_ops.errors import DriverError

pytestmark = pytest.mark.bed

REPO = Path(__file__).resolve().parents[2]
WRITER = "mcp-graph"
BULK_NODES = 30000  # a Neo4j export of a few seconds: the kill lands inside it

KILLABLE = """
import json, sys
sys.path.insert(0, {repo!r})
from flows.backup import backup_helix
args = json.loads(sys.argv[1])
print("result", json.dumps(backup_helix(**args)), flush=True)
"""


@pytest.fixture(scope="module")
def deployed(helix_stack):
    return dict(helix_stack)


def _secrets(deployed):
    from blocks.secrets import load_environment_secrets
    from helix_ops.descriptor import load_descriptor

    return load_environment_secrets(load_descriptor(deployed["path"]))


def _neo4j(deployed):
    import neo4j

    row = [r for r in deployed["result"]["status"] if r["service"] == "neo4j"][0]
    host, port = row["endpoint"].rsplit(":", 1)
    s = _secrets(deployed)
    return neo4j.GraphDatabase.driver(f"bolt://{host}:{port}",
                                      auth=(s.neo4j_user, s.neo4j_password.get_secret_value()))


def _writer_containers(engine, deployed):
    """``{name: (status, started_at)}`` of every mcp-graph container of the stack."""
    from drivers.engine import EngineDriver

    d = EngineDriver.connect(engine.base_url, deployed["project"], "local")
    out = {}
    for c in d.containers(WRITER):
        c.reload()
        out[c.name] = (c.status, c.attrs["State"].get("StartedAt"))
    return out


def _writer_healthy(engine, deployed) -> list[str]:
    """The mcp-graph health probe, answered by every replica (raises otherwise)."""
    from drivers.engine import EngineDriver
    from drivers.engine_health import http_check
    from helix_ops.descriptor import load_descriptor
    from helix_ops.stack import build_stack

    probe = build_stack(load_descriptor(deployed["path"])).service(WRITER).probe
    d = EngineDriver.connect(engine.base_url, deployed["project"], "local")
    replicas = d.containers(WRITER)
    assert replicas, "no mcp-graph container"
    lines = []
    for c in replicas:
        assert c.status == "running", f"{c.name} is {c.status}"
        host, port = d.probe_address(c, probe.port)
        lines.append(http_check(host, port, probe.path or "/")())
    return lines


class RetryLog(logging.Handler):
    """Counts botocore's "Retry needed" decisions (its standard retry mode logs each one at DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Retry needed, retrying"):
            self.retries += 1

    def __enter__(self) -> RetryLog:
        self._logger = logging.getLogger("botocore.retries.standard")
        self._level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


def _no_prefect_records():
    from flows.lease import holder_variable
    from tasks.writer_pause import read_pause
    from prefect.variables import Variable

    assert read_pause("local") is None, "the writer-pause record was not cleared"
    assert Variable.get(holder_variable("local"), default=None) is None, "the lease-holder record was left"


# --- 1. the flow process killed mid-backup ------------------------------------------------------------------


@pytest.fixture
def bulk_graph(deployed):
    """Enough nodes that the export takes seconds; removed afterwards (other modules share the stack)."""
    with _neo4j(deployed) as drv:
        drv.execute_query("UNWIND range(1, $n) AS i CREATE (:FaultBulk {i: i, text: $pad + toString(i)})",
                          n=BULK_NODES, pad="x" * 120)
        yield
        drv.execute_query("MATCH (n:FaultBulk) DETACH DELETE n")


@pytest.mark.timeout(480)
def test_flow_killed_mid_backup_leaves_no_manifest_and_the_next_run_recovers(deployed, engine, bulk_graph,
                                                                              tmp_path):
    from prefect.settings import PREFECT_API_URL
    from prefect.variables import Variable

    from flows.lease import holder_variable
    from tasks.writer_pause import read_pause

    root = tmp_path / "backups"
    store = LocalStore(root)
    args = {"env": "local", "descriptor": str(deployed["path"]), "engine_url": engine.base_url,
            "storage_path": str(root)}

    first = backup_helix(**args)  # the earlier backup, which the kill must leave intact
    earlier = [m.backup_id for m in store.list()]
    assert earlier == [first["backup_id"]]
    time.sleep(1.1)  # a distinct second in the next id

    log = tmp_path / "killed-run.log"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    with open(log, "w") as out:
        victim = subprocess.Popen([sys.executable, "-c", KILLABLE.format(repo=str(REPO)), json.dumps(args)],
                                  cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        partial = None
        deadline = time.monotonic() + 180
        while partial is None and time.monotonic() < deadline:
            assert victim.poll() is None, f"the backup ended before the kill:\n{log.read_text()[-3000:]}"
            partial = next((p for p in root.glob("*/neo4j.jsonl.zst.partial") if p.parent.name not in earlier),
                           None)
            time.sleep(0.02)
        assert partial is not None, f"no Neo4j export started within 180 s:\n{log.read_text()[-3000:]}"
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        if victim.poll() is None:
            os.kill(victim.pid, signal.SIGKILL)
        victim.wait(30)
    assert victim.returncode == -signal.SIGKILL
    killed_id = partial.parent.name

    # What the kill left: no backup, an orphan, the earlier backup intact, the writer stopped (the bug's
    # scenario: the finally that starts it never ran), the pause and the lease holder recorded.
    assert [m.backup_id for m in store.list()] == earlier
    assert killed_id in store.orphans()
    store.verify(earlier[0], deep=True)
    writers = _writer_containers(engine, deployed)
    assert writers and all(status != "running" for status, _ in writers.values()), writers
    pause = read_pause("local")
    assert pause is not None and sorted(pause["containers"]) == sorted(writers)
    holder = Variable.get(holder_variable("local"), default=None)
    assert holder and holder["pid"] == victim.pid and holder["lease_id"], holder

    # The next run: releases the dead holder's lease itself (no break by hand, no wait for a TTL), starts the
    # writer the killed run left stopped, and backs up.
    t0 = time.monotonic()
    second = backup_helix(**args)
    took = time.monotonic() - t0
    print(f"next run after the kill: {took:.1f}s")
    assert took < 150, f"the next run waited {took:.0f}s (for the killed run's lease?)"
    assert [m.backup_id for m in store.list()] == earlier + [second["backup_id"]]
    assert second["backup_id"] != killed_id
    for bid in earlier + [second["backup_id"]]:
        store.verify(bid, deep=True)
    assert second["counts"]["neo4j"]["nodes"] >= BULK_NODES
    assert second["writer_window"]["paused"] and sorted(second["writer_window"]["containers"]) == sorted(writers)
    after = _writer_containers(engine, deployed)
    assert set(after) == set(writers) and all(status == "running" for status, _ in after.values()), after
    assert all(line.startswith("HTTP 200") for line in _writer_healthy(engine, deployed))
    _no_prefect_records()

    # And a run after that one is an ordinary run (nothing left to recover).
    time.sleep(1.1)
    third = backup_helix(**args)
    assert len(store.list()) == 3 and third["writer_window"]["paused"]
    _writer_healthy(engine, deployed)


# --- 2. S3 unreachable -------------------------------------------------------------------------------------


def _s3_descriptor(deployed, tmp_path, block: str, bucket: str, prefix: str, endpoint: str) -> Path:
    data = yaml.safe_load(Path(deployed["path"]).read_text())
    data["backup"]["storage"] = {"kind": "s3", "bucket": bucket, "prefix": prefix, "endpoint": endpoint}
    data["credentials"]["storage"] = block
    path = tmp_path / "local-s3.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _save_blocks(block: str, bucket: str, prefix: str, endpoint: str, s3) -> None:
    from pydantic import SecretStr

    from blocks.storage import save_s3_storage

    save_s3_storage(block, bucket, prefix=prefix, access_key_id=s3.access_key,
                    secret_access_key=SecretStr(s3.secret_key), endpoint_url=endpoint, overwrite=True)


@pytest.fixture
def s3_bucket(bed):
    s3 = bed.s3()
    bucket = "hx-faults-" + secrets.token_hex(4)
    s3.client().create_bucket(Bucket=bucket)
    return s3, bucket


def _bucket_keys(s3, bucket) -> list[str]:
    c = s3.client()
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = [u["Key"] for u in c.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return keys + [f"(upload) {k}" for k in uploads]


def test_s3_unreachable_fails_after_retries_with_one_clear_error_and_nothing_marked(deployed, engine, s3_bucket,
                                                                                     tmp_path):
    s3, bucket = s3_bucket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    block = "helix-faults-s3-closed"
    _save_blocks(block, bucket, "closed", endpoint, s3)
    path = _s3_descriptor(deployed, tmp_path, block, bucket, "closed", endpoint)
    before = _writer_containers(engine, deployed)

    t0 = time.monotonic()
    with RetryLog() as retries, pytest.raises(DriverError) as err:
        backup_helix(env="local", descriptor=str(path), engine_url=engine.base_url)
    took = time.monotonic() - t0
    message = str(err.value)
    print(f"S3 closed port: failed after {took:.1f}s, {retries.retries} client retries: {message}")
    assert endpoint in message and "EndpointConnectionError" in message
    assert "hint: is the endpoint reachable" in message
    assert "tried 4 times" in message  # s3_client(max_attempts=3): 1 try + 3 retries per request
    assert retries.retries >= 3, "the S3 client did not retry"
    assert took < 90
    assert s3.secret_key not in message
    # nothing was marked complete: the same bucket and prefix through a reachable endpoint hold nothing
    assert S3Store(s3_client(s3.endpoint, s3.access_key, s3.secret_key), bucket, "closed").list() == []
    assert _bucket_keys(s3, bucket) == []
    # the storage failed before the writer window: mcp-graph was never stopped, and it is healthy
    assert _writer_containers(engine, deployed) == before
    _writer_healthy(engine, deployed)
    _no_prefect_records()


class CuttableProxy:
    """A TCP proxy in front of the test bed's S3Proxy that "loses the network" (closes its listener and every
    connection) when a request names ``trigger``; S3Proxy itself stays up for the other tests."""

    def __init__(self, upstream_port: int, trigger: bytes) -> None:
        self.upstream_port, self.trigger = upstream_port, trigger
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_at: float | None = None
        self.requests_before_cut = 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while self.cut_at is None:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                if self.cut_at is not None:
                    client.close()
                    upstream.close()
                    return
                self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if outbound and self.trigger in data:
                    self.cut()
                    return
                if outbound and data[:4] in (b"GET ", b"PUT ", b"POST", b"DELE", b"HEAD"):
                    self.requests_before_cut += 1
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            if self.cut_at is None:
                self.cut_at = time.monotonic()
            self.listener.close()
            for s in self._socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


@pytest.mark.timeout(300)
def test_s3_lost_mid_export_fails_after_retries_restarts_the_writer_and_marks_nothing(deployed, engine, s3_bucket,
                                                                                       tmp_path):
    s3, bucket = s3_bucket
    proxy = CuttableProxy(s3.port, trigger=b"/neo4j.jsonl.zst")
    block = "helix-faults-s3-cut"
    _save_blocks(block, bucket, "cut", proxy.endpoint, s3)
    path = _s3_descriptor(deployed, tmp_path, block, bucket, "cut", proxy.endpoint)
    before = _writer_containers(engine, deployed)

    t0 = time.monotonic()
    try:
        with RetryLog() as retries, pytest.raises(DriverError) as err:
            backup_helix(env="local", descriptor=str(path), engine_url=engine.base_url)
    finally:
        proxy.cut()
    took = time.monotonic() - t0
    message = str(err.value)
    print(f"S3 lost mid-export: failed after {took:.1f}s, {proxy.requests_before_cut} requests went through "
          f"before the cut, {retries.retries} client retries: {message}")
    assert proxy.cut_at is not None and proxy.requests_before_cut >= 2  # the store was reachable, then lost
    assert proxy.endpoint in message and "hint: is the endpoint reachable" in message
    assert "while uploading" in message  # the Neo4j object's upload, after the store was checked writable
    # the client retried every request, and Prefect retried the export task twice on top (3 exports)
    assert retries.retries >= 9, retries.retries
    assert s3.secret_key not in message
    # nothing marked complete, and nothing left behind in the bucket
    assert S3Store(s3_client(s3.endpoint, s3.access_key, s3.secret_key), bucket, "cut").list() == []
    assert _bucket_keys(s3, bucket) == []
    # the writer was stopped for the export window (it was started again: a new start time) and is healthy
    after = _writer_containers(engine, deployed)
    assert set(after) == set(before)
    assert all(status == "running" for status, _ in after.values()), after
    assert all(after[n][1] != before[n][1] for n in before), "mcp-graph was never paused"
    _writer_healthy(engine, deployed)
    _no_prefect_records()
