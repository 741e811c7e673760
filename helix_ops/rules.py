"""Rules a descriptor must follow beyond its types: scaling, topology and sizing.

Each check is a small pure function returning the violations it found as ``(path, message)`` pairs;
:func:`check_rules` raises the first one as a :class:`ConfigError`, before anything is rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from helix_ops.descriptor import Descriptor
from helix_ops.errors import ConfigError
from helix_ops.guide import APP_SERVICES, SERVICE_NAMES, SINGLE_WRITER, SIZING
from helix_ops.quantities import cpu_millis, human_memory, memory_bytes

Violation = tuple[str, str]


def single_writer(d: Descriptor) -> Iterator[Violation]:
    """mcp-graph is the only writer to Neo4j: exactly one replica."""
    replicas = d.services.mcp_graph.replicas
    if replicas != 1:
        yield (
            f"services.{SINGLE_WRITER}.replicas",
            f"mcp-graph is the single writer to Neo4j and must run exactly 1 replica, not {replicas}",
        )


def neo4j_cluster(d: Descriptor) -> Iterator[Violation]:
    """A Neo4j cluster needs Enterprise, and 3 or more primaries to tolerate a failure."""
    neo = d.services.neo4j
    if neo.cluster_size > 1 and neo.edition != "enterprise":
        yield (
            "services.neo4j.cluster_size",
            f"a Neo4j cluster ({neo.cluster_size} servers) needs edition enterprise, not {neo.edition}",
        )
    if neo.cluster_size == 2:
        yield ("services.neo4j.cluster_size", "a Neo4j cluster needs at least 3 servers to survive a failure; use 1 or 3+")


def neo4j_memory(d: Descriptor) -> Iterator[Violation]:
    """Heap initial ≤ heap max, and heap + page cache fit in the memory limit."""
    neo = d.services.neo4j
    if memory_bytes(neo.heap_initial) > memory_bytes(neo.heap_max):
        yield ("services.neo4j.heap_initial", f"{neo.heap_initial} is larger than heap_max {neo.heap_max}")
    limit = resolved_resources(d, "neo4j")[1][0]
    used = memory_bytes(neo.heap_max) + memory_bytes(neo.pagecache)
    if used > memory_bytes(limit):
        yield (
            "services.neo4j.heap_max",
            f"heap_max {neo.heap_max} + pagecache {neo.pagecache} exceed the memory limit {limit}",
        )


def redis_topology(d: Descriptor) -> Iterator[Violation]:
    """Sentinel quorum fits the number of sentinels; maxmemory fits the memory limit."""
    redis = d.services.redis
    if redis.mode == "sentinel" and redis.sentinel.quorum > redis.sentinel.replicas:
        yield (
            "services.redis.sentinel.quorum",
            f"quorum {redis.sentinel.quorum} is more than the {redis.sentinel.replicas} sentinels",
        )
    limit = resolved_resources(d, "redis")[1][0]
    if memory_bytes(redis.maxmemory) > memory_bytes(limit):
        yield ("services.redis.maxmemory", f"{redis.maxmemory} exceeds the memory limit {limit}")


def guide_minimums(d: Descriptor) -> Iterator[Violation]:
    """Requests and limits are at least the guide's minimum memory; requests never exceed limits."""
    for name in SERVICE_NAMES:
        (req_mem, req_cpu), (lim_mem, lim_cpu) = resolved_resources(d, name)
        minimum = SIZING[name].min_memory
        for kind, value in (("limits", lim_mem), ("requests", req_mem)):
            if memory_bytes(value) < memory_bytes(minimum):
                yield (
                    f"services.{name}.resources.{kind}.memory",
                    f"{value} is below the guide's minimum of {minimum} for {name}",
                )
        if memory_bytes(req_mem) > memory_bytes(lim_mem):
            yield (f"services.{name}.resources.requests.memory", f"{req_mem} is more than the limit {lim_mem}")
        if cpu_millis(req_cpu) > cpu_millis(lim_cpu):
            yield (f"services.{name}.resources.requests.cpu", f"{req_cpu} is more than the limit {lim_cpu}")


def storage_credentials(d: Descriptor) -> Iterator[Violation]:
    """S3 backups need a credentials block naming the storage credentials."""
    if d.backup.storage.kind == "s3" and d.credentials.storage is None:
        yield ("credentials.storage", "backup storage is s3: name the Prefect block holding its credentials")


def cluster_backups_off_the_pod(d: Descriptor) -> Iterator[Violation]:
    """A Kubernetes environment's backups go to S3: a flow run there may be a pod, and a folder inside a pod
    is lost with it (not a backup)."""
    if d.target == "kubernetes" and d.backup.storage.kind != "s3":
        yield ("backup.storage.kind", f"{d.backup.storage.kind!r} storage for a kubernetes environment: a folder "
                                      "inside a flow-run pod is lost with the pod; use kind: s3 (with "
                                      "credentials.storage)")


def distinct_app_ports(d: Descriptor) -> Iterator[Violation]:
    """App ports avoid the ports of Neo4j and Redis (shared network namespaces in some engines)."""
    reserved = {7474, 7687, 6379, 26379}
    for name in APP_SERVICES:
        port = d.services.by_name(name).port
        if port in reserved:
            yield (f"services.{name}.port", f"port {port} is reserved for Neo4j/Redis")


RULES: tuple[Callable[[Descriptor], Iterator[Violation]], ...] = (
    single_writer,
    neo4j_cluster,
    guide_minimums,
    neo4j_memory,
    redis_topology,
    storage_credentials,
    cluster_backups_off_the_pod,
    distinct_app_ports,
)


def violations(d: Descriptor) -> list[Violation]:
    """Every rule violation of ``d``, in rule order."""
    return [v for rule in RULES for v in rule(d)]


def check_rules(d: Descriptor) -> None:
    """Raise the first rule violation as a :class:`ConfigError`."""
    for path, message in violations(d):
        raise ConfigError(path, message)


def resolved_resources(d: Descriptor, name: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """``((request_memory, request_cpu), (limit_memory, limit_cpu))`` with the guide's table as default.

    Default requests: the guide's minimum memory and its CPU; default limits: the recommended memory and
    the same CPU.
    """
    sizing = SIZING[name]
    res = d.services.by_name(name).resources
    requests = (res.requests.memory, res.requests.cpu) if res.requests else (sizing.min_memory, sizing.cpu)
    limits = (res.limits.memory, res.limits.cpu) if res.limits else (sizing.recommended_memory, sizing.cpu)
    if res.limits is None and memory_bytes(requests[0]) > memory_bytes(limits[0]):
        limits = (requests[0], limits[1])
    if res.limits is None and cpu_millis(requests[1]) > cpu_millis(limits[1]):
        limits = (limits[0], requests[1])
    if res.requests is None and memory_bytes(requests[0]) > memory_bytes(limits[0]):
        requests = (human_memory(memory_bytes(limits[0])), requests[1])
    if res.requests is None and cpu_millis(requests[1]) > cpu_millis(limits[1]):
        requests = (requests[0], limits[1])
    return requests, limits
