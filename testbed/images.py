"""Container images for the test bed, built offline from files on this machine and tagged under ``localhost/``.

Each image is a ``FROM scratch`` build whose root filesystem (``rootfs.tar``) is assembled here: host binaries, the shared
libraries ``ldd`` says they link, busybox for a shell, and the image's own files from ``testbed/images/<name>``.
The build goes through the Docker Engine API, so the same code drives Docker and Podman. An image is rebuilt
only when the hash of its inputs (recorded as a label) changes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from testbed import procs
from testbed.paths import IMAGES_DIR, NEO4J_LIB, PROBE_DIR, home

HASH_LABEL = "dev.helix-ops.testbed.inputs"
JAVA_HOME = Path("/usr/lib/jvm/java-17-openjdk-amd64")
BUSYBOX = Path("/bin/busybox")
TAGS = {
    "redis": "localhost/helix-redis:7",
    "neo4j": "localhost/helix-neo4j:5.26",
    "nginx": "localhost/helix-nginx:1",
    "probe-v1": "localhost/helix-probe:v1",
    "probe-v2": "localhost/helix-probe:v2",
    "probe-broken": "localhost/helix-probe:broken",
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


def specs() -> list[ImageSpec]:
    jdk_bits = [JAVA_HOME / "release", JAVA_HOME / "lib" / "server" / "libjvm.so"]
    probe_src = [p for p in PROBE_DIR.glob("*") if p.suffix in {".go", ".mod", ".sum"} or p.name == "Containerfile"]
    out = [
        ImageSpec("redis", TAGS["redis"], IMAGES_DIR / "redis", [Path("/usr/bin/redis-check-rdb"), BUSYBOX]),
        ImageSpec("neo4j", TAGS["neo4j"], IMAGES_DIR / "neo4j", [NEO4J_LIB, *jdk_bits, BUSYBOX]),
        ImageSpec("nginx", TAGS["nginx"], IMAGES_DIR / "nginx", [Path("/usr/sbin/nginx"), BUSYBOX]),
    ]
    for key in ("probe-v1", "probe-v2", "probe-broken"):
        out.append(ImageSpec(key, TAGS[key], PROBE_DIR, probe_src))
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
    {"redis": assemble_redis, "neo4j": assemble_neo4j, "nginx": assemble_nginx}[spec.key](rootfs)
    # ADD of a local tar keeps the owners recorded in it (COPY would make everything root's).
    with tarfile.open(ctx / "rootfs.tar", "w") as tar:
        for entry in sorted(rootfs.iterdir()):
            tar.add(entry, arcname=entry.name)
    shutil.rmtree(rootfs)


def ensure_images(client, only: Iterable[str] | None = None, log=print) -> dict[str, str]:
    """Build every image whose inputs changed (or that is missing); return key -> tag."""
    import docker

    wanted = set(only) if only else None
    built: dict[str, str] = {}
    for spec in specs():
        if wanted is not None and spec.key not in wanted:
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
