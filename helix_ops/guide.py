"""What the Helix production deployment guide says about each service, as data.

Sources: the guide's services, its *Horizontal Scaling* and *Resource Recommendations* tables. The guide's
"MB"/"GB" are read as binary units (Mi/Gi). The load balancer (nginx) is not in the guide's table; its
figures are ours.
"""

from __future__ import annotations

from dataclasses import dataclass

APP_SERVICES = ("dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification")
MCP_SERVICES = APP_SERVICES[1:]
SERVICE_NAMES = ("neo4j", "redis", *APP_SERVICES, "nginx")

SINGLE_WRITER = "mcp-graph"
"""The one service that writes to Neo4j: never more than one replica."""


@dataclass(frozen=True)
class Sizing:
    """A row of the guide's resource table: minimum and recommended memory, CPU."""

    min_memory: str
    recommended_memory: str
    cpu: str


SIZING: dict[str, Sizing] = {
    "dashboard": Sizing("256Mi", "512Mi", "500m"),
    "mcp-graph": Sizing("1Gi", "2Gi", "1"),
    "mcp-discovery": Sizing("2Gi", "4Gi", "2"),
    "mcp-derivation": Sizing("2Gi", "4Gi", "2"),
    "mcp-cascade": Sizing("1Gi", "2Gi", "1"),
    "mcp-verification": Sizing("1Gi", "2Gi", "1"),
    "neo4j": Sizing("4Gi", "8Gi", "2"),
    "redis": Sizing("512Mi", "1Gi", "500m"),
    "nginx": Sizing("64Mi", "128Mi", "250m"),
}

SCALABLE = frozenset({"dashboard", "mcp-discovery", "mcp-derivation", "mcp-cascade", "mcp-verification"})
"""Stateless services that scale horizontally (the guide's *Scalable: Yes*)."""

DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "neo4j": (),
    "redis": (),
    "redis-sentinel": ("redis",),
    "mcp-graph": ("neo4j", "redis"),
    "mcp-discovery": ("mcp-graph",),
    "mcp-derivation": ("mcp-graph",),
    "mcp-cascade": ("mcp-graph",),
    "mcp-verification": ("mcp-graph",),
    "dashboard": ("neo4j", "redis"),
    "nginx": ("dashboard",),
}

NEEDS_ANTHROPIC = frozenset({"mcp-discovery", "mcp-derivation"})
NEO4J_BOLT_PORT = 7687
NEO4J_HTTP_PORT = 7474
NEO4J_DISCOVERY_PORT = 5000
NEO4J_CLUSTER_PORTS = (5000, 6000, 7000, 7688)
REDIS_PORT = 6379
SENTINEL_PORT = 26379
HEALTH_PATH = "/api/health"
NGINX_HEALTH_PORT = 8081
HELIX_CONFIG_PATH = "/app/helix.config.yaml"
