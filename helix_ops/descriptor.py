"""Environment descriptors: ``deployments/<env>.yaml``, one per environment, in git, free of secrets.

A descriptor says *where* and *how big*: target (container engine or Kubernetes), images, replicas,
resources, domain and TLS, Neo4j edition and cluster size, Redis mode, backup policy, and the *names* of the
Prefect blocks that hold credentials. :func:`load_descriptor` and :func:`parse_descriptor` return a frozen,
validated :class:`Descriptor` or raise one :class:`ConfigError` naming the offending path.
"""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from helix_ops.approval import ApprovalPolicy
from helix_ops._validation import load_yaml_mapping, validate_model
from helix_ops.errors import ConfigError
from helix_ops.inline_secrets import find_inline_secret
from helix_ops.quantities import cpu_millis, memory_bytes

Name = Annotated[StrictStr, Field(pattern=r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
BlockName = Annotated[StrictStr, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,98}[a-z0-9])?$")]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]

ENV_NAME_PATTERN = r"^[a-z][a-z0-9-]*$"
"""An environment's name (``deployments/<env>.yaml``; also the flows' ``env`` parameter's pattern)."""
MAX_APP_REPLICAS = 50
"""The most replicas an app service may run (``services.<name>.replicas``; scale-helix's bound too)."""


def _check_memory(value: str) -> str:
    memory_bytes(value)
    return value


def _check_cpu(value: str) -> str:
    cpu_millis(value)
    return value


Memory = Annotated[StrictStr, AfterValidator(_check_memory)]
Cpu = Annotated[StrictStr, AfterValidator(_check_cpu)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


IMAGE_REPOSITORY = r"[a-z0-9]+([._/:-][a-z0-9]+)*"
IMAGE_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
IMAGE_REF_PATTERN = rf"^({IMAGE_REPOSITORY}:)?{IMAGE_TAG}$"
"""A tag, or ``repository:tag`` (upgrade-helix's ``images`` values)."""


class Image(_Model):
    """An image reference: ``repository`` (registry/path) and a pinned ``tag``."""

    repository: Annotated[StrictStr, Field(pattern=rf"^{IMAGE_REPOSITORY}$")]
    tag: Annotated[StrictStr, Field(pattern=rf"^{IMAGE_TAG}$")]

    @field_validator("tag")
    @classmethod
    def _pinned(cls, tag: str) -> str:
        if tag == "latest":
            raise ValueError("tag 'latest' is refused: pin a version so plans can compare images")
        return tag

    @property
    def ref(self) -> str:
        """``repository:tag``."""
        return f"{self.repository}:{self.tag}"


class Amounts(_Model):
    """Memory and CPU, Kubernetes notation."""

    memory: Memory
    cpu: Cpu


class Resources(_Model):
    """Requests (reserved) and limits (cap). Either defaults to the guide's table when left out."""

    requests: Amounts | None = None
    limits: Amounts | None = None


class AppService(_Model):
    """A Node service: the dashboard or one of the MCP servers."""

    image: Image
    replicas: Annotated[StrictInt, Field(ge=1, le=MAX_APP_REPLICAS)] = 1
    port: Port = 3000
    resources: Resources = Resources()


class Neo4jService(_Model):
    """Neo4j: edition, cluster size, memory settings and storage."""

    image: Image
    edition: Literal["community", "enterprise"] = "community"
    cluster_size: Annotated[StrictInt, Field(ge=1, le=9)] = 1
    heap_initial: Memory = "2Gi"
    heap_max: Memory = "4Gi"
    pagecache: Memory = "2Gi"
    storage: Memory = "100Gi"
    plugins: tuple[Annotated[StrictStr, Field(pattern=r"^[a-z0-9-]+$")], ...] = ()
    resources: Resources = Resources()


class Sentinel(_Model):
    """Redis Sentinel settings (``mode: sentinel``)."""

    replicas: Annotated[StrictInt, Field(ge=3, le=9)] = 3
    quorum: Annotated[StrictInt, Field(ge=2)] = 2
    master_name: Name = "helix"


class RedisService(_Model):
    """Redis: single server or Sentinel-managed replicas."""

    image: Image
    mode: Literal["single", "sentinel"] = "single"
    sentinel: Sentinel = Sentinel()
    maxmemory: Memory = "1Gi"
    maxmemory_policy: Literal[
        "noeviction", "allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-lfu", "allkeys-random",
        "volatile-random", "volatile-ttl",
    ] = "allkeys-lru"
    storage: Memory = "10Gi"
    resources: Resources = Resources()


class LoadBalancerService(_Model):
    """The nginx load balancer in front of the dashboard (Compose/engine target; Kubernetes uses Ingress)."""

    image: Image
    host_port: Port = 443
    port: Port = 8080
    resources: Resources = Resources()


class Services(_Model):
    """Every Helix service, by its name in the guide."""

    nginx: LoadBalancerService
    dashboard: AppService
    neo4j: Neo4jService
    redis: RedisService
    mcp_graph: AppService = Field(alias="mcp-graph")
    mcp_discovery: AppService = Field(alias="mcp-discovery")
    mcp_derivation: AppService = Field(alias="mcp-derivation")
    mcp_cascade: AppService = Field(alias="mcp-cascade")
    mcp_verification: AppService = Field(alias="mcp-verification")

    def by_name(self, name: str) -> AppService | Neo4jService | RedisService | LoadBalancerService:
        """The settings of service ``name`` (``mcp-graph`` etc.)."""
        return getattr(self, name.replace("-", "_"))


class Ingress(_Model):
    """Public entry: domain, TLS, and the limits the load balancer / Ingress enforces."""

    domain: Annotated[StrictStr, Field(max_length=253, pattern=r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?$")]
    tls: StrictBool = True
    cluster_issuer: Name | None = None
    certificate_secret_name: Name = "dashboard-tls"
    ingress_class: Name = "nginx"
    body_size: Annotated[StrictStr, Field(pattern=r"^[1-9][0-9]*[km]$")] = "50m"
    rate_limit_rps: Annotated[StrictInt, Field(ge=1, le=10000)] = 20


class Kubernetes(_Model):
    """Kubernetes target settings."""

    version: Annotated[StrictStr, Field(pattern=r"^1\.[0-9]{2}$")] = "1.31"
    namespace: Name = "helix"
    storage_class: Name | None = None
    ingress_namespace: Name = "ingress-nginx"
    drift: Literal["revert", "refuse"] = "revert"
    """What deploy-helix does with an out-of-band change to a field helix-ops owns (``kubectl set image``, ``kubectl
    edit``; see helix_ops/drift.py): ``revert`` applies the descriptor again (the plan lists each drifted field),
    ``refuse`` stops before changing anything and says what drifted."""

    @field_validator("version")
    @classmethod
    def _supported(cls, version: str) -> str:
        if int(version.split(".")[1]) < 28:
            raise ValueError(f"Kubernetes {version} is older than the guide's minimum 1.28")
        return version


_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CRON_ITEM = re.compile(r"^(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?$")


def check_cron(expr: str) -> str:
    """Validate a five-field cron expression (numbers, ``*``, ranges, steps, lists)."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"{expr!r} is not a cron expression with 5 fields (minute hour day month weekday)")
    for field, (low, high) in zip(fields, _CRON_RANGES):
        for item in field.split(","):
            match = _CRON_ITEM.match(item)
            if not match:
                raise ValueError(f"cron field {field!r} is malformed")
            numbers = [int(n) for n in match.group(2, 3) if n is not None]
            if any(not low <= n <= high for n in numbers) or match.group(4) == "0":
                raise ValueError(f"cron field {field!r} is out of range {low}-{high}")
    return expr


Cron = Annotated[StrictStr, AfterValidator(check_cron)]


class Schedules(_Model):
    """When backups run (cron, in the policy's timezone)."""

    neo4j: Cron
    redis: Cron


class Retention(_Model):
    """How many daily, weekly and monthly backups to keep."""

    daily: Annotated[StrictInt, Field(ge=0, le=366)] = 7
    weekly: Annotated[StrictInt, Field(ge=0, le=520)] = 4
    monthly: Annotated[StrictInt, Field(ge=0, le=240)] = 12


class LocalStorage(_Model):
    """Backups in a local directory."""

    kind: Literal["local"]
    path: Annotated[StrictStr, Field(pattern=r"^/")]


class S3Storage(_Model):
    """Backups in an S3 bucket (credentials: the ``storage`` block)."""

    kind: Literal["s3"]
    bucket: Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._/-]*$")] = ""
    endpoint: Annotated[StrictStr, Field(pattern=r"^https?://[^\s@]+$")] | None = None
    region: Annotated[StrictStr, Field(pattern=r"^[a-z0-9-]+$")] | None = None


class Backup(_Model):
    """Backup policy: schedules, timezone, retention and where backups go."""

    timezone: StrictStr = "UTC"
    schedules: Schedules
    retention: Retention = Retention()
    storage: Annotated[LocalStorage | S3Storage, Field(discriminator="kind")]
    neo4j_strategy: Literal["auto", "logical", "dump"] = "auto"
    """How backup-helix backs up Neo4j: ``auto`` picks by the running server's edition (Community: logical,
    online; Enterprise: logical until the online backup is wired into the flows), ``logical`` (online export),
    ``dump`` (offline ``neo4j-admin database dump``: Neo4j is stopped for the window)."""
    export_workers: Annotated[StrictInt, Field(ge=0, le=8)] = 2
    """Processes reading the graph for a logical export besides the one writing it (a core and about 66 MiB
    each at 1M nodes; 0 reads in the writing process, about 1.7x slower at 100k nodes), and converting the
    export to CSV for an importer restore (0: converted in the flow's process, about 1.7x slower)."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown timezone {zone!r} (expected an IANA name like Europe/Berlin)") from None
        return zone


def check_timezone(zone: str) -> str:
    """Validate an IANA timezone name (``Europe/Berlin``, ``UTC``)."""
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown timezone {zone!r} (expected an IANA name like Europe/Berlin)") from None
    return zone


class Rotation(_Model):
    """When rotate-helix-secrets runs on its own: a cron in ``timezone`` (the deployment's schedule in
    prefect.yaml is generated from it: ``helix-ops schedules --write``). Left out: rotation runs only when
    started."""

    schedule: Cron
    timezone: Annotated[StrictStr, AfterValidator(check_timezone)] = "UTC"


class Credentials(_Model):
    """Names of the Prefect blocks holding secrets (never the secrets)."""

    neo4j: BlockName
    redis: BlockName
    dashboard: BlockName
    anthropic: BlockName
    storage: BlockName | None = None
    backup_key: BlockName | None = None
    """A Prefect ``Secret`` block holding the backup encryption key (32 random bytes, base64: ``openssl rand
    -base64 32``). Set: every backup object is encrypted client-side (AES-256-GCM) before it leaves the flow,
    and restores and verifications need the same key (the manifest records its fingerprint, never the key)."""


class Descriptor(_Model):
    """One environment, validated. Build the stack with :func:`helix_ops.stack.build_stack`."""

    environment: Name
    project: Name = "helix"
    target: Literal["engine", "kubernetes"]
    log_level: Literal["debug", "info", "warn", "error"] = "info"
    helix_config: Annotated[StrictStr, Field(pattern=r"^[^\s]+\.ya?ml$")] | None = None
    kubernetes: Kubernetes = Kubernetes()
    ingress: Ingress
    services: Services
    backup: Backup
    rotation: Rotation | None = None
    credentials: Credentials
    approval: ApprovalPolicy = ApprovalPolicy()
    """Who must approve a change of this environment, and for which flows (``helix_ops.approval``)."""


def parse_descriptor(text: str, source: str | None = None) -> Descriptor:
    """Parse and validate descriptor YAML text; scaling and sizing rules included.

    Raises :class:`ConfigError` (one line, naming the path) for malformed YAML, inline secrets, unknown keys,
    wrong types and rule violations.
    """
    from helix_ops.rules import check_rules  # rules need the stack's guide table; avoid a cycle

    raw = load_yaml_mapping(text, source)
    secret = find_inline_secret(raw)
    if secret:
        raise secret.with_source(source) if source else secret
    descriptor = validate_model(Descriptor, raw, source)
    try:
        check_rules(descriptor)
    except ConfigError as exc:
        raise exc.with_source(source) if source else exc from None
    return descriptor


def load_descriptor(path: str | Path) -> Descriptor:
    """Read and validate the descriptor file at ``path``."""
    from helix_ops.safe_load import DESCRIPTOR_LIMIT, read_text

    path = Path(path)
    text = read_text(path, what="descriptor", limit=DESCRIPTOR_LIMIT)  # bounded; invalid UTF-8 is a ConfigError
    return parse_descriptor(text, str(path))


def descriptor_path(env: str, root: str | Path = ".") -> Path:
    """Where the descriptor of environment ``env`` lives: ``<root>/deployments/<env>.yaml``."""
    if not re.fullmatch(ENV_NAME_PATTERN, env):
        raise ConfigError("--env", f"{env!r} is not an environment name (lowercase letters, digits, dashes)")
    return Path(root) / "deployments" / f"{env}.yaml"


def descriptor_file(env: str | None, path: str | Path | None = None) -> Path:
    """The descriptor a flow reads: ``path`` when given, else ``deployments/<env>.yaml`` of the working directory.
    A given ``env`` is checked as a name either way (it names leases, Variables and records)."""
    default = descriptor_path(env) if env or not path else None
    return Path(path) if path else default
