"""The rendered nginx.conf: upstream to the dashboard service name, limits, and nginx itself accepts it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from core_helpers import DEPLOYMENTS

from helix_ops.descriptor import load_descriptor
from helix_ops.render.nginx import render_nginx_conf
from helix_ops.stack import build_stack


def conf(env):
    return render_nginx_conf(build_stack(load_descriptor(DEPLOYMENTS / f"{env}.yaml")))


def test_upstream_is_the_dashboard_service_name_and_port():
    text = conf("local")
    assert "upstream dashboard {\n        server dashboard:3000;" in text
    assert "proxy_pass http://dashboard;" in text
    assert "listen 8080;" in text and "ssl" not in text
    assert "client_max_body_size 50m;" in text
    assert "rate=20r/s" in text


def test_tls_listener_when_tls_is_on():
    text = conf("prod")
    assert "listen 8080 ssl;" in text
    assert "ssl_certificate /etc/nginx/certs/tls.crt;" in text


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx binary not installed")
@pytest.mark.parametrize("env", ["local"])
def test_real_nginx_accepts_the_config(tmp_path, env):
    # nginx -t resolves upstream names: point the service name at loopback for the syntax check.
    text = conf(env).replace("server dashboard:", "server 127.0.0.1:")
    path = tmp_path / "nginx.conf"
    path.write_text(text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;"))
    proc = subprocess.run(["nginx", "-t", "-q", "-c", str(path), "-p", str(tmp_path), "-e", str(tmp_path / "err")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_upstream_lists_named_replicas_when_given():
    stack = build_stack(load_descriptor(DEPLOYMENTS / "local.yaml"))
    text = render_nginx_conf(stack, members=["helix-local-dashboard-aaaa-1", "helix-local-dashboard-bbbb-1"])
    upstream = text.split("upstream dashboard {", 1)[1].split("}", 1)[0]
    servers = [line.strip() for line in upstream.splitlines() if line.strip().startswith("server ")]
    assert servers == ["server helix-local-dashboard-aaaa-1:3000 max_fails=1 fail_timeout=2s;",
                       "server helix-local-dashboard-bbbb-1:3000 max_fails=1 fail_timeout=2s;"]
    assert "server dashboard:3000;" not in text
