"""audit-helix: the checklist as data (pure, table-driven), then against a deliberately weakened live
environment (every item flagged) and the hardened, freshly deployed local one (passes)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from helix_ops import audit
from helix_ops.audit import evaluate
from helix_ops.audit_facts import AuditFacts, ContainerFacts, secret_facts
from helix_ops.descriptor import load_descriptor
from helix_ops.render.kubernetes import render_kubernetes
from helix_ops.render.nginx import render_nginx_conf
from helix_ops.stack import build_stack
from testbed.paths import REPO

NOW = datetime(2026, 1, 31, tzinfo=timezone.utc)
STRONG = "Zx8_q" * 9


def hardened_facts(**over) -> AuditFacts:
    stack = build_stack(load_descriptor(REPO / "deployments" / "prod.yaml"))
    conf = render_nginx_conf(stack)
    facts = dict(
        environment="prod", target="engine", now=NOW, tls=True, nginx_conf=conf, live_nginx_conf=conf,
        kubernetes=render_kubernetes(stack), log_level="info",
        neo4j_password=secret_facts("Neo4j password", STRONG, NOW - timedelta(days=3)),
        redis_password=secret_facts("Redis password", STRONG, NOW - timedelta(days=3)),
        nextauth_secret=secret_facts("NEXTAUTH_SECRET", STRONG, NOW - timedelta(days=3)),
        secret_ages=(secret_facts("x", STRONG, NOW - timedelta(days=30)),),
        neo4j_unauthenticated_refused=True, neo4j_wrong_password_refused=True, redis_unauthenticated_refused=True,
        containers=(ContainerFacts("p-nginx-1", "nginx", "r/nginx@sha256:" + "a" * 64, "101",
                                   ((8080, "0.0.0.0", 443), (8081, "127.0.0.1", 40000))),
                    ContainerFacts("p-redis-1", "redis", "r/redis@sha256:" + "b" * 64, "999",
                                   ((6379, "127.0.0.1", 40001),))),
    )
    facts.update(over)
    return AuditFacts(**facts)


def test_every_checklist_item_of_the_guide_is_an_item():
    guide = (REPO.parent / "shared" / "design" / "helix-production-deployment-guide.md")
    text = guide.read_text() if guide.exists() else ""
    titles = [line[6:].strip() for line in text.split("## Security Checklist")[-1].splitlines() if line.startswith("- [ ]")]
    if titles:
        assert [i.title for i in audit.GUIDE_ITEMS] == titles
    assert len(audit.GUIDE_ITEMS) == 11 and all(i.fix for i in audit.CHECKLIST)
    # helix-ops' own additions come after the guide's items and apply to Kubernetes only
    extra = [i for i in audit.CHECKLIST if not i.guide]
    assert audit.CHECKLIST[-len(extra):] == tuple(extra)
    assert {i.id for i in extra} == {"configmap-secrets", "rbac-scope"}
    assert ENGINE_IDS == tuple(i.id for i in audit.GUIDE_ITEMS)


ENGINE_IDS = tuple(i.id for i in audit.items_for("engine"))


def test_hardened_facts_pass_every_item():
    report = evaluate(hardened_facts())
    assert {f.item.id: f.status for f in report.findings} == {i: "pass" for i in ENGINE_IDS}
    assert report.passed and "PASSED" in report.markdown()


WEAKENINGS = {
    "tls": dict(tls=False),
    "strong-passwords": dict(redis_password=secret_facts("Redis password", "redis")),
    "nextauth-secret": dict(nextauth_secret=secret_facts("NEXTAUTH_SECRET", "short-secret-123")),
    "neo4j-auth": dict(neo4j_unauthenticated_refused=False),
    "redis-auth": dict(redis_unauthenticated_refused=False),
    "network-policies": dict(kubernetes=[m for m in hardened_facts().kubernetes if m["kind"] != "NetworkPolicy"]),
    "audit-logging": dict(log_level="error"),
    "secret-rotation": dict(secret_ages=(secret_facts("Redis password", STRONG, NOW - timedelta(days=90)),)),
    "images-pinned": dict(containers=(ContainerFacts("p-x-1", "mcp-graph", "helix/graph:latest", "1000"),)),
    "non-root": dict(containers=(ContainerFacts("p-x-1", "mcp-graph", "r/g@sha256:" + "c" * 64, "0"),)),
    "rate-limiting": dict(live_nginx_conf="http { access_log /dev/stdout; server { listen 80; } }"),
}


@pytest.mark.parametrize("item_id", ENGINE_IDS)
def test_each_weakening_fails_its_item_with_the_fix(item_id):
    report = evaluate(hardened_facts(**WEAKENINGS[item_id]))
    finding = report.finding(item_id)
    assert finding.status == "fail", finding
    assert not report.passed and finding in report.blocking()
    assert finding.item.fix in report.markdown() and "❌ fail" in report.markdown()


def test_an_exception_needs_a_reason_and_is_recorded():
    with pytest.raises(audit.ConfigError, match="needs a reason"):
        evaluate(hardened_facts(tls=False), exceptions={"tls": " "})
    with pytest.raises(audit.ConfigError, match="unknown checklist item"):
        evaluate(hardened_facts(), exceptions={"tsl": "typo"})
    report = evaluate(hardened_facts(tls=False), exceptions={"tls": "loopback only"})
    assert report.finding("tls").status == "excepted" and report.passed
    assert "loopback only" in report.markdown()


def test_tag_pinned_images_warn_but_do_not_block():
    report = evaluate(hardened_facts(containers=(ContainerFacts("p-a-1", "dashboard", "r/d:1.4.2", "1000"),)))
    assert report.finding("images-pinned").status == "warn" and report.passed


def test_unreachable_live_target_blocks_required_items():
    report = evaluate(hardened_facts(redis_unauthenticated_refused=None, gather_errors={"redis": "engine down"}))
    assert report.finding("redis-auth").status == "skipped" and "engine down" in report.finding("redis-auth").detail
    assert not report.passed


# --- live -------------------------------------------------------------------------------------------------





@pytest.fixture(scope="module")
def weakened(bed, engine, images, docker_client, prefect_harness, tmp_path_factory):
    """A deliberately weakened environment: weak, stale blocks; TLS off and log_level error in the descriptor;
    Redis without a password published on all addresses, running as root; Neo4j with NEO4J_AUTH=none; an
    image by `latest`; nginx with its stock conf (no rate limit)."""
    import yaml

    from blocks.credentials import AnthropicCredentials, HelixAppSecrets, Neo4jCredentials, RedisCredentials
    from blocks.provision import register_block_types
    from drivers.engine import EngineDriver
    from testbed.helix import local_descriptor

    run = bed.run_id.split("-")[-1]
    project = f"aw{run}"
    path = local_descriptor(tmp_path_factory.mktemp("weak") / "local.yaml", project)
    data = yaml.safe_load(path.read_text())
    data["log_level"] = "error"
    data["credentials"] = {k: f"aw{run}-{k}" for k in ("neo4j", "redis", "dashboard", "anthropic")}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    register_block_types()
    old = datetime.now(timezone.utc) - timedelta(days=120)
    Neo4jCredentials(password="neo4j", rotated_at=old).save(f"aw{run}-neo4j", overwrite=True)
    RedisCredentials(password="redis123", rotated_at=old).save(f"aw{run}-redis", overwrite=True)
    HelixAppSecrets(nextauth_secret="changeme-please", rotated_at=old).save(f"aw{run}-dashboard", overwrite=True)
    AnthropicCredentials(api_key="x" * 40, rotated_at=old).save(f"aw{run}-anthropic", overwrite=True)

    labels = lambda service: {**bed.container_labels(), "helix-ops.project": project,  # noqa: E731
                              "helix-ops.environment": "local", "helix-ops.service": service}
    probe = docker_client.images.get("localhost/helix-probe:v1")
    probe.tag("localhost/helix-audit-weak", "latest")
    made = [
        docker_client.containers.run("localhost/helix-neo4j:5.26", name=f"{project}-neo4j", detach=True,
                                     environment={"NEO4J_AUTH": "none"}, labels=labels("neo4j"),
                                     ports={"7687/tcp": ("127.0.0.1", None)}),
        docker_client.containers.run("localhost/helix-redis:7", name=f"{project}-redis", detach=True, user="0",
                                     labels=labels("redis"), ports={"6379/tcp": None}),
        docker_client.containers.run("localhost/helix-audit-weak:latest", name=f"{project}-dashboard", detach=True,
                                     labels=labels("dashboard")),
        docker_client.containers.run("localhost/helix-nginx:1", name=f"{project}-nginx", detach=True,
                                     labels=labels("nginx")),
    ]
    driver = EngineDriver(docker_client, project, "local")
    host, port = driver.probe_address(made[0], 7687)
    from drivers.neo4j_users import unauthenticated_refused
    deadline = time.monotonic() + 150
    while True:
        try:
            unauthenticated_refused(f"bolt://{host}:{port}")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    yield {"path": path, "project": project}
    driver.remove(made, grace_s=2)
    docker_client.images.remove("localhost/helix-audit-weak:latest")


@pytest.mark.bed
def test_the_weakened_environment_fails_every_item(weakened, engine):
    from flows.audit import audit_helix

    result = audit_helix(env="local", descriptor=str(weakened["path"]), engine_url=engine.base_url)
    statuses = {f["id"]: f["status"] for f in result["findings"]}
    assert statuses == {i: "fail" for i in ENGINE_IDS}, [
        (f["id"], f["status"], f["detail"]) for f in result["findings"] if f["status"] != "fail"]
    details = {f["id"]: f["detail"] for f in result["findings"]}
    assert "without credentials was accepted" in details["neo4j-auth"]
    assert "PING without AUTH was answered" in details["redis-auth"]
    assert "redis 6379->0.0.0.0" in details["network-policies"]
    assert "helix-audit-weak:latest" in details["images-pinned"]
    assert f"{weakened['project']}-redis" in details["non-root"]
    assert "no limit_req" in details["rate-limiting"]
    assert not result["passed"] and all(f["fix"] for f in result["findings"])


@pytest.mark.bed
def test_the_gate_refuses_the_weakened_environment_unless_overridden(weakened, engine):
    from prefect import flow

    from tasks.audit import require_audit_pass

    from drivers.target import Connection
    from tasks.target import target_for

    desc = load_descriptor(weakened["path"])
    target = target_for(desc, Connection(engine_url=engine.base_url))

    @flow
    def gate(reason: str | None):
        return require_audit_pass(desc, target, override_reason=reason)

    with pytest.raises(audit.AuditFailed, match="11 required security item"):
        gate(None)
    report = gate("incident 42: hotfix must ship, items tracked in SEC-7")
    assert not report.passed


@pytest.mark.bed
def test_the_hardened_local_environment_passes(helix_env, engine):
    from flows.audit import audit_helix

    result = audit_helix(env="local", descriptor=str(helix_env["path"]), engine_url=engine.base_url,
                         exceptions={"tls": "local binds 127.0.0.1 only; prod sets ingress.tls: true"})
    statuses = {f["id"]: f["status"] for f in result["findings"]}
    assert result["passed"], [(f["id"], f["status"], f["detail"]) for f in result["findings"]]
    assert statuses["tls"] == "excepted" and statuses["images-pinned"] == "warn"
    assert all(s == "pass" for i, s in statuses.items() if i not in ("tls", "images-pinned"))
