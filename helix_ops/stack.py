"""The Helix stack model: every service with its image, ports, probe, environment wiring, volumes,
resources, dependencies and scaling, derived from a validated descriptor and the guide.

The stack is target-neutral; renderers (Compose, Kubernetes) translate it. Secrets appear only as the
*key* of a secret (``neo4j-password``); Compose turns a key into a ``${VAR}`` reference to ``.env``, and
Kubernetes into a ``secretKeyRef`` to the ``helix-secrets`` Secret.

Length (about 530 lines): one module on purpose: the model's dataclasses, the one function that builds it from a
descriptor, and the wiring checks it must pass are read together, and both renderers depend on all of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Literal

from helix_ops import guide
from helix_ops.descriptor import AppService, Descriptor
from helix_ops.errors import ConfigError
from helix_ops.rules import check_rules, resolved_resources

SECRET_NAME = "helix-secrets"

SECRET_ENV: dict[str, str] = {
    "neo4j-password": "NEO4J_PASSWORD",
    "redis-password": "REDIS_PASSWORD",
    "nextauth-secret": "NEXTAUTH_SECRET",
    "anthropic-api-key": "ANTHROPIC_API_KEY",
}
"""Secret key → the environment variable that carries it (in ``.env`` for Compose)."""

DERIVED_SECRETS: dict[str, tuple[str, str]] = {"neo4j-auth": ("neo4j/", "neo4j-password")}
"""Secret keys composed from another: ``neo4j-auth`` is ``neo4j/<password>``, as NEO4J_AUTH expects."""

SECRET_SOURCES: dict[str, str] = {
    "neo4j-password": "neo4j",
    "redis-password": "redis",
    "nextauth-secret": "dashboard",
    "anthropic-api-key": "anthropic",
}
"""Secret key → the descriptor's ``credentials`` entry naming the Prefect block that holds it."""

CREDENTIAL_KEYS: dict[str, str] = {"NEO4J_USER": "neo4j-user"}
"""``EnvVar.from_credentials`` variable → its key in the ``helix-secrets`` Secret on Kubernetes. The Neo4j
user is not secret, but a rotation switches it together with the password (the bridge user), so the
consumers read both from the same Secret and one Secret update changes both at once."""


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: a literal ``value`` or the key of a ``secret``, never both.

    ``from_credentials``: the value is not secret but comes from the environment's credentials with them
    (``value`` is the default): Compose renders ``${NAME:-value}`` (the ``.env`` carries it), the engine driver
    takes it from the blocks. The Neo4j user is one: a rotation switches the consumers to a bridge user
    together with its password, so a replica created at any moment must read both from the same place.
    """

    name: str
    value: str | None = None
    secret: str | None = None
    from_credentials: bool = False


@dataclass(frozen=True)
class Port:
    """A named container port."""

    name: str
    port: int


@dataclass(frozen=True)
class Probe:
    """How to tell a service is healthy: ``http`` (path on port), ``bolt`` (Neo4j), ``redis`` (PING)."""

    kind: Literal["http", "bolt", "redis"]
    port: int
    path: str | None = None
    initial_delay: int = 10
    period: int = 10
    timeout: int = 5
    failures: int = 5


@dataclass(frozen=True)
class Mount:
    """A volume mounted in a service: ``data`` persists, ``config`` is a read-only rendered file."""

    volume: str
    path: str
    kind: Literal["data", "config", "scratch"] = "data"
    size: str | None = None
    sub_path: str | None = None

    @property
    def read_only(self) -> bool:
        """Config files are mounted read-only."""
        return self.kind == "config"


@dataclass(frozen=True)
class Resources:
    """Resolved requests and limits (Kubernetes notation)."""

    request_memory: str
    request_cpu: str
    limit_memory: str
    limit_cpu: str


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the stack, target-neutral."""

    name: str
    role: Literal["load-balancer", "dashboard", "mcp", "graph-db", "events", "sentinel"]
    image: str
    ports: tuple[Port, ...]
    replicas: int
    scalable: bool
    depends_on: tuple[str, ...]
    probe: Probe
    env: tuple[EnvVar, ...]
    mounts: tuple[Mount, ...]
    resources: Resources
    run_as_user: int
    command: tuple[str, ...] = ()
    """The full argv, replacing the image's entrypoint (Compose ``entrypoint``, Kubernetes ``command``)."""
    allowed_from: tuple[str, ...] = ()
    stateful: bool = False

    @property
    def port(self) -> int:
        """The main container port."""
        return self.ports[0].port

    @property
    def strategy(self) -> Literal["Recreate", "RollingUpdate"]:
        """mcp-graph (single writer) is replaced, never doubled; stateless services roll with no gap."""
        return "Recreate" if self.name == guide.SINGLE_WRITER else "RollingUpdate"

    def secret_keys(self) -> set[str]:
        """The secret keys this service's environment references."""
        return {e.secret for e in self.env if e.secret}


@dataclass(frozen=True)
class Stack:
    """The whole stack for one environment, services in apply (dependency) order."""

    descriptor: Descriptor
    services: tuple[ServiceSpec, ...]
    helix_config_text: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def environment(self) -> str:
        """The environment name (``prod``)."""
        return self.descriptor.environment

    def service(self, name: str) -> ServiceSpec:
        """The service called ``name``, or the stateful set whose member it is (``redis-2`` of a three-member
        ``redis``: the name Compose and the engine give its second member); KeyError if there is none."""
        for svc in self.services:
            if svc.name == name:
                return svc
        for svc in self.services:
            base, _, ordinal = name.rpartition("-")
            if svc.stateful and base == svc.name and ordinal.isdigit() and 2 <= int(ordinal) <= svc.replicas:
                return svc
        raise KeyError(name)

    def names(self) -> tuple[str, ...]:
        """Service names in apply order."""
        return tuple(s.name for s in self.services)

    def secret_keys(self) -> tuple[str, ...]:
        """Every secret key any service references, sorted."""
        return tuple(sorted(set().union(*(s.secret_keys() for s in self.services))))

    def credential_keys(self) -> dict[str, str]:
        """Secret key → default value of every ``from_credentials`` variable a service reads
        (``{"neo4j-user": "neo4j"}``): the non-secret credentials the Kubernetes Secret carries too."""
        return {CREDENTIAL_KEYS[e.name]: e.value or "" for s in self.services for e in s.env if e.from_credentials}


def build_stack(descriptor: Descriptor, helix_config_text: str | None = None) -> Stack:
    """The stack for ``descriptor``, services in apply order.

    Re-checks the descriptor's rules (so a hand-built Descriptor is refused too) and, when the descriptor
    references a helix.config.yaml, checks that every ``${VAR}`` in it is wired into the services that read it.
    """
    check_rules(descriptor)
    services = [_neo4j(descriptor), _redis(descriptor)]
    if descriptor.services.redis.mode == "sentinel":
        services.append(_sentinel(descriptor))
    services += [_app(descriptor, name) for name in guide.APP_SERVICES]
    services.append(_nginx(descriptor))
    stack = Stack(
        descriptor=descriptor,
        services=tuple(apply_order(services)),
        helix_config_text=helix_config_text,
        labels={"app.kubernetes.io/part-of": descriptor.project, "helix-ops/environment": descriptor.environment},
    )
    if helix_config_text is not None:
        check_helix_config_wiring(stack, helix_config_text)
    return stack


def apply_order(services: Iterable[ServiceSpec]) -> list[ServiceSpec]:
    """Services sorted so each comes after everything it depends on (stable: of the services ready at each step,
    the first in input order goes next).

    Raises :class:`ConfigError` on a dependency cycle (naming it) or a dependency on an unknown service.
    """
    given = list(services)
    index = {s.name: i for i, s in enumerate(given)}
    for svc in given:
        for dep in svc.depends_on:
            if dep not in index:
                raise ConfigError(f"services.{svc.name}", f"depends on unknown service {dep}")
    order = TopologicalSorter({s.name: s.depends_on for s in given})
    try:
        order.prepare()
    except CycleError as exc:
        raise ConfigError("services", f"dependency cycle: {' -> '.join(exc.args[1])}") from None
    done: list[ServiceSpec] = []
    ready: set[str] = set()
    while order.is_active():
        ready |= set(order.get_ready())
        name = min(ready, key=index.__getitem__)
        ready.discard(name)
        done.append(given[index[name]])
        order.done(name)
    return done


def dependency_waves(stack: Stack, names: Iterable[str]) -> list[list[str]]:
    """``names`` grouped into waves that only depend on earlier ones (each wave in apply order): the services
    whose dependencies are all in earlier waves (dashboard and mcp-graph together, then the other MCP servers)."""
    wanted = set(names)
    position = {n: i for i, n in enumerate(stack.names())}
    order = TopologicalSorter({s.name: s.depends_on for s in stack.services})
    order.prepare()
    waves: list[list[str]] = []
    while order.is_active():
        wave = sorted(order.get_ready(), key=position.__getitem__)
        order.done(*wave)
        if picked := [n for n in wave if n in wanted]:
            waves.append(picked)
    return waves


def secret_blocks(descriptor: Descriptor) -> dict[str, str]:
    """Secret key → name of the Prefect block holding it (what a flow loads before rendering a Secret)."""
    creds = descriptor.credentials
    return {key: getattr(creds, source) for key, source in SECRET_SOURCES.items()}


def check_helix_config_wiring(stack: Stack, helix_config_text: str) -> None:
    """Every ``${VAR}`` in helix.config.yaml must be in the environment of each service that mounts it."""
    from helix_ops._validation import load_yaml_mapping
    from helix_ops.interpolate import referenced_variables

    needed = referenced_variables(load_yaml_mapping(helix_config_text, stack.descriptor.helix_config))
    for svc in stack.services:
        if any(m.volume == "helix-config" for m in svc.mounts):
            missing = sorted(needed - {e.name for e in svc.env})
            if missing:
                raise ConfigError(
                    "helix_config", f"{svc.name} reads helix.config.yaml but gets no {', '.join(missing)}"
                )


# --- service builders -------------------------------------------------------------------------------------


def _resources(d: Descriptor, name: str) -> Resources:
    (req_mem, req_cpu), (lim_mem, lim_cpu) = resolved_resources(d, name)
    return Resources(req_mem, req_cpu, lim_mem, lim_cpu)


def neo4j_uri(d: Descriptor) -> str:
    """Bolt for one server, the routing ``neo4j://`` scheme for a cluster."""
    scheme = "neo4j" if d.services.neo4j.cluster_size > 1 else "bolt"
    return f"{scheme}://neo4j:{guide.NEO4J_BOLT_PORT}"


def neo4j_memory_setting(quantity: str) -> str:
    """Neo4j byte sizes: ``2Gi`` → ``2G`` (Neo4j's k/m/g are binary)."""
    return quantity[:-1]


def _neo4j(d: Descriptor) -> ServiceSpec:
    neo = d.services.neo4j
    env = [EnvVar("NEO4J_AUTH", secret="neo4j-auth")]
    if neo.edition == "enterprise":
        env.append(EnvVar("NEO4J_ACCEPT_LICENSE_AGREEMENT", "yes"))
    env += [
        EnvVar("NEO4J_server_memory_heap_initial__size", neo4j_memory_setting(neo.heap_initial)),
        EnvVar("NEO4J_server_memory_heap_max__size", neo4j_memory_setting(neo.heap_max)),
        EnvVar("NEO4J_server_memory_pagecache_size", neo4j_memory_setting(neo.pagecache)),
    ]
    if neo.plugins:
        env.append(EnvVar("NEO4J_PLUGINS", "[" + ",".join(f'"{p}"' for p in neo.plugins) + "]"))
    clients = ("neo4j", *guide.APP_SERVICES)
    return ServiceSpec(
        name="neo4j",
        role="graph-db",
        image=neo.image.ref,
        ports=(Port("bolt", guide.NEO4J_BOLT_PORT), Port("http", guide.NEO4J_HTTP_PORT)),
        replicas=neo.cluster_size,
        scalable=False,
        depends_on=guide.DEPENDS_ON["neo4j"],
        probe=Probe("bolt", guide.NEO4J_BOLT_PORT, initial_delay=30, period=10, timeout=10, failures=5),
        env=tuple(env),
        mounts=(Mount("data", "/data", size=neo.storage), Mount("logs", "/logs", kind="scratch")),
        resources=_resources(d, "neo4j"),
        run_as_user=7474,
        allowed_from=clients,
        stateful=True,
    )


REDIS_SCRIPT = (
    "set -eu\n"
    "if [ ! -e /data/users.acl ]; then\n"
    '  (umask 077; echo "user default on >$REDIS_PASSWORD ~* &* +@all" > /data/users.acl)\n'
    "fi\n"
    "{{\n"
    '  echo "port {port}"\n'
    '  echo "dir /data"\n'
    '  echo "appendonly yes"\n'
    '  echo "maxmemory {maxmemory}"\n'
    '  echo "maxmemory-policy {policy}"\n'
    '  echo "aclfile /data/users.acl"\n'
    '  echo "masterauth $REDIS_PASSWORD"\n'
    '  if [ "$REDIS_SELF_HOST" != "$REDIS_PRIMARY_HOST" ]; then\n'
    '    echo "replicaof $REDIS_PRIMARY_HOST {port}"\n'
    "  fi\n"
    '  echo "replica-announce-ip $REDIS_SELF_HOST"\n'
    "}} > /tmp/redis.conf\n"
    "exec redis-server /tmp/redis.conf\n"
)
"""Writes redis.conf from the environment at start, so the password never appears on a command line
(``echo`` is a shell builtin) and ``CONFIG REWRITE`` has a file to write.

The ACL lives in ``/data/users.acl`` on the data volume: seeded from ``$REDIS_PASSWORD`` on the first start
only, then owned by Redis (``ACL SETUSER`` + ``ACL SAVE``, hashed), so a password rotated live survives a
restart even though the container's environment still holds the password it was created with. With an
aclfile Redis ignores ``requirepass``, so none is written."""

SENTINEL_SCRIPT = (
    "set -eu\n"
    "{{\n"
    '  echo "port {port}"\n'
    '  echo "sentinel resolve-hostnames yes"\n'
    '  echo "sentinel announce-hostnames yes"\n'
    '  echo "sentinel announce-ip $SENTINEL_SELF_HOST"\n'
    '  echo "sentinel monitor {master} $REDIS_PRIMARY_HOST {redis_port} {quorum}"\n'
    '  echo "sentinel auth-pass {master} $REDIS_PASSWORD"\n'
    '  echo "sentinel down-after-milliseconds {master} 5000"\n'
    '  echo "sentinel failover-timeout {master} 60000"\n'
    "}} > /tmp/sentinel.conf\n"
    "exec redis-server /tmp/sentinel.conf --sentinel\n"
)


def redis_command(d: Descriptor) -> tuple[str, ...]:
    """The Redis server argv: a shell that writes the config from the environment, then execs redis-server."""
    redis = d.services.redis
    script = REDIS_SCRIPT.format(
        port=guide.REDIS_PORT, maxmemory=redis.maxmemory[:-1].lower() + "b", policy=redis.maxmemory_policy
    )
    return ("sh", "-c", script)


def sentinel_command(d: Descriptor) -> tuple[str, ...]:
    """The Sentinel argv (config written from the environment; the auth-pass never on a command line)."""
    s = d.services.redis.sentinel
    script = SENTINEL_SCRIPT.format(
        port=guide.SENTINEL_PORT, master=s.master_name, redis_port=guide.REDIS_PORT, quorum=s.quorum
    )
    return ("sh", "-c", script)


def _redis(d: Descriptor) -> ServiceSpec:
    redis = d.services.redis
    members = redis.sentinel.replicas if redis.mode == "sentinel" else 1
    clients = ("redis", "redis-sentinel", *guide.APP_SERVICES)
    return ServiceSpec(
        name="redis",
        role="events",
        image=redis.image.ref,
        ports=(Port("redis", guide.REDIS_PORT),),
        replicas=members,
        scalable=False,
        depends_on=guide.DEPENDS_ON["redis"],
        probe=Probe("redis", guide.REDIS_PORT, initial_delay=5, period=10, timeout=5, failures=5),
        env=(
            EnvVar("REDIS_PASSWORD", secret="redis-password"),
            EnvVar("REDISCLI_AUTH", secret="redis-password"),
        ),
        mounts=(Mount("data", "/data", size=redis.storage),),
        resources=_resources(d, "redis"),
        run_as_user=999,
        command=redis_command(d),
        allowed_from=clients if redis.mode == "sentinel" else ("redis", *guide.APP_SERVICES),
        stateful=True,
    )


def _sentinel(d: Descriptor) -> ServiceSpec:
    redis = d.services.redis
    return ServiceSpec(
        name="redis-sentinel",
        role="sentinel",
        image=redis.image.ref,
        ports=(Port("sentinel", guide.SENTINEL_PORT),),
        replicas=redis.sentinel.replicas,
        scalable=False,
        depends_on=guide.DEPENDS_ON["redis-sentinel"],
        probe=Probe("redis", guide.SENTINEL_PORT, initial_delay=5, period=10, timeout=5, failures=5),
        env=(EnvVar("REDIS_PASSWORD", secret="redis-password"),),
        mounts=(),
        resources=Resources("64Mi", "100m", "128Mi", "250m"),
        run_as_user=999,
        command=sentinel_command(d),
        allowed_from=("redis", "redis-sentinel", *guide.APP_SERVICES),
        stateful=True,
    )


def neo4j_member_env(d: Descriptor, members: list[str], self_host: str) -> list[EnvVar]:
    """Cluster settings for one Neo4j server (none for a single server): discovery list, own address."""
    if d.services.neo4j.cluster_size == 1:
        return []
    endpoints = ",".join(f"{m}:{guide.NEO4J_DISCOVERY_PORT}" for m in members)
    return [
        EnvVar("NEO4J_initial_dbms_default__primaries__count", str(len(members))),
        EnvVar("NEO4J_dbms_cluster_discovery_endpoints", endpoints),
        EnvVar("NEO4J_server_default__advertised__address", self_host),
    ]


def redis_member_env(primary: str, self_host: str) -> list[EnvVar]:
    """Which Redis server is the initial primary and what this server announces (read by REDIS_SCRIPT)."""
    return [EnvVar("REDIS_PRIMARY_HOST", primary), EnvVar("REDIS_SELF_HOST", self_host)]


def sentinel_member_env(primary: str, self_host: str) -> list[EnvVar]:
    """The initial primary a Sentinel monitors and what it announces (read by SENTINEL_SCRIPT)."""
    return [EnvVar("REDIS_PRIMARY_HOST", primary), EnvVar("SENTINEL_SELF_HOST", self_host)]


def client_env(d: Descriptor) -> list[EnvVar]:
    """What every Helix app service needs to reach Neo4j and Redis (or Sentinel)."""
    redis = d.services.redis
    sentinel = redis.mode == "sentinel"
    env = [
        EnvVar("NEO4J_URI", neo4j_uri(d)),
        EnvVar("NEO4J_USER", "neo4j", from_credentials=True),  # the bridge user during a rotation
        EnvVar("NEO4J_PASSWORD", secret="neo4j-password"),
        EnvVar("REDIS_HOST", "redis-sentinel" if sentinel else "redis"),
        EnvVar("REDIS_PORT", str(guide.SENTINEL_PORT if sentinel else guide.REDIS_PORT)),
        EnvVar("REDIS_PASSWORD", secret="redis-password"),
    ]
    if sentinel:
        env.append(EnvVar("REDIS_SENTINEL_MASTER", redis.sentinel.master_name))
    return env


def _app_env(d: Descriptor, name: str, settings: AppService) -> tuple[EnvVar, ...]:
    env = [EnvVar("HELIX_SERVICE", name), EnvVar("PORT", str(settings.port)), *client_env(d)]
    if name == "dashboard":
        scheme = "https" if d.ingress.tls else "http"
        env += [
            EnvVar("NEXTAUTH_SECRET", secret="nextauth-secret"),
            EnvVar("NEXTAUTH_URL", f"{scheme}://{d.ingress.domain}"),
        ]
    else:
        if name in guide.NEEDS_ANTHROPIC:
            env.append(EnvVar("ANTHROPIC_API_KEY", secret="anthropic-api-key"))
        if name == "mcp-verification":
            env.append(EnvVar("Z3_PATH", "/usr/bin/z3"))
        if d.helix_config:
            env.append(EnvVar("HELIX_CONFIG", guide.HELIX_CONFIG_PATH))
    env += [EnvVar("LOG_LEVEL", d.log_level), EnvVar("NODE_ENV", "production")]
    return tuple(env)


def _app(d: Descriptor, name: str) -> ServiceSpec:
    settings = d.services.by_name(name)
    assert isinstance(settings, AppService)
    mounts = ()
    if d.helix_config and name != "dashboard":
        mounts = (Mount("helix-config", guide.HELIX_CONFIG_PATH, kind="config", sub_path="helix.config.yaml"),)
    return ServiceSpec(
        name=name,
        role="dashboard" if name == "dashboard" else "mcp",
        image=settings.image.ref,
        ports=(Port("http", settings.port),),
        replicas=settings.replicas,
        scalable=name in guide.SCALABLE,
        depends_on=guide.DEPENDS_ON[name],
        probe=Probe("http", settings.port, path=guide.HEALTH_PATH, initial_delay=10, period=10, timeout=5),
        env=_app_env(d, name, settings),
        mounts=mounts,
        resources=_resources(d, name),
        run_as_user=1000,
        allowed_from=("nginx", "ingress") if name == "dashboard" else ("dashboard",),
    )


def _nginx(d: Descriptor) -> ServiceSpec:
    lb = d.services.nginx
    mounts = [Mount("nginx-config", "/etc/nginx/nginx.conf", kind="config", sub_path="nginx.conf")]
    if d.ingress.tls:
        mounts.append(Mount("nginx-certs", "/etc/nginx/certs", kind="config"))
    return ServiceSpec(
        name="nginx",
        role="load-balancer",
        image=lb.image.ref,
        ports=(Port("https" if d.ingress.tls else "http", lb.port), Port("health", guide.NGINX_HEALTH_PORT)),
        replicas=1,
        scalable=False,
        depends_on=guide.DEPENDS_ON["nginx"],
        probe=Probe("http", guide.NGINX_HEALTH_PORT, path="/healthz", initial_delay=5, period=10, timeout=5),
        env=(),
        mounts=tuple(mounts),
        resources=_resources(d, "nginx"),
        run_as_user=101,
    )
