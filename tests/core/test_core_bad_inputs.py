"""A table of bad descriptors: each gives exactly one clear ConfigError naming its path, and through the
CLI exit code 2 with one line on stderr and no traceback."""

from __future__ import annotations

import pytest
from core_helpers import DELETE, descriptor_data, dump, mutate

from helix_ops.cli import main
from helix_ops.descriptor import parse_descriptor
from helix_ops.errors import ConfigError

# (id, text-producing function, expected path, expected message fragment)
PROD = descriptor_data("prod")


def m(path, value):
    return lambda: dump(mutate(PROD, path, value))


CASES = [
    ("unknown-top-key", m("colour", "blue"), "colour", "unknown key (expected one of:"),
    ("unknown-service-key", m("services.dashboard.replicas_max", 3), "services.dashboard.replicas_max", "unknown key"),
    ("unknown-service", m("services.mcp-search", {"image": {"repository": "x", "tag": "1"}}), "services.mcp-search", "unknown key"),
    ("replicas-string", m("services.dashboard.replicas", "3"), "services.dashboard.replicas", "expected an integer, got str '3'"),
    ("replicas-zero", m("services.dashboard.replicas", 0), "services.dashboard.replicas", "must be at least 1"),
    ("replicas-bool", m("services.dashboard.replicas", True), "services.dashboard.replicas", "expected an integer"),
    ("port-out-of-range", m("services.mcp-graph.port", 70000), "services.mcp-graph.port", "must be at most 65535"),
    ("port-zero", m("services.nginx.host_port", 0), "services.nginx.host_port", "must be at least 1"),
    ("tag-float", m("services.neo4j.image.tag", 5.26), "services.neo4j.image.tag", "expected a string, got float 5.26"),
    ("tag-latest", m("services.dashboard.image.tag", "latest"), "services.dashboard.image.tag", "tag 'latest' is refused"),
    ("image-missing", m("services.dashboard.image", DELETE), "services.dashboard.image", "required key is missing"),
    ("target-unknown", m("target", "swarm"), "target", "expected one of 'engine' or 'kubernetes'"),
    ("tls-string", m("ingress.tls", "yes"), "ingress.tls", "expected true or false"),
    ("mcp-graph-2-replicas", m("services.mcp-graph.replicas", 2), "services.mcp-graph.replicas", "single writer"),
    ("cluster-on-community", m("services.neo4j.edition", "community"), "services.neo4j.cluster_size", "needs edition enterprise"),
    ("cluster-of-two", m("services.neo4j.cluster_size", 2), "services.neo4j.cluster_size", "at least 3 servers"),
    ("memory-under-minimum", m("services.dashboard.resources.limits.memory", "128Mi"), "services.dashboard.resources.limits.memory", "below the guide's minimum of 256Mi"),
    ("neo4j-memory-under-minimum", m("services.neo4j.resources.requests.memory", "2Gi"), "services.neo4j.resources.requests.memory", "minimum of 4Gi"),
    ("export-workers-too-many", m("backup.export_workers", 9), "backup.export_workers", "must be at most 8"),
    ("export-workers-string", m("backup.export_workers", "2"), "backup.export_workers", "expected an integer"),
    ("memory-bad-unit", m("services.redis.maxmemory", "1GB"), "services.redis.maxmemory", "is not a memory size like 512Mi"),
    ("cpu-bad", m("services.dashboard.resources.limits.cpu", "fast"), "services.dashboard.resources.limits.cpu", "is not a CPU amount"),
    ("request-over-limit", m("services.dashboard.resources.requests.cpu", "2"), "services.dashboard.resources.requests.cpu", "more than the limit 500m"),
    ("heap-over-limit", m("services.neo4j.heap_max", "7Gi"), "services.neo4j.heap_max", "exceed the memory limit 8Gi"),
    ("sentinel-quorum", m("services.redis.sentinel.quorum", 5), "services.redis.sentinel.quorum", "more than the 3 sentinels"),
    ("redis-mode", m("services.redis.mode", "cluster"), "services.redis.mode", "expected one of 'single' or 'sentinel'"),
    ("inline-password", m("services.redis.password", "hunter2"), "services.redis.password", "looks like an inline secret"),
    ("inline-token-in-credentials", m("credentials.neo4j_token", "abc123"), "credentials.neo4j_token", "inline secret"),
    ("aws-key-value", m("backup.storage.prefix", "AKIAABCDEFGHIJKLMNOP"), "backup.storage.prefix", "AWS access key"),
    ("url-with-password", m("backup.storage.endpoint", "https://admin:pw@s3.example.com"), "backup.storage.endpoint", "URL with a password"),
    ("cron-bad", m("backup.schedules.neo4j", "0 25 * * *"), "backup.schedules.neo4j", "out of range 0-23"),
    ("cron-fields", m("backup.schedules.redis", "@hourly"), "backup.schedules.redis", "5 fields"),
    ("timezone-unknown", m("backup.timezone", "Mars/Olympus"), "backup.timezone", "unknown timezone"),
    ("storage-kind", m("backup.storage.kind", "ftp"), "backup.storage", "'kind'"),
    ("s3-without-credentials", m("credentials.storage", DELETE), "credentials.storage", "name the Prefect block"),
    ("block-name-bad", m("credentials.neo4j", "Helix Prod"), "credentials.neo4j", "does not match"),
    ("k8s-version-old", m("kubernetes.version", "1.20"), "kubernetes.version", "older than the guide's minimum 1.28"),
    ("k8s-version-number", m("kubernetes.version", 1.31), "kubernetes.version", "expected a string, got float"),
    ("namespace-bad", m("kubernetes.namespace", "Helix_NS"), "kubernetes.namespace", "does not match"),
    ("retention-negative", m("backup.retention.daily", -1), "backup.retention.daily", "must be at least 0"),
    ("services-list", m("services", ["dashboard"]), "services", "expected a mapping, got a list"),
    ("app-port-reserved", m("services.dashboard.port", 7687), "services.dashboard.port", "reserved for Neo4j/Redis"),
    ("malformed-yaml", lambda: "environment: prod\nservices: [\n", "line 3, column 1", "malformed YAML"),
    ("not-a-mapping", lambda: "- just\n- a list\n", "(top level)", "expected a mapping, got a list"),
    ("empty-file", lambda: "", "(top level)", "expected a mapping, got nothing (null)"),
    ("private-key", m("ingress.domain", "-----BEGIN RSA PRIVATE KEY-----"), "ingress.domain", "private key"),
]


@pytest.mark.parametrize(("text", "path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_descriptor_gives_one_error_naming_its_path(text, path, fragment):
    with pytest.raises(ConfigError) as info:
        parse_descriptor(text(), "bad.yaml")
    err = info.value
    assert err.path == path, err.one_line()
    assert fragment in err.message, err.one_line()
    line = str(err)
    assert "\n" not in line
    assert line.startswith(f"bad.yaml: {path}: ")


@pytest.mark.parametrize(("text", "path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_descriptor_through_cli_exits_2_with_one_line(text, path, fragment, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text())
    code = main(["validate", "--descriptor", str(bad)], environ={})
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0] == f"helix-ops: error: {bad}: {path}: " + lines[0].split(f"{path}: ", 1)[1]
    assert fragment in lines[0]
    assert "Traceback" not in err


def test_table_has_at_least_30_cases_with_distinct_ids():
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


def test_the_untouched_prod_descriptor_is_valid():
    assert parse_descriptor(dump(PROD)).environment == "prod"
