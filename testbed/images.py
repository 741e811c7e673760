"""Container images for the test bed, built offline from files on this machine and tagged under ``localhost/``.

Each image is a ``FROM scratch`` build whose root filesystem (``rootfs.tar``) is assembled here: host binaries, the shared
libraries ``ldd`` says they link, busybox for a shell, and the image's own files from ``testbed/images/<name>``.
The build goes through the Docker Engine API, so the same code drives Docker and Podman. An image is rebuilt
only when the hash of its inputs (recorded as a label) changes.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from testbed import procs
from testbed.paths import IMAGES_DIR, NEO4J_LIB, PROBE_DIR, REPO, home

HASH_LABEL = "dev.helix-ops.testbed.inputs"
JAVA_HOME = Path("/usr/lib/jvm/java-17-openjdk-amd64")
BUSYBOX = Path("/bin/busybox")


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


TAGS = {
    "redis": "localhost/helix-redis:7",
    "neo4j": "localhost/helix-neo4j:5.26",
    "nginx": "localhost/helix-nginx:1",
    "probe-v1": "localhost/helix-probe:v1",
    "probe-v2": "localhost/helix-probe:v2",
    "probe-broken": "localhost/helix-probe:broken",
    # the real Kubernetes node's pod sandbox (testbed/kube_node.py)
    "pause": "localhost/helix-pause:1",
    # the flow-run image of the Kubernetes work pool (deployments/k8s-work-pool.json's image default)
    "flow-run": f"localhost/helix-ops-flow-run:{project_version()}",
}

_LDD_PATH = re.compile(r"(/\S+\.so[^\s]*)")


def shared_libs(binaries: Iterable[Path]) -> set[Path]:
    """Every shared library (and the loader) the given ELF files link, as ``ldd`` resolves them."""
    libs: set[Path] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = _LDD_PATH.search(line.split("=>")[-1])
            if m:
                libs.add(Path(m.group(1)))
    return libs


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _copy_file(src: Path, rootfs: Path, dest: Path | None = None, mode: int | None = None) -> None:
    target = rootfs / (dest or src).relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src.resolve(), target)
    if mode is not None:
        target.chmod(mode)


def _copy_libs(binaries: Iterable[Path], rootfs: Path) -> None:
    for lib in shared_libs(binaries):
        _copy_file(lib, rootfs)  # keeps the path the loader asks for (e.g. /lib64/ld-linux-x86-64.so.2)


def _base(rootfs: Path, users: list[tuple[str, int]]) -> None:
    """busybox as /bin/sh and its applets, /etc/passwd and /etc/group with ``users``, /tmp."""
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    _copy_file(BUSYBOX, rootfs, Path("/bin/busybox"))
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    etc = rootfs / "etc"
    etc.mkdir(exist_ok=True)
    all_users = [("root", 0), *users, ("nobody", 65534)]
    (etc / "passwd").write_text("".join(f"{n}:x:{u}:{u}::/tmp:/bin/sh\n" for n, u in all_users))
    (etc / "group").write_text("".join(f"{n}:x:{u}:\n" for n, u in all_users))
    (etc / "nsswitch.conf").write_text("hosts: files dns\npasswd: files\ngroup: files\n")
    tmp = rootfs / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)


def _owned_dir(rootfs: Path, path: str, uid: int) -> None:
    d = rootfs / path.lstrip("/")
    d.mkdir(parents=True, exist_ok=True)
    os.chown(d, uid, uid)


def assemble_redis(rootfs: Path) -> None:
    binaries = [Path("/usr/bin/redis-server"), Path("/usr/bin/redis-cli"), Path("/usr/bin/redis-check-rdb"),
                Path("/usr/bin/redis-check-aof")]
    _base(rootfs, [("redis", 999)])
    for b in binaries:
        _copy_file(b, rootfs)
    _copy_libs(binaries, rootfs)
    _copy_file(IMAGES_DIR / "redis" / "redis.conf", rootfs, Path("/etc/redis/redis.conf"), 0o644)
    _owned_dir(rootfs, "/data", 999)


def assemble_neo4j(rootfs: Path) -> None:
    _base(rootfs, [("neo4j", 7474)])
    java_dst = rootfs / "opt" / "java"
    shutil.copytree(JAVA_HOME, java_dst, symlinks=False, ignore_dangling_symlinks=True,
                    ignore=shutil.ignore_patterns("jmods", "include", "man", "docs", "src.zip", "demo"))
    elves = [p for p in java_dst.rglob("*") if p.is_file() and _is_elf(p)]
    for lib in shared_libs(elves):
        if not str(lib).startswith(str(JAVA_HOME)):
            _copy_file(lib, rootfs)
    shutil.copytree(NEO4J_LIB, rootfs / "var/lib/neo4j/lib")
    _copy_file(IMAGES_DIR / "neo4j" / "docker-entrypoint.sh", rootfs, Path("/docker-entrypoint.sh"), 0o755)
    _copy_file(IMAGES_DIR / "neo4j" / "neo4j-admin", rootfs, Path("/var/lib/neo4j/bin/neo4j-admin"), 0o755)
    for d in ("/var/lib/neo4j/conf", "/var/lib/neo4j/import", "/var/lib/neo4j/plugins", "/data", "/logs",
              "/backups"):
        _owned_dir(rootfs, d, 7474)


def assemble_nginx(rootfs: Path) -> None:
    _base(rootfs, [("nginx", 101)])
    nginx = Path("/usr/sbin/nginx")
    _copy_file(nginx, rootfs)
    _copy_libs([nginx], rootfs)
    _copy_file(Path("/etc/nginx/mime.types"), rootfs)
    _copy_file(IMAGES_DIR / "nginx" / "nginx.conf", rootfs, Path("/etc/nginx/nginx.conf"), 0o644)
    _copy_file(IMAGES_DIR / "nginx" / "default.conf", rootfs, Path("/etc/nginx/conf.d/default.conf"), 0o644)
    _owned_dir(rootfs, "/etc/nginx/conf.d", 101)
    _owned_dir(rootfs, "/var/log/nginx", 101)
    _owned_dir(rootfs, "/var/lib/nginx", 101)


def assemble_pause(rootfs: Path) -> None:
    """A static ``/pause`` compiled from pause.c (sleeps until TERM/INT, reaps children)."""
    rootfs.mkdir(parents=True, exist_ok=True)
    procs.run(["gcc", "-static", "-Os", "-s", "-o", str(rootfs / "pause"), str(IMAGES_DIR / "pause" / "pause.c")],
              timeout_s=120)


def build_probe_binary(out: Path, version: str, force_unhealthy: bool = False) -> None:
    """Compile the Go probe as a static binary with its version (and health variant) fixed at build time."""
    ldflags = f"-s -w -X main.version={version}"
    if force_unhealthy:
        ldflags += " -X main.forceUnhealthy=true"
    env = {"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}  # Go's own caches persist per machine
    go = shutil.which("go") or "/usr/local/go/bin/go"
    procs.run([go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(out), "."], env=env, cwd=PROBE_DIR,
              timeout_s=900)


@dataclass
class ImageSpec:
    """How to make one image: its tag, the folder with its Containerfile, and what goes into rootfs/."""

    key: str
    tag: str
    source: Path
    inputs: list[Path] = field(default_factory=list)
    on_demand: bool = False  # built only when asked for by key (``ensure_images(client, only=[key])``)

    def input_hash(self) -> str:
        """Hash of everything the image is made of: file contents and their paths relative to each input root.

        No absolute path and no mtime goes in, so two checkouts of the same sources agree on the hash.
        """
        h = hashlib.sha256(self.key.encode())
        for root in [self.source, *self.inputs]:
            paths = sorted(root.rglob("*")) if root.is_dir() else [root]
            for p in paths:
                if not p.is_file() or p.name == "probe":  # the probe binary is built from the sources
                    continue
                h.update(str(p.relative_to(root) if root.is_dir() else p.name).encode())
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
        return h.hexdigest()[:32]


# --- the flow-run image: helix-ops and its runtime dependencies on this machine's Python -------------------------

VENV = REPO / ".venv"
FLOW_RUN_UID = 10001  # deployments/k8s-work-pool.json's runAsUser / runAsGroup
FLOW_RUN_HOME = "/opt/helix-ops"  # HELIX_OPS_HOME in the image, prefect.yaml's pull step goes there
FLOW_RUN_PROJECT = ["flows", "tasks", "drivers", "helix_ops", "blocks", "deployments", "prefect.yaml",
                    "pyproject.toml"]
_PY = "python3.11"
# the standard library minus what a flow run never imports (tests, GUIs, the static libpython, build helpers)
_STDLIB_SKIP = {"test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
                "config-3.11-x86_64-linux-gnu", "__phello__", "turtle.py", "pydoc_data"}


# prints the site-packages modules (relative paths) that a flow run's process imports
_IMPORTED_BY_A_FLOW_RUN = """
import importlib, pkgutil, sys
import prefect.cli, prefect.flow_engine, prefect.deployments.steps, helix_ops.cli, flows
for m in pkgutil.iter_modules(flows.__path__):
    importlib.import_module("flows." + m.name)
site = sys.argv[1].rstrip("/") + "/"
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None) or ""
    if f.startswith(site) and f.endswith(".py"):
        print(f[len(site):])
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def venv_python() -> tuple[Path, Path]:
    """(the venv's site-packages, the base Python's prefix the venv was made from, e.g. pyenv's 3.11)."""
    cfg = dict(line.split(" = ", 1) for line in (VENV / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    return VENV / "lib" / _PY / "site-packages", Path(cfg["home"]).parent


def runtime_distributions(site_packages: Path) -> list:
    """helix-ops' runtime dependency closure as the venv has it installed (no test extras), helix-ops last."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    dists = {_norm(d.metadata["Name"]): d for d in md.distributions(path=[str(site_packages)])}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [("helix-ops", ())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        if name not in dists:
            raise RuntimeError(f"{name} is required by helix-ops but not installed in {site_packages}")
        for line in dists[name].requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((_norm(req.name), tuple(sorted(req.extras))))
    names = sorted({n for n, _ in seen} - {"helix-ops"})
    return [dists[n] for n in names] + [dists["helix-ops"]]


def _project_files() -> list[Path]:
    out = []
    for name in FLOW_RUN_PROJECT:
        root = REPO / name
        paths = sorted(root.rglob("*")) if root.is_dir() else [root]
        out += [p for p in paths if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return out


def assemble_flow_run(rootfs: Path) -> None:
    """Python at /usr/local (like python:3.11-slim), the runtime closure of the venv's site-packages, the project
    at /opt/helix-ops on sys.path through a .pth (what ``pip install -e`` does), console scripts for it, every
    shared library the ELF files link, CA certificates and zoneinfo; all owned by root, read-only for the user."""
    site_src, base = venv_python()
    _base(rootfs, [("helix-ops", FLOW_RUN_UID)])
    usr_local = rootfs / "usr/local"
    # the interpreter and libpython (its RUNPATH is pyenv's lib: a link from the loader's default path)
    _copy_file(base / "bin" / _PY, rootfs, Path("/usr/local/bin") / _PY)
    for link in ("python3", "python"):
        (usr_local / "bin" / link).symlink_to(_PY)
    libpython = base / "lib" / "libpython3.11.so.1.0"
    _copy_file(libpython, rootfs, Path("/usr/local/lib/libpython3.11.so.1.0"))
    multiarch = rootfs / "lib/x86_64-linux-gnu"
    multiarch.mkdir(parents=True, exist_ok=True)
    (multiarch / libpython.name).symlink_to("/usr/local/lib/libpython3.11.so.1.0")
    # the standard library, with its own pyc files (level 0 only)
    stdlib_src, stdlib = base / "lib" / _PY, usr_local / "lib" / _PY

    def skip(directory: str, names: list[str]) -> set[str]:
        drop = {n for n in names if n.endswith((".opt-1.pyc", ".opt-2.pyc"))}
        return drop | (_STDLIB_SKIP & set(names) if Path(directory) == stdlib_src else set())

    shutil.copytree(stdlib_src, stdlib, symlinks=True, ignore=skip)
    # site-packages: the files each distribution's RECORD lists (no pyc: they are compiled below)
    site = stdlib / "site-packages"
    site.mkdir()
    scripts: dict[str, str] = {}
    for dist in runtime_distributions(site_src):
        for entry in dist.entry_points:
            if entry.group == "console_scripts":
                scripts[entry.name] = entry.value
        if _norm(dist.metadata["Name"]) == "helix-ops":  # editable in the venv: its metadata, not its finder
            info = site / f"helix_ops-{dist.version}.dist-info"
            info.mkdir()
            for name in ("METADATA", "entry_points.txt", "top_level.txt"):
                if dist.read_text(name) is not None:
                    (info / name).write_text(dist.read_text(name))
            (info / "INSTALLER").write_text("helix-ops testbed\n")
            continue
        for rel in dist.files or []:
            src = Path(dist.locate_file(rel)).resolve()
            if not src.is_file() or not src.is_relative_to(site_src.resolve()) or "__pycache__" in src.parts:
                continue  # console scripts outside site-packages are regenerated below for /usr/local/bin
            dst = site / src.relative_to(site_src.resolve())
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    (site / "helix-ops.pth").write_text(FLOW_RUN_HOME + "\n")
    for name, value in sorted(scripts.items()):
        module, _, attr = value.partition(":")
        script = usr_local / "bin" / name
        call = f"{module}.{attr}" if attr else module
        script.write_text(f"#!/usr/local/bin/{_PY}\nimport sys\nimport {module}\nsys.exit({call}())\n")
        script.chmod(0o755)
    # the project
    home_dir = rootfs / FLOW_RUN_HOME.lstrip("/")
    for src in _project_files():
        _copy_file(src, rootfs, Path(FLOW_RUN_HOME) / src.relative_to(REPO), 0o644)
    # byte-compile what a flow run imports (the project, Prefect's engine and CLI, the flows' imports): the root
    # filesystem is read-only in the pod, so a missing pyc is compiled again at every start (+1.7 s here);
    # compiling all of site-packages would add 135 MB for modules a flow run never loads. unchecked-hash: the
    # image never changes, mtimes do not matter. (whenever/_typing_312.py is 3.12 syntax: compile errors are
    # expected and harmless, as with pip.)
    imported = subprocess.run([str(VENV / "bin" / "python"), "-c", _IMPORTED_BY_A_FLOW_RUN, str(site_src)],
                              cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    to_compile = [str(site / rel) for rel in imported if (site / rel).is_file()]
    to_compile += [str(p) for p in home_dir.rglob("*.py")]
    subprocess.run([str(base / "bin" / _PY), "-m", "compileall", "-q", "-j0", "--invalidation-mode",
                    "unchecked-hash", "-s", str(rootfs), "-p", "/", "-i", "-"],
                   input="\n".join(to_compile), text=True, capture_output=True)
    # every shared library an ELF file links (the interpreter, lib-dynload, compiled wheels)
    elves = [p for p in rootfs.rglob("*") if p.is_file() and not p.is_symlink() and _is_elf(p)
             and p.name != "busybox"]
    for lib in shared_libs(elves):
        if lib.name != libpython.name and not (rootfs / str(lib).lstrip("/")).exists():
            _copy_file(lib, rootfs)
    _copy_file(Path("/etc/ssl/certs/ca-certificates.crt"), rootfs, None, 0o644)
    shutil.copytree("/usr/share/zoneinfo", rootfs / "usr/share/zoneinfo", symlinks=True,
                    ignore=lambda d, names: {"right", "posix"} & set(names) if d == "/usr/share/zoneinfo" else set())


@dataclass
class FlowRunImageSpec(ImageSpec):
    """The flow-run image: its inputs are the Containerfile folder, the interpreter, each runtime distribution's
    name, version and RECORD (which holds every installed file's hash), the project's files and how they are
    assembled (hashing the whole 300 MB of site-packages on every check would cost seconds; RECORD says it)."""

    def input_hash(self) -> str:
        h = hashlib.sha256(self.key.encode())
        site_src, base = venv_python()
        for p in sorted(self.source.iterdir()):
            h.update(p.name.encode() + p.read_bytes())
        for p in (base / "bin" / _PY, base / "lib" / "libpython3.11.so.1.0", BUSYBOX):
            h.update(p.name.encode() + hashlib.sha256(p.read_bytes()).digest())
        for dist in runtime_distributions(site_src):
            h.update(f"{dist.metadata['Name']}=={dist.version}".encode())
            if _norm(dist.metadata["Name"]) != "helix-ops":  # its editable RECORD names this checkout's path
                h.update((dist.read_text("RECORD") or "").encode())
        for p in _project_files():
            h.update(str(p.relative_to(REPO)).encode() + p.read_bytes())
        h.update(inspect.getsource(assemble_flow_run).encode() + inspect.getsource(_base).encode())
        return h.hexdigest()[:32]


def specs() -> list[ImageSpec]:
    jdk_bits = [JAVA_HOME / "release", JAVA_HOME / "lib" / "server" / "libjvm.so"]
    probe_src = [p for p in PROBE_DIR.glob("*") if p.suffix in {".go", ".mod", ".sum"} or p.name == "Containerfile"]
    out = [
        ImageSpec("redis", TAGS["redis"], IMAGES_DIR / "redis", [Path("/usr/bin/redis-check-rdb"), BUSYBOX]),
        ImageSpec("neo4j", TAGS["neo4j"], IMAGES_DIR / "neo4j", [NEO4J_LIB, *jdk_bits, BUSYBOX]),
        ImageSpec("nginx", TAGS["nginx"], IMAGES_DIR / "nginx", [Path("/usr/sbin/nginx"), BUSYBOX]),
        ImageSpec("pause", TAGS["pause"], IMAGES_DIR / "pause"),
    ]
    for key in ("probe-v1", "probe-v2", "probe-broken"):
        out.append(ImageSpec(key, TAGS[key], PROBE_DIR, probe_src))
    out.append(FlowRunImageSpec("flow-run", TAGS["flow-run"], IMAGES_DIR / "flow-run", on_demand=True))
    return out


def _assemble(spec: ImageSpec, ctx: Path) -> None:
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)
    if spec.key.startswith("probe"):
        version = spec.tag.rsplit(":", 1)[1]
        build_probe_binary(ctx / "probe", version="v1" if version == "broken" else version,
                           force_unhealthy=version == "broken")
        shutil.copy2(PROBE_DIR / "Containerfile", ctx / "Containerfile")
        return
    shutil.copy2(spec.source / "Containerfile", ctx / "Containerfile")
    rootfs = ctx / "rootfs"
    {"redis": assemble_redis, "neo4j": assemble_neo4j, "nginx": assemble_nginx, "pause": assemble_pause,
     "flow-run": assemble_flow_run}[spec.key](rootfs)
    # ADD of a local tar keeps the owners recorded in it (COPY would make everything root's).
    with tarfile.open(ctx / "rootfs.tar", "w") as tar:
        for entry in sorted(rootfs.iterdir()):
            tar.add(entry, arcname=entry.name)
    shutil.rmtree(rootfs)


def ensure_images(client, only: Iterable[str] | None = None, log=print) -> dict[str, str]:
    """Build every image whose inputs changed (or that is missing); return key -> tag.

    Without ``only``, the on-demand images (the flow-run image) are left out: their tests ask for them by key."""
    import docker

    wanted = set(only) if only else None
    built: dict[str, str] = {}
    for spec in specs():
        if (spec.key not in wanted) if wanted is not None else spec.on_demand:
            continue
        digest = spec.input_hash()
        try:
            current = client.images.get(spec.tag).labels or {}
        except docker.errors.ImageNotFound:
            current = {}
        if current.get(HASH_LABEL) == digest:
            built[spec.key] = spec.tag
            continue
        log(f"building {spec.tag} (inputs {digest[:12]})")
        ctx = home() / "images" / spec.key
        _assemble(spec, ctx)
        client.images.build(path=str(ctx), dockerfile="Containerfile", tag=spec.tag, pull=False, rm=True,
                            forcerm=True, labels={HASH_LABEL: digest})
        shutil.rmtree(ctx, ignore_errors=True)
        client.images.prune(filters={"dangling": True})  # the previous build of this tag
        built[spec.key] = spec.tag
    return built
