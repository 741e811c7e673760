"""Each part of the test bed is real: these tests talk to the servers the way helix-ops will."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import boto3.s3.transfer
import httpx
import neo4j
import neo4j.exceptions
import pytest
import redis

from testbed import procs
from testbed.bed import Bed, reap_stale_runs
from testbed.paths import runs_dir

pytestmark = pytest.mark.bed


def test_neo4j_is_526_community_with_auth(neo4j_server):
    rows = neo4j_server.query("CALL dbms.components() YIELD name, versions, edition RETURN *")
    assert rows[0]["name"] == "Neo4j Kernel"
    assert rows[0]["edition"] == "community"
    assert rows[0]["versions"][0].startswith("5.26.")
    with neo4j.GraphDatabase.driver(neo4j_server.uri, auth=("neo4j", "not-the-password")) as driver:
        with pytest.raises(neo4j.exceptions.AuthError):
            driver.verify_connectivity()


def test_neo4j_runs_with_the_heap_its_conf_names(neo4j_server):
    """The launcher gives the server JVM $JAVA_OPTS *instead of* neo4j.conf's heap: the bed once ran every
    server with a 96 MiB heap that way, and a 1M-node index population ran out of it."""
    rows = neo4j_server.query("CALL dbms.queryJmx('java.lang:type=Memory') YIELD attributes "
                              "RETURN attributes.HeapMemoryUsage.value.properties.max AS max")
    want = {"512m": 512 * 2**20, "1g": 2**30, "2g": 2**31}[neo4j_server.heap]
    assert want * 0.9 <= rows[0]["max"] <= want * 1.1


def test_neo4j_dump_and_load_round_trip_a_graph(bed):
    server = bed.new_neo4j("neo4j-dump")
    try:
        server.query("UNWIND range(1, 50) AS i CREATE (:Person {uid: 'p' + i, n: i})")
        server.query("MATCH (a:Person), (b:Person) WHERE b.n = a.n + 1 CREATE (a)-[:NEXT {w: a.n}]->(b)")
        server.stop()
        dump = server.dump(server.home / "dumps")
        assert dump.stat().st_size > 0
        server.start()
        server.query("MATCH (n) DETACH DELETE n")
        assert server.query("MATCH (n) RETURN count(n) AS c") == [{"c": 0}]
        server.stop()
        server.load(server.home / "dumps")
        server.start()
        assert server.query("MATCH (n:Person) RETURN count(n) AS c") == [{"c": 50}]
        assert server.query("MATCH ()-[r:NEXT]->() RETURN count(r) AS c, sum(r.w) AS w") == [{"c": 49, "w": 1225}]
    finally:
        server.stop()


def test_neo4j_dump_refuses_a_running_community_server(bed, neo4j_server):
    from helix_ops.errors import CommandFailed

    with pytest.raises(CommandFailed):
        neo4j_server.dump(neo4j_server.home / "dumps-while-running")


def test_redis_is_7_with_aof_and_auth(redis_server):
    with redis_server.client() as client:
        info = client.info("server")
        assert info["redis_version"].startswith("7.")
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    with redis.Redis(host="127.0.0.1", port=redis_server.port, password="wrong") as bad:
        with pytest.raises(redis.exceptions.AuthenticationError):
            bad.ping()
    with redis.Redis(host="127.0.0.1", port=redis_server.port) as anonymous:
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.get("k")


def test_s3proxy_round_trips_objects_and_multipart(s3_server, tmp_path):
    s3 = s3_server.client()
    s3.create_bucket(Bucket="helix-backups")
    s3.put_object(Bucket="helix-backups", Key="a/small.txt", Body=b"hello helix")
    assert s3.get_object(Bucket="helix-backups", Key="a/small.txt")["Body"].read() == b"hello helix"

    payload = os.urandom(11 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(payload)
    config = boto3.s3.transfer.TransferConfig(multipart_threshold=5 * 1024 * 1024,
                                              multipart_chunksize=5 * 1024 * 1024)
    s3.upload_file(str(src), "helix-backups", "a/big.bin", Config=config)
    head = s3.head_object(Bucket="helix-backups", Key="a/big.bin")
    assert head["ContentLength"] == len(payload)
    assert head["ETag"].strip('"').endswith("-3")  # three parts: it really was a multipart upload
    assert s3.get_object(Bucket="helix-backups", Key="a/big.bin")["Body"].read() == payload

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="helix-backups", Prefix="a/")["Contents"]]
    assert keys == ["a/big.bin", "a/small.txt"]
    s3.delete_object(Bucket="helix-backups", Key="a/small.txt")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="helix-backups", Prefix="a/")["Contents"]]
    assert keys == ["a/big.bin"]


def _wait_health(url: str, want_status: int, deadline_s: float = 60) -> dict:
    def check():
        r = httpx.get(url, timeout=3)
        return r.json() if r.status_code == want_status else None

    return procs.wait_until(f"{url} answering {want_status}", check, deadline_s, interval_s=0.5)


def test_probe_container_reports_the_neo4j_and_redis_it_reached(bed, docker_client, images):
    labels = bed.container_labels()
    net = docker_client.networks.create(f"tb-{bed.run_id}", labels=labels)
    neo4j_pw, redis_pw = "neo4j-" + os.urandom(8).hex(), "redis-" + os.urandom(8).hex()
    try:
        docker_client.containers.run(
            images["redis"], ["/etc/redis/redis.conf", "--requirepass", redis_pw], detach=True, name=f"redis-{bed.run_id}",
            network=net.name, labels=labels)
        docker_client.containers.run(
            images["neo4j"], detach=True, name=f"neo4j-{bed.run_id}", network=net.name, labels=labels,
            environment={"NEO4J_AUTH": f"neo4j/{neo4j_pw}", "NEO4J_server_memory_heap_max__size": "512m",
                         "NEO4J_server_memory_pagecache_size": "64m"})

        def probe(password: str, version_image: str) -> str:
            port = procs.free_port()
            docker_client.containers.run(
                version_image, detach=True, network=net.name, labels=labels, ports={"3000/tcp": ("127.0.0.1", port)},
                environment={"HELIX_SERVICE": "mcp-graph", "NEO4J_URI": f"bolt://neo4j-{bed.run_id}:7687",
                             "NEO4J_USER": "neo4j", "NEO4J_PASSWORD": password, "REDIS_HOST": f"redis-{bed.run_id}",
                             "REDIS_PORT": "6379", "REDIS_PASSWORD": redis_pw, "PROBE_CHECK_CACHE_MS": "0"})
            return f"http://127.0.0.1:{port}/api/health"

        good = _wait_health(probe(neo4j_pw, images["probe-v1"]), 200, deadline_s=120)
        assert good["status"] == "ok" and good["service"] == "mcp-graph" and good["version"] == "v1"
        assert good["checks"]["neo4j"]["ok"] and good["checks"]["neo4j"]["target"] == f"neo4j-{bed.run_id}:7687"
        assert good["checks"]["redis"]["ok"] and good["checks"]["redis"]["target"] == f"redis-{bed.run_id}:6379"

        bad = _wait_health(probe("wrong-password", images["probe-v2"]), 503)
        assert bad["status"] == "unhealthy" and bad["version"] == "v2"
        assert not bad["checks"]["neo4j"]["ok"] and bad["checks"]["redis"]["ok"]
        assert "wrong-password" not in json.dumps(bad)

        broken = _wait_health(probe(neo4j_pw, images["probe-broken"]), 503)
        assert broken["status"] == "unhealthy"
    finally:
        bed.engine().remove_labelled(owner=bed.run_id)  # its containers, then its networks (this one too)
    assert net.name not in [n.name for n in docker_client.networks.list()]


def test_images_are_cached_by_their_inputs(bed, docker_client, images):
    from testbed.images import ensure_images

    said: list[str] = []
    assert ensure_images(docker_client, log=said.append) == images
    assert said == []  # nothing rebuilt: every image's inputs are unchanged


def test_prefect_server_answers_and_runs_a_flow(prefect_server, tmp_path):
    assert httpx.get(f"{prefect_server.api_url}/health", timeout=5).json() is True
    script = tmp_path / "flow.py"
    script.write_text(
        "from prefect import flow, task\n"
        "@task\ndef double(x): return 2 * x\n"
        "@flow(name='testbed-smoke')\ndef smoke(): return double(21)\n"
        "print(smoke())\n")
    out = subprocess.run([sys.executable, str(script)], env={**os.environ, **prefect_server.env()},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "42"
    # the server is the session's: other tests' runs are there too, so look at this flow's runs only
    flows = httpx.post(f"{prefect_server.api_url}/flows/filter",
                       json={"flows": {"name": {"any_": ["testbed-smoke"]}}}, timeout=10).json()
    runs = httpx.post(f"{prefect_server.api_url}/flow_runs/filter",
                      json={"flows": {"id": {"any_": [f["id"] for f in flows]}}}, timeout=10).json()
    assert [(r["name"] != "", r["state_type"]) for r in runs] == [(True, "COMPLETED")]


def test_prefect_harness_runs_a_flow(prefect_harness):
    from prefect import flow

    @flow
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5


def test_a_crashed_run_is_cleaned_up_by_the_next(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    crashed = Bed.create(owner_pid=dead.pid, log=lambda m: None)
    server = crashed.redis()
    pid = server.proc.pid
    assert procs.pid_alive(pid)
    crashed._parts.clear()  # the owner "crashed": nothing stops its servers

    reaped = reap_stale_runs(log=lambda m: None)
    assert crashed.run_id in reaped
    deadline = time.monotonic() + 10
    while procs.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not procs.pid_alive(pid)
    assert not (runs_dir() / crashed.run_id).exists()


def test_a_pid_file_another_tool_wrote_is_left_alone(tmp_path):
    foreign = tmp_path / "conmon.pid"
    foreign.write_text("12345")  # a bare pid (JSON, but not our record): reaping crashed on it once
    assert procs.reap_stale(foreign) is False
    assert foreign.exists()
