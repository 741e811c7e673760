"""The container-engine driver against the real engine of the test bed (Podman's Docker API, or Docker)."""

from __future__ import annotations

import pytest

from drivers.engine import EngineDriver, container_plans, interpolate
from drivers.engine_health import http_check
from helix_ops.errors import ConfigError, DriverError, WaitTimeout
from helix_ops.plan import HASH_LABEL, engine_service_hash, spec_hash

pytestmark = pytest.mark.bed


def probe_spec(image: str, replicas: int = 1, order: str = "start-first") -> dict:
    return {
        "image": image,
        "environment": {"HELIX_SERVICE": "web", "PORT": "3000", "SECRET_THING": "${WEB_SECRET:?set it}"},
        "deploy": {"replicas": replicas, "update_config": {"order": order}},
        "networks": ["helix"],
        "labels": {"helix-ops.service": "web"},
    }


def test_interpolation_resolves_references_and_refuses_missing_ones():
    assert interpolate("a ${X:?set X} $$HOME ${Y}", {"X": "1", "Y": "2"}) == "a 1 $HOME 2"
    with pytest.raises(ConfigError, match="Z"):
        interpolate("${Z:?set Z}", {})


def test_container_plans_are_data():
    spec = {**probe_spec("localhost/helix-probe:v1", replicas=2),
            "volumes": ["data:/data", "./nginx.conf:/etc/nginx/nginx.conf:ro"],
            "ports": [{"target": 8080, "published": "18080", "protocol": "tcp"}],
            "deploy": {"replicas": 2, "resources": {"limits": {"memory": "512M", "cpus": "0.5"}}}}
    plans = container_plans("p", "local", "web", spec, "abcdef0123456789", {"nginx.conf": "x"}, 3000, {"t": "1"})
    assert [p.name for p in plans] == ["p-web-abcdef01-1", "p-web-abcdef01-2"]
    first = plans[0]
    assert first.volumes == {"p_data": {"bind": "/data", "mode": "rw"}}
    assert first.files == {"/etc/nginx/nginx.conf": "x"}
    assert first.ports == {"8080/tcp": 18080, "3000/tcp": ("127.0.0.1", None)}
    assert first.mem_limit == 512 * 1024 * 1024 and first.nano_cpus == 500_000_000
    assert first.network == "p_helix" and first.aliases == ("web",)
    assert first.labels[HASH_LABEL] == "abcdef0123456789" and first.labels["t"] == "1"


def test_container_plans_take_compose_network_aliases():
    """The Sentinels' Compose spec names its network as a mapping with aliases (the shared name the apps and
    the other Sentinels use): the network is the key, the aliases are added to the member's own name."""
    spec = {**probe_spec("localhost/helix-probe:v1"), "networks": {"helix": {"aliases": ["redis-sentinel"]}}}
    [plan] = container_plans("p", "local", "redis-sentinel-2", spec, "abcdef0123456789", {}, None)
    assert plan.network == "p_helix" and plan.aliases == ("redis-sentinel-2", "redis-sentinel")


@pytest.fixture
def driver(bed, docker_client, images):
    drv = EngineDriver(docker_client, f"drv-{bed.run_id}".lower(), "test", bed.container_labels())
    yield drv
    drv.remove_project()


def _start(driver, spec, secrets=None):
    h = spec_hash(spec)
    driver.ensure_network("helix", {"driver": "bridge"}, "n")
    out = []
    for plan in container_plans(driver.project, "test", "web", spec, h, {}, 3000, driver.extra_labels):
        c = driver.create_container(plan, secrets or {"WEB_SECRET": "s3cr3t-value"})
        host, port = driver.probe_address(c, 3000)
        out.append((c, driver.wait_healthy(c, http_check(host, port, "/api/health"), "web healthy", 30)))
    return h, out


def test_apply_read_back_and_remove(driver, images):
    spec = probe_spec(images["probe-v1"], replicas=2)
    h, started = _start(driver, spec)
    assert [s for _, s in started] == ["HTTP 200 /api/health"] * 2
    state = driver.current_state()
    svc = state.by_identity()["service/web"]
    assert svc.spec_hash == engine_service_hash(h, 2) and svc.fields == {"image": images["probe-v1"], "replicas": 2}
    assert "network/helix" in state.by_identity()
    env = started[0][0].attrs["Config"]["Env"]
    assert "SECRET_THING=s3cr3t-value" in env  # resolved at creation...
    assert all("s3cr3t" not in v for v in started[0][0].labels.values())  # ...and never in a label
    assert sorted(driver.remove_service("web")) == sorted(c.name for c, _ in started)
    assert "service/web" not in driver.current_state().by_identity()


def test_network_addresses_are_the_replicas_ips_on_the_project_network(driver, images):
    """The load balancer's upstreams come from here (not from DNS names)."""
    import ipaddress

    _, started = _start(driver, probe_spec(images["probe-v1"], replicas=2))
    names = [c.name for c, _ in started]
    addresses = driver.network_addresses(names + ["no-such-container"])
    for c, address in zip([c for c, _ in started], addresses):
        c.reload()
        assert address == c.attrs["NetworkSettings"]["Networks"][f"{driver.project}_helix"]["IPAddress"]
        ipaddress.ip_address(address)  # an address, not a name
    assert len(set(addresses[:2])) == 2 and addresses[2] == "no-such-container"


def test_unhealthy_replica_times_out_naming_what_was_seen(driver, images):
    spec = probe_spec(images["probe-broken"])
    with pytest.raises(WaitTimeout) as err:
        _start(driver, spec)
    assert "web healthy" in str(err.value) and "503" in str(err.value)


def test_missing_image_is_a_clear_driver_error(driver):
    spec = probe_spec("localhost/helix-probe:does-not-exist")
    with pytest.raises(DriverError, match="not on the engine"):
        _start(driver, spec)


def test_unreachable_engine_is_a_clear_error(tmp_path):
    with pytest.raises(DriverError, match="not reachable") as err:
        EngineDriver.connect(f"unix://{tmp_path}/nothing.sock", "p", "e", timeout=3)
    assert "hint" in str(err.value)
