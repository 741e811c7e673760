"""The guide's Security Checklist as data plus pure checks (audit-helix).

Each :class:`Item` is one line of the checklist: an id, the guide's wording, whether a failure blocks a
prod deploy (``required``), and how to fix it. :func:`evaluate` turns :class:`AuditFacts` (gathered by
``tasks/audit.py`` from the descriptor, the renderings, the credential blocks and the live engine) into one
:class:`Finding` per item: ``pass``, ``fail``, ``warn`` (advice, never blocks), ``excepted`` (a failure the
operator accepted with a recorded reason) or ``skipped`` (the fact could not be gathered: this counts as a
failure for required items, so an unreachable target never passes an audit).

The facts are in :mod:`helix_ops.audit_facts` (secrets never reach the checks: the task reduces each one to
:class:`~helix_ops.audit_facts.SecretFacts`); the Kubernetes-only readings and checks (securityContexts,
Services, live NetworkPolicies, ConfigMaps, helix-ops' Role) in :mod:`helix_ops.audit_kubernetes`. This module
holds the checklist, the checks common to both targets, the report and the deploy gate.

Example::

    report = evaluate(facts, exceptions={"tls": "loopback-only developer environment"})
    report.blocking()   # required items that failed: deploy-helix refuses while this is not empty
    print(report.markdown())
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from helix_ops.audit_facts import AuditFacts, Result, SecretFacts, Status, skipped
from helix_ops.audit_kubernetes import (
    check_configmap_secrets,
    check_rbac_scope,
    exposure_problems,
    live_policy_problems,
    security_problems,
)
from helix_ops.errors import ConfigError

MIN_PASSWORD_LENGTH = 16
MIN_NEXTAUTH_LENGTH = 32
DEFAULT_MAX_SECRET_AGE_DAYS = 35
"""The prod rotation runs monthly; a secret older than 35 days means a rotation was missed."""


TARGETS = ("engine", "kubernetes")


@dataclass(frozen=True)
class Item:
    """One checklist item: ``id``, the guide's ``title``, ``required`` (blocks a prod deploy) and ``fix``;
    ``guide`` is False for an item helix-ops adds to the guide's list, ``targets`` where it applies."""

    id: str
    title: str
    required: bool
    fix: str
    guide: bool = True
    targets: tuple[str, ...] = TARGETS


CHECKLIST: tuple[Item, ...] = (
    Item("tls", "Use TLS for all external connections", True,
         "set `ingress.tls: true` in the descriptor and supply the certificate (`nginx-certs`, or cert-manager "
         "via `ingress.cluster_issuer` on Kubernetes), then run deploy-helix"),
    Item("strong-passwords", "Set strong passwords for Neo4j and Redis", True,
         f"rotate the weak credential with rotate-helix-secrets (generated values are 43 random characters); "
         f"a supplied password needs {MIN_PASSWORD_LENGTH}+ characters, not a common word"),
    Item("nextauth-secret", "Configure NEXTAUTH_SECRET with 32+ character random string", True,
         "run rotate-helix-secrets with credentials=['nextauth'] (or `python -m blocks.bootstrap --env ENV "
         "--rotate`) to store a 43-character random secret, then roll the dashboard"),
    Item("neo4j-auth", "Enable Neo4j authentication", True,
         "remove `NEO4J_AUTH=none` / `dbms.security.auth_enabled=false`; the stack sets NEO4J_AUTH=neo4j/<password> "
         "from the credentials block; recreate the neo4j container"),
    Item("redis-auth", "Use Redis AUTH", True,
         "run Redis with the helix-ops start script (aclfile on /data with the block's password); remove "
         "`nopass` from the default user (`ACL SETUSER default resetpass >…`) and redeploy"),
    Item("network-policies", "Configure network policies in Kubernetes", True,
         "Kubernetes: apply the rendered NetworkPolicies (default deny + one allow per service: run deploy-helix) "
         "and expose no database port (Neo4j 7474/7687, Redis 6379, Sentinel 26379) through a LoadBalancer or "
         "NodePort Service or externalIPs (`kubectl -n <ns> patch service <name> -p "
         "'{\"spec\":{\"type\":\"ClusterIP\"}}'`, or delete a Service helix-ops did not render); engine: "
         "publish no service port except the load balancer's (only the probe ports on 127.0.0.1)"),
    Item("audit-logging", "Enable audit logging", True,
         "keep the nginx access log on and `log_level: info` (or debug) so requests and logins are recorded; "
         "helix-ops writes its own audit records as Prefect artifacts"),
    Item("secret-rotation", "Regularly rotate secrets", True,
         "run rotate-helix-secrets (prod schedule: monthly); check the deployment's schedule is active"),
    Item("images-pinned", "Keep images updated", True,
         "pin every image to a version tag (never `latest`) in the descriptor and redeploy; prefer digests "
         "(`repository@sha256:…`) so a tag cannot move under you"),
    Item("non-root", "Use non-root containers", True,
         "build or choose images that set a non-root USER, or set `run_as_user`; recreate the container. "
         "Kubernetes: every pod runs with runAsNonRoot (no runAsUser 0), seccomp RuntimeDefault, no host "
         "namespaces, no service account token, and every container with allowPrivilegeEscalation false, "
         "not privileged, capabilities drop ALL (what helix-ops renders: run deploy-helix to restore it)"),
    Item("rate-limiting", "Implement rate limiting on dashboard", True,
         "deploy the rendered nginx.conf (limit_req on `/`) or the Ingress with `limit-rps`; set "
         "`ingress.rate_limit_rps`"),
    Item("configmap-secrets", "Keep secret values out of ConfigMaps", True,
         "move the value into the `helix-secrets` Secret (a `${VAR}` in helix.config.yaml, read from a "
         "secretKeyRef), delete it from the ConfigMap named in the finding, then rotate the leaked credential "
         "with rotate-helix-secrets: whoever could read ConfigMaps has seen it",
         guide=False, targets=("kubernetes",)),
    Item("rbac-scope", "Grant helix-ops no more than its Role", True,
         "apply deployments/rbac/role.yaml as it is (`kubectl apply -f deployments/rbac/role.yaml`, namespace "
         "adjusted): its Role names every resource and verb helix-ops needs, no wildcard",
         guide=False, targets=("kubernetes",)),
)
"""Every item of the guide's Security Checklist, in the guide's order, then the items helix-ops adds
(``guide=False``: secrets kept out of ConfigMaps and the scope of helix-ops' own Role, on Kubernetes)."""

ITEM_IDS: tuple[str, ...] = tuple(i.id for i in CHECKLIST)
GUIDE_ITEMS: tuple[Item, ...] = tuple(i for i in CHECKLIST if i.guide)


def items_for(target: str) -> tuple[Item, ...]:
    """The items that apply to a ``target`` (``engine`` / ``kubernetes``), in checklist order."""
    return tuple(i for i in CHECKLIST if target in i.targets)


def item(item_id: str) -> Item:
    """The checklist item called ``item_id``; ConfigError naming the known ids otherwise."""
    for it in CHECKLIST:
        if it.id == item_id:
            return it
    raise ConfigError(f"audit.{item_id}", f"unknown checklist item (known: {', '.join(ITEM_IDS)})")


# --- findings ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """The outcome of one item: status, what was seen (``detail``) and, unless it passed, how to fix it."""

    item: Item
    status: Status
    detail: str
    exception_reason: str = ""

    @property
    def blocking(self) -> bool:
        """A required item that failed or could not be checked, with no recorded exception."""
        return self.item.required and self.status in ("fail", "skipped")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.item.id, "title": self.item.title, "required": self.item.required,
                "status": self.status, "detail": self.detail, "fix": "" if self.status == "pass" else self.item.fix,
                "exception_reason": self.exception_reason}


@dataclass(frozen=True)
class AuditReport:
    """All findings of one audit, in checklist order."""

    environment: str
    findings: tuple[Finding, ...]
    generated_at: datetime

    def finding(self, item_id: str) -> Finding:
        return next(f for f in self.findings if f.item.id == item_id)

    def blocking(self) -> list[Finding]:
        """Required items that failed (or could not be checked) and have no exception."""
        return [f for f in self.findings if f.blocking]

    @property
    def passed(self) -> bool:
        return not self.blocking()

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.status] = out.get(f.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "passed": self.passed, "generated_at": self.generated_at.isoformat(),
                "counts": self.counts(), "findings": [f.to_dict() for f in self.findings]}

    def markdown(self) -> str:
        """The report as a markdown artifact: a verdict, then one row per item with its fix."""
        icon = {"pass": "✅ pass", "fail": "❌ fail", "warn": "⚠️ warn", "excepted": "➖ excepted",
                "skipped": "❔ not checked"}
        verdict = "PASSED" if self.passed else f"FAILED ({len(self.blocking())} required item(s))"
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items()))
        lines = [f"# Security audit of `{self.environment}`: {verdict}", "",
                 f"{self.generated_at.isoformat()} — {counts}", "",
                 "| item | status | required | what was seen | how to fix |", "|---|---|---|---|---|"]
        for f in self.findings:
            seen = _cell(f.detail + (f" (exception: {f.exception_reason})" if f.exception_reason else ""))
            fix = "" if f.status == "pass" else _cell(f.item.fix)
            lines.append(f"| {f.item.title} | {icon[f.status]} | {'yes' if f.item.required else 'no'} | {seen} | {fix} |")
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def evaluate(facts: AuditFacts, exceptions: Mapping[str, str] | None = None,
             max_secret_age_days: int = DEFAULT_MAX_SECRET_AGE_DAYS) -> AuditReport:
    """One finding per checklist item. ``exceptions`` maps an item id to the reason a failure is accepted
    (recorded in the finding; a passing item stays ``pass``). An exception without a reason is refused."""
    exceptions = dict(exceptions or {})
    for item_id, reason in exceptions.items():
        item(item_id)
        if not str(reason).strip():
            raise ConfigError(f"exceptions.{item_id}", "an exception needs a reason (it goes into the audit record)")
    checks = {
        "tls": _tls, "strong-passwords": _strong_passwords, "nextauth-secret": _nextauth,
        "neo4j-auth": _neo4j_auth, "redis-auth": _redis_auth, "network-policies": _network_policies,
        "audit-logging": _audit_logging, "images-pinned": _images_pinned, "non-root": _non_root,
        "rate-limiting": _rate_limiting,
    }
    checks.update({"configmap-secrets": check_configmap_secrets, "rbac-scope": check_rbac_scope})
    findings = []
    for it in items_for(facts.target):
        if it.id == "secret-rotation":
            status, detail = _secret_rotation(facts, max_secret_age_days)
        else:
            status, detail = checks[it.id](facts)
        reason = exceptions.get(it.id, "")
        if status in ("fail", "skipped") and reason:
            status = "excepted"
        findings.append(Finding(it, status, detail, reason if status == "excepted" else ""))
    return AuditReport(facts.environment, tuple(findings), facts.now)


# --- the checks common to both targets ---------------------------------------------------------------------


def _tls(f: AuditFacts) -> Result:
    if f.tls is None:
        return "skipped", "descriptor not read"
    problems = []
    if not f.tls:
        problems.append("ingress.tls is false: the dashboard is served over plain HTTP")
    if f.tls and f.nginx_conf is not None and f.target == "engine" and "ssl_certificate" not in f.nginx_conf:
        problems.append("the rendered nginx.conf has no ssl_certificate")
    if f.tls and f.kubernetes is not None and f.target == "kubernetes":
        ing = [m for m in f.kubernetes if m.get("kind") == "Ingress"]
        if not ing or not all(m.get("spec", {}).get("tls") for m in ing):
            problems.append("the rendered Ingress has no tls section")
    if f.live_nginx_conf is not None and f.tls and "ssl_certificate" not in f.live_nginx_conf:
        problems.append("the running load balancer's nginx.conf has no ssl_certificate")
    return ("fail", "; ".join(problems)) if problems else ("pass", "ingress.tls on; TLS certificate configured")


def _strength(s: SecretFacts) -> str:
    if s.weak:
        return f"{s.name} is a common or trivial value"
    if s.length < MIN_PASSWORD_LENGTH:
        return f"{s.name} has {s.length} characters (< {MIN_PASSWORD_LENGTH})"
    if s.length < 24 and s.classes < 3:
        return f"{s.name} uses {s.classes} character class(es) with only {s.length} characters"
    return ""


def _strong_passwords(f: AuditFacts) -> Result:
    if f.neo4j_password is None or f.redis_password is None:
        return skipped(f, "the Neo4j and Redis passwords", "blocks")
    problems = [p for p in (_strength(f.neo4j_password), _strength(f.redis_password)) if p]
    if problems:
        return "fail", "; ".join(problems)
    return "pass", f"Neo4j {f.neo4j_password.length} and Redis {f.redis_password.length} characters, not common"


def _nextauth(f: AuditFacts) -> Result:
    s = f.nextauth_secret
    if s is None:
        return skipped(f, "NEXTAUTH_SECRET", "blocks")
    if s.length < MIN_NEXTAUTH_LENGTH or s.weak:
        return "fail", f"NEXTAUTH_SECRET has {s.length} characters" + (" and is a common value" if s.weak else "") \
            + f" (need {MIN_NEXTAUTH_LENGTH}+ random characters)"
    return "pass", f"NEXTAUTH_SECRET has {s.length} characters"


def _neo4j_auth(f: AuditFacts) -> Result:
    if f.neo4j_unauthenticated_refused is None:
        return skipped(f, "Neo4j authentication", "neo4j")
    problems = []
    if not f.neo4j_unauthenticated_refused:
        problems.append("a Bolt login without credentials was accepted")
    if f.neo4j_wrong_password_refused is False:
        problems.append("a Bolt login with a wrong password was accepted")
    if problems:
        return "fail", "; ".join(problems) + ": authentication is off"
    return "pass", "Bolt logins without credentials and with a wrong password are refused"


def _redis_auth(f: AuditFacts) -> Result:
    if f.redis_unauthenticated_refused is None:
        return skipped(f, "Redis AUTH", "redis")
    if not f.redis_unauthenticated_refused:
        return "fail", "PING without AUTH was answered: the default user needs no password"
    return "pass", "PING without AUTH is refused (NOAUTH)"


def _network_policies(f: AuditFacts) -> Result:
    problems = []
    if f.kubernetes is None:
        return "skipped", "the Kubernetes rendering was not produced"
    policies = [m for m in f.kubernetes if m.get("kind") == "NetworkPolicy"]
    deny = [p for p in policies if p.get("spec", {}).get("podSelector") == {} and not p["spec"].get("ingress")]
    if not deny:
        problems.append("no default-deny NetworkPolicy in the Kubernetes rendering")
    covered = {p.get("spec", {}).get("podSelector", {}).get("matchLabels", {}).get("app") for p in policies}
    apps = {m["metadata"]["name"] for m in f.kubernetes if m.get("kind") in ("Deployment", "StatefulSet")}
    missing = sorted(a for a in apps if a not in covered and a != f.load_balancer)
    if missing:
        problems.append(f"no NetworkPolicy selects {', '.join(missing)}")
    if f.target == "kubernetes":
        problems += live_policy_problems(f, policies) + exposure_problems(f)
    if f.target == "engine":
        if f.containers is None:
            problems.append("live containers could not be read: "
                            + f.gather_errors.get("containers", "not gathered"))
        else:
            exposed = sorted({f"{c.service} {port}->{ip or '0.0.0.0'}:{host}" for c in f.containers
                              for port, ip, host in c.published
                              if c.service != f.load_balancer and ip not in ("127.0.0.1", "::1")})
            if exposed:
                problems.append(f"services published beyond loopback: {', '.join(exposed)}")
    if problems:
        return "fail", "; ".join(problems)
    where = (" and only the load balancer is published" if f.target == "engine"
             else " live as rendered; no database port exposed outside the cluster")
    return "pass", f"{len(policies)} NetworkPolicies (default deny + per-service allows){where}"


def _audit_logging(f: AuditFacts) -> Result:
    problems = []
    if f.log_level is None:
        return "skipped", "descriptor not read"
    if f.log_level not in ("debug", "info"):
        problems.append(f"log_level is {f.log_level}: logins and requests are not logged")
    for label, conf in (("rendered", f.nginx_conf), ("running", f.live_nginx_conf)):
        if conf is not None and ("access_log off;" in _http_block_head(conf) or "access_log" not in conf):
            problems.append(f"the {label} nginx.conf has no access log for the dashboard")
    if problems:
        return "fail", "; ".join(problems)
    return "pass", f"log_level {f.log_level}; nginx access log on"


def _http_block_head(conf: str) -> str:
    """The ``http {`` block before its first ``server`` (where the access log for every server is set)."""
    start = conf.find("http {")
    if start < 0:
        return ""
    end = conf.find("server {", start)
    return conf[start:end if end > 0 else len(conf)]


def _secret_rotation(f: AuditFacts, max_age_days: int) -> Result:
    if not f.secret_ages:
        return skipped(f, "secret age", "blocks")
    old = []
    for s in f.secret_ages:
        if s.rotated_at is None:
            old.append(f"{s.name} has no rotated_at")
        elif f.now - s.rotated_at > timedelta(days=max_age_days):
            old.append(f"{s.name} last rotated {(f.now - s.rotated_at).days} days ago")
    if old:
        return "fail", "; ".join(old) + f" (limit {max_age_days} days)"
    oldest = max((f.now - s.rotated_at).days for s in f.secret_ages if s.rotated_at)
    return "pass", f"every secret rotated within {max_age_days} days (oldest: {oldest} days)"


def _images_pinned(f: AuditFacts) -> Result:
    if f.containers is None:
        return skipped(f, "running images", "containers")
    latest = sorted({f"{c.service}: {c.image}" for c in f.containers if _unpinned(c.image)})
    if latest:
        return "fail", f"unpinned images: {', '.join(latest)}"
    undigested = sorted({c.image for c in f.containers if "@sha256:" not in c.image})
    if undigested:
        return "warn", f"pinned by tag, not by digest: {', '.join(undigested)}"
    return "pass", "every image pinned by digest"


def _unpinned(image: str) -> bool:
    if "@sha256:" in image:
        return False
    last = image.rsplit("/", 1)[-1]
    return ":" not in last or last.endswith(":latest")


def _non_root(f: AuditFacts) -> Result:
    if f.containers is None:
        return skipped(f, "container users", "containers")
    if not f.containers:
        return "fail", "no running containers to check"
    if f.target == "kubernetes":
        bad = sorted(f"{c.name}: {', '.join(p)}" for c in f.containers
                     for p in [security_problems(c.security or {})] if p)
        if bad:
            return "fail", f"insecure securityContext: {'; '.join(bad)}"
        return "pass", (f"{len(f.containers)} containers: runAsNonRoot, no privilege escalation, capabilities "
                        "dropped, seccomp RuntimeDefault")
    root = sorted(f"{c.name} ({c.user or 'image default: root'})" for c in f.containers if _is_root(c.user))
    if root:
        return "fail", f"running as root: {', '.join(root)}"
    return "pass", f"{len(f.containers)} containers, none as root"


def _is_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in ("", "0", "root")


def _rate_limiting(f: AuditFacts) -> Result:
    problems = []
    if f.target == "kubernetes":
        if f.kubernetes is None:
            return "skipped", "the Kubernetes rendering was not produced"
        ing = [m for m in f.kubernetes if m.get("kind") == "Ingress"]
        if not ing or not all("nginx.ingress.kubernetes.io/limit-rps" in m["metadata"].get("annotations", {})
                              for m in ing):
            problems.append("the Ingress has no limit-rps annotation")
    else:
        if f.nginx_conf is not None and not _limits(f.nginx_conf):
            problems.append("the rendered nginx.conf has no limit_req on the dashboard")
        if f.live_nginx_conf is None:
            problems.append("the running load balancer's nginx.conf could not be read: "
                            + f.gather_errors.get("nginx", "not gathered"))
        elif not _limits(f.live_nginx_conf):
            problems.append("the running load balancer's nginx.conf has no limit_req")
    if problems:
        return "fail", "; ".join(problems)
    return "pass", "requests to the dashboard are rate limited (limit_req / limit-rps)"


def _limits(conf: str) -> bool:
    return "limit_req_zone" in conf and "limit_req zone=" in conf


class AuditFailed(ConfigError):
    """deploy-helix's gate: required checklist items fail and no override reason was given."""

    def __init__(self, environment: str, blocking: Sequence[Finding]) -> None:
        self.environment = environment
        self.blocking = tuple(blocking)
        items = "; ".join(f"{f.item.id}: {f.detail}" for f in blocking)
        super().__init__("audit", f"{len(blocking)} required security item(s) fail in {environment}: {items} "
                                  "(fix them, record an exception, or override with a reason)")

    def __reduce__(self):
        return (type(self), (self.environment, self.blocking))
