"""Render ``nginx.conf`` for the load balancer in front of the dashboard (Compose / engine target).

The upstream is the dashboard *service name*: the engine's DNS returns every replica and nginx balances
across them (names are resolved when nginx starts or reloads, so reload it after scaling the dashboard).
Runs unprivileged: pid and temp files under /tmp. A separate plain listener serves ``/healthz``.
"""

from __future__ import annotations

from collections.abc import Sequence

from helix_ops import guide
from helix_ops.stack import Stack


def upstream_servers(port: int, members: Sequence[str] | None) -> str:
    """The ``server`` lines of the dashboard upstream: the service name, or each replica by name.

    Listing replicas by name lets a rolling upgrade add a new replica and take an old one out with a
    graceful reload (old workers finish their in-flight requests) before the old replica stops.
    """
    if not members:
        return f"        server dashboard:{port};"
    return "\n".join(f"        server {m}:{port} max_fails=1 fail_timeout=2s;" for m in members)


def render_nginx_conf(stack: Stack, members: Sequence[str] | None = None) -> str:
    """The complete nginx.conf text for ``stack``; ``members`` names the dashboard replicas (default: the
    service name, resolved by the engine's DNS)."""
    d = stack.descriptor
    ingress = d.ingress
    dashboard = stack.service("dashboard")
    listen = f"{d.services.nginx.port} ssl" if ingress.tls else str(d.services.nginx.port)
    tls = (
        "        ssl_certificate /etc/nginx/certs/tls.crt;\n"
        "        ssl_certificate_key /etc/nginx/certs/tls.key;\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        if ingress.tls
        else ""
    )
    return f"""# Rendered by helix-ops for environment {stack.environment}: do not edit by hand.
worker_processes auto;
pid /tmp/nginx.pid;
error_log /dev/stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log /dev/stdout;
    client_body_temp_path /tmp/client_temp;
    proxy_temp_path /tmp/proxy_temp;
    fastcgi_temp_path /tmp/fastcgi_temp;
    uwsgi_temp_path /tmp/uwsgi_temp;
    scgi_temp_path /tmp/scgi_temp;
    server_tokens off;
    client_max_body_size {ingress.body_size};
    limit_req_zone $binary_remote_addr zone=dashboard:10m rate={ingress.rate_limit_rps}r/s;
    limit_req_status 429;

    upstream dashboard {{
{upstream_servers(dashboard.port, members)}
        keepalive 16;
    }}

    server {{
        listen {guide.NGINX_HEALTH_PORT};
        location = /healthz {{
            access_log off;
            return 200 "ok\\n";
        }}
    }}

    server {{
        listen {listen};
        server_name {ingress.domain};
{tls}
        location / {{
            limit_req zone=dashboard burst={ingress.rate_limit_rps * 2} nodelay;
            proxy_pass http://dashboard;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_next_upstream error timeout http_502 http_503;
        }}
    }}
}}
"""
