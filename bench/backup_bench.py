"""Backup benchmark (not a test): prints, side by side, time and peak RSS of

* Neo4j logical backup (export through the storage pipeline) and restore, next to ``neo4j-admin database dump``
  / ``load`` of the same database (offline, through the same storage). The logical restore is timed both ways:
  through ``neo4j-admin database import`` (restore-helix's default: the export converted to CSV in a spawned
  process and its two conversion workers, then in this one the import into a staging store with Neo4j
  serving and the window: stop, swap, start, counts; then the schema) and, up to 200k nodes or with
  ``--transactional``, the batched Cypher load into a running server;
* Redis: helix-ops' snapshot (``redis-cli --rdb -`` streamed into zstd + sha256 + storage and ``redis-check-rdb``) next to a
  bare ``redis-cli --rdb`` and BGSAVE with LASTSAVE polling.

The logical phases and the Redis phases run in their own spawned processes; their peak RSS is their VmHWM (not
ru_maxrss, which counts a vfork-spawned process's parent too), and their worker processes' VmHWM is sampled from /proc.
The physical phases (``neo4j-admin database dump`` / ``load``) run in this process against the test bed's own
Neo4j server objects (a spawned process cannot stop a server its parent started); their figure is the peak RSS
(VmHWM) of the ``neo4j-admin`` JVM, sampled from /proc while it runs, and their time includes stopping and
starting Neo4j (the downtime is printed separately).

Both Neo4j servers run with the guide's production memory (``--heap 2g --pagecache 2g``): the test bed's own
default (512m, 128m) keeps a 1M graph's store out of the page cache and roughly doubles the export's time.

    .venv/bin/python bench/backup_bench.py                     # small: 20k nodes / 40k relationships
    .venv/bin/python bench/backup_bench.py --nodes 1000000 --rels 2000000 --redis-keys 1000000
    .venv/bin/python bench/backup_bench.py --sizes 10000,100000,1000000 --plot docs/bench-scale.png  # the curve
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _own_peak_mib() -> float:
    """This process's VmHWM. Not ``ru_maxrss``: Linux carries the pre-exec image's high-water mark into it, and
    a process started by vfork + exec (subprocess, multiprocessing's spawn) counts its parent's peak too."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def _phase(name, args):  # runs in a spawned process
    import logging

    logging.disable(logging.WARNING)
    from drivers import neo4j_export as ne
    from drivers import neo4j_load as nl
    from drivers import redis_backup as rb
    from drivers.storage import LocalStore
    from helix_ops.backup import Manifest, new_backup_id

    now = dt.datetime.now(dt.UTC)
    workers = ProcPeak(b"drivers.neo4j_", interval_s=0.2)  # the export's / conversion's worker processes
    workers.start()
    t0 = time.monotonic()
    extra = ""
    if name == "logical-backup":
        store = LocalStore(args["store"])
        bid = new_backup_id("bench", now, rand=os.urandom(3).hex())
        with store.begin(bid) as w:
            with w.object("neo4j", component="neo4j", kind=name) as obj:
                ne.export_logical(args["uri"], args["user"], args["password"], obj.write)
            m = w.commit(Manifest(backup_id=bid, environment="bench", project="helix", created_at=now,
                                  finished_at=now, duration_s=0, tool="bench", components=("neo4j",), objects=()))
        extra = f"stored {m.objects[0].size / 2**20:.1f} MiB (raw {m.objects[0].raw_size / 2**20:.1f})"
        result = {"bid": bid}
    elif name == "logical-restore":
        store = LocalStore(args["store"])
        entry = store.read_manifest(args["bid"]).objects[0]
        nl.load_logical(args["uri"], args["user"], args["password"], store.open_raw(args["bid"], entry), wipe=True)
        result = {}
    elif name == "logical-convert":  # the importer restore's first half: the export as CSV (Neo4j untouched)
        from drivers import neo4j_csv as nc

        store = LocalStore(args["store"])
        entry = store.read_manifest(args["bid"]).objects[0]
        csvs = nc.to_csv_parallel(store.open_raw(args["bid"], entry), Path(args["work"]) / "csv", nc.CONVERT_WORKERS)
        extra = f"{csvs.bytes / 2**20:.1f} MiB of CSV in {len(csvs.nodes) + len(csvs.relationships)} files"
        result = {"csvs": csvs}
    elif name == "redis-cli --rdb":
        rb.snapshot_rdb("127.0.0.1", args["port"], args["password"], Path(args["tmp"]) / "bare.rdb")
        result = {}
    elif name == "helix redis snapshot":
        store = LocalStore(args["store"])
        bid = new_backup_id("bench", now, rand=os.urandom(3).hex())
        with store.begin(bid) as w:
            with w.object("redis.rdb", "redis", "rdb") as obj:
                extra = rb.stream_rdb("127.0.0.1", args["port"], args["password"], obj.write)
            w.commit(Manifest(backup_id=bid, environment="bench", project="helix", created_at=now, finished_at=now,
                              duration_s=0, tool="bench", components=("redis",), objects=()))
        result = {}
    elif name == "BGSAVE+LASTSAVE":
        with rb.connect("127.0.0.1", args["port"], args["password"]) as c:
            rb.bgsave(c)
        result = {}
    else:
        raise ValueError(name)
    seconds = time.monotonic() - t0
    workers.stop()
    own, kids = _own_peak_mib(), workers.peak_mib
    if name in ("logical-backup", "logical-convert"):  # their worker processes: counted in, each at the largest's
        from drivers import neo4j_csv as nc

        role, kind, n = (("writing", "export", ne.EXPORT_WORKERS) if name == "logical-backup"
                         else ("reading", "conversion", nc.CONVERT_WORKERS))
        extra += f"; peak RSS {own:.0f} MiB ({role}) + {n} {kind} workers x {kids:.0f} MiB (the largest's peak)"
        own += n * kids
    return {**result, "name": name, "seconds": seconds, "rss": own, "child_rss": kids, "extra": extra}


def run(name, args):
    ctx = mp.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        return shown(pool.apply(_phase, (name, args)))


def shown(row: dict) -> dict:
    """Print a phase's figures as soon as it ends (stderr), so a later failure loses nothing measured."""
    print(f"[phase] {row['name']}: {row['seconds']:.1f}s, RSS {row['rss']:.0f} MiB, children {row['child_rss']:.0f} "
          f"MiB {row['extra']}", file=sys.stderr, flush=True)
    return row


class ProcPeak:
    """Samples this process's descendants every ``interval_s``; ``peak_mib`` is the highest VmHWM (the kernel's own
    peak RSS of a process since its exec, kept until it exits) seen in any one whose command line holds
    ``marker``. Only this process's descendants are read (not all of /proc: that scan cost the measured phase
    CPU). A peak in a process's last interval can be missed."""

    def __init__(self, marker: bytes, interval_s: float = 0.2) -> None:
        import threading

        self.marker = marker
        self.interval_s = interval_s
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "ProcPeak":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024

    @staticmethod
    def _descendants() -> set[int]:
        """This process's children, theirs, and so on (a launcher JVM may start the working one)."""
        from testbed.procs import children

        found: set[int] = set()
        todo = [os.getpid()]
        while todo:
            kids = children(todo.pop()) - found
            found |= kids
            todo += kids
        return found

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in self._descendants():
                try:  # the command line read each time: a child caught between fork and exec shows its parent's
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if self.marker not in f.read():
                            continue
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                except OSError:
                    continue
            self._stop.wait(self.interval_s)


def physical(name: str, server, store_root: Path, work: Path, bid: str | None = None) -> dict:
    """``dump`` / ``load`` in this process, through the storage pipeline, against the bed's ``server``."""
    from drivers import neo4j_offline as no
    from drivers.storage import LocalStore
    from helix_ops.backup import Manifest, new_backup_id
    from testbed.neo4j import HostNeo4j

    store = LocalStore(store_root)
    now = dt.datetime.now(dt.UTC)
    host = HostNeo4j(server, work)
    admin_s = [0.0]
    run_admin = host._admin

    def timed_admin(argv):  # the neo4j-admin JVM alone, without stopping and starting Neo4j
        t = time.monotonic()
        try:
            return run_admin(argv)
        finally:
            admin_s[0] += time.monotonic() - t

    host._admin = timed_admin
    t0 = time.monotonic()
    with ProcPeak(b"Neo4jAdminBoot") as peak:  # neo4j-admin's JVM
        if name == "dump":
            bid = new_backup_id("bench", now, rand=os.urandom(3).hex())
            with store.begin(bid) as w:
                with w.object("neo4j", component="neo4j", kind="dump") as obj:
                    r = no.dump_offline(host, obj.write)
                m = w.commit(Manifest(backup_id=bid, environment="bench", project="helix", created_at=now,
                                      finished_at=now, duration_s=0, tool="bench", components=("neo4j",),
                                      objects=()))
            extra = (f"downtime {r.downtime_s:.1f}s, neo4j-admin alone {admin_s[0]:.1f}s, "
                     f"stored {m.objects[0].size / 2**20:.1f} MiB "
                     f"(raw {m.objects[0].raw_size / 2**20:.1f})")
        else:
            entry = store.read_manifest(bid).objects[0]
            r = no.load_offline(host, store.raw_chunks(bid, entry), entry.raw_size)
            extra = f"downtime {r.downtime_s:.1f}s, neo4j-admin alone {admin_s[0]:.1f}s"
    return shown({"bid": bid, "name": name, "seconds": time.monotonic() - t0, "rss": float("nan"),
                  "child_rss": peak.peak_mib, "extra": extra, "admin_s": admin_s[0], "downtime_s": r.downtime_s})


def import_window(csvs, server, work: Path) -> dict:
    """The importer restore's second half, in this process (it stops and starts the bed's ``server``):
    ``neo4j-admin database import full`` into a staging store with Neo4j serving, then stop, swap, start, counts,
    schema."""
    from drivers import neo4j_import as ni
    from testbed.neo4j import HostNeo4j

    t0 = time.monotonic()
    host = HostNeo4j(server, work)
    with ProcPeak(b"Neo4jAdminBoot") as peak:  # neo4j-admin's JVM
        r = ni.import_csv_set(host, csvs, server.uri, server.user, server.password)
    return shown({"name": "import window", "seconds": time.monotonic() - t0, "rss": float("nan"),
                  "child_rss": peak.peak_mib, "import_s": r.import_s, "downtime_s": r.physical.downtime_s,
                  "extra": f"import {r.import_s:.1f}s (Neo4j serving), downtime {r.physical.downtime_s:.1f}s "
                           f"(stop, swap, start, counts), schema {r.schema_s:.1f}s"})


def neo4j_phases(bed, a, nodes: int, rels: int, tmp: Path, servers: list, transactional: bool, check: str) -> list:
    """The Neo4j rows at one size: generate, restart (checkpoint), logical backup cold and warm, dump, (Cypher
    restore), conversion + import window, load; each restore compared with the source (``check``)."""
    from bench.graphgen import content_digest, generate
    from drivers.neo4j_load import graph_counts

    def fingerprint(server):
        if check == "digest":
            return content_digest(server.uri, server.user, server.password)
        return graph_counts(server.uri, server.user, server.password)

    rows = []
    src = bed.new_neo4j(f"bench-src-{nodes}", heap=a.heap, pagecache=a.pagecache)
    servers.append(src)
    t = time.monotonic()
    generate(src.uri, src.user, src.password, nodes, rels, batch=2000)
    print(f"generated {nodes} nodes / {rels} relationships in {time.monotonic() - t:.0f}s", file=sys.stderr)
    # both backups start from a settled store, with no checkpoint of the generation running under either:
    # Community has no db.checkpoint(), a stop checkpoints
    t = time.monotonic()
    src.stop()
    src.start()
    print(f"restarted (checkpoint) in {time.monotonic() - t:.0f}s", file=sys.stderr)
    want = fingerprint(src)
    base = {"uri": src.uri, "user": src.user, "password": src.password, "store": str(tmp / "store"),
            "home": str(src.home), "port": src.bolt_port, "work": str(tmp / "work")}
    # twice: right after the restart Neo4j's page cache is cold (Community has no warm-up), then warm, as on
    # a server that has been up (the store, 1.3 GiB at 1M, fits the guide's 2G page cache)
    rows.append({**run("logical-backup", base), "name": "logical-backup-cold"})
    lb = run("logical-backup", base)
    rows.append(lb)
    dump = physical("dump", src, tmp / "store", tmp / "work")
    rows.append(dump)
    dst = bed.new_neo4j(f"bench-dst-{nodes}", heap=a.heap, pagecache=a.pagecache)
    servers.append(dst)
    if transactional:
        lr = run("logical-restore", {**base, "uri": dst.uri, "password": dst.password, "bid": lb["bid"]})
        rows.append(lr)
        t = time.monotonic()
        assert fingerprint(dst) == want, "logical restore differs"
        print(f"logical restore {check} equal ({time.monotonic() - t:.0f}s to compare)", file=sys.stderr)
    conv = run("logical-convert", {**base, "bid": lb["bid"]})
    win = import_window(conv["csvs"], dst, tmp / "work")
    rows += [conv, win, {"name": "logical-import", "seconds": conv["seconds"] + win["seconds"],
                         "rss": conv["rss"], "child_rss": win["child_rss"], "extra": ""}]
    t = time.monotonic()
    assert fingerprint(dst) == want, "logical import differs"
    print(f"logical import {check} equal ({time.monotonic() - t:.0f}s to compare)", file=sys.stderr)
    ld = physical("load", dst, tmp / "store", tmp / "work", bid=dump["bid"])  # overwrites dst's database
    rows.append(ld)
    # the users live in the system database, which a dump of `neo4j` does not touch: dst's password stays
    assert fingerprint(dst) == want, "dump/load differs"
    return rows


def redis_phases(bed, keys: int, tmp: Path) -> list:
    """The Redis rows: ``keys`` hashes, then a bare ``redis-cli --rdb``, helix-ops' snapshot, BGSAVE."""
    redis = bed.redis()
    with redis.client() as c:
        pipe = c.pipeline(transaction=False)
        for i in range(keys):
            pipe.hset(f"h:{i}", mapping={"a": i, "b": "x" * 40})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
    rbase = {"port": redis.port, "password": redis.password, "tmp": str(tmp), "store": str(tmp / "rstore")}
    return [run(name, rbase) for name in ("redis-cli --rdb", "helix redis snapshot", "BGSAVE+LASTSAVE")]


def scale_report(curve: list, plot: Path, a) -> None:
    """The scale curve: one table line per size, and a PNG with time and peak RSS against nodes (log-log),
    drawn by bench/plot_scale.py from the figures it writes beside the PNG (.json)."""
    series = {"logical backup": ("logical-backup", "rss"), "neo4j-admin dump": ("dump", "child_rss"),
              "restore (convert + import + swap)": ("logical-import", "rss"), "neo4j-admin load": ("load", "child_rss")}
    print(f"\nScale curve: Neo4j 5.26 Community, 2 relationships per node, every property type; heap {a.heap}, "
          f"page cache {a.pagecache}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'nodes':>9}" + "".join(f"{name:>36}" for name in series))
    print(f"{'':>9}" + "".join(f"{'time s':>18}{'peak RSS MiB':>18}" for _ in series))
    for n, rows in curve:
        by = {r["name"]: r for r in rows}
        print(f"{n:>9}" + "".join(f"{by[k]['seconds']:>18.1f}{by[k][m]:>18.0f}" for k, m in series.values()))
    print(f"\n{'nodes':>9}{'backup / dump':>16}{'outage s':>10}{'load s':>8}{'outage / load':>15}"
          f"{'restore / floor':>17}   (outage: stop, swap, start, counts; load: neo4j-admin load with the stop "
          "and start it needs too; floor: the importer's own time + the swap)")
    for n, rows in curve:
        by = {r["name"]: r for r in rows}
        win, load = by["import window"], by["load"]
        floor = win["import_s"] + win["downtime_s"]
        print(f"{n:>9}{by['logical-backup']['seconds'] / by['dump']['seconds']:>16.2f}{win['downtime_s']:>10.1f}"
              f"{load['seconds']:>8.1f}{win['downtime_s'] / load['seconds']:>15.2f}"
              f"{by['logical-import']['seconds'] / floor:>17.2f}")
    data = {"title": "helix-ops backup and restore against neo4j-admin, by graph size",
            "nodes": [n for n, _ in curve], "series": {}}
    for name, (key, mem) in series.items():
        by_n = [{r["name"]: r for r in rows}[key] for _, rows in curve]
        data["series"][name] = {"seconds": [r["seconds"] for r in by_n], "rss_mib": [r[mem] for r in by_n]}
    table = plot.with_suffix(".json")
    table.write_text(json.dumps(data, indent=1))
    # matplotlib in an environment of its own: see bench/plot_scale.py
    subprocess.run(["python3", "-m", "uv", "run", "-q", "--no-project", "--with", "matplotlib>=3.8", "python",
                    str(Path(__file__).with_name("plot_scale.py")), str(table), str(plot)], check=True)
    print(f"plot: {plot}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=20000)
    p.add_argument("--rels", type=int, default=40000)
    p.add_argument("--redis-keys", type=int, default=200000)
    p.add_argument("--check", choices=("digest", "counts"), default=None,
                   help="how restores are compared with the source: the content digest (every value; ~1 s per "
                        "1000 nodes) or counts by label and type (default: digest up to 200k nodes, else counts; "
                        "content equality at size is the round-trip test's job)")
    p.add_argument("--transactional", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the transactional logical restore (batched Cypher; default: up to 200k nodes; "
                        "it took 562 s at 200k, so hours at 1M)")
    p.add_argument("--heap", default="2g",
                   help="heap of both Neo4j servers (default: the guide's production figure, 2G; a logical restore "
                        "rebuilds every index, and the text index over 1M nodes ran a 96m heap out of memory)")
    p.add_argument("--pagecache", default="2g",
                   help="page cache of both Neo4j servers (default: the guide's production figure, 2G; with the "
                        "bed's 128m the 1M graph's store does not fit and the export took twice as long)")
    p.add_argument("--sizes", default="",
                   help="the scale curve instead (issue 23 goal 6): comma-separated node counts (2 relationships per "
                        "node), e.g. 10000,100000,1000000; backup, dump, import restore and load at each, as a table "
                        "and a PNG (--plot)")
    p.add_argument("--plot", default="bench-scale.png",
                   help="where --sizes writes its plot (bench/plot_scale.py draws it with matplotlib, in an "
                        "environment of its own) and, beside it (.json), the figures")
    a = p.parse_args()
    try:
        sizes = [int(x) for x in a.sizes.split(",") if x.strip()]
    except ValueError:
        p.error(f"--sizes: {a.sizes!r} is not a comma-separated list of node counts")
    curve: list = []
    transactional = a.transactional if a.transactional is not None else a.nodes <= 200_000
    check = a.check or ("digest" if a.nodes <= 200_000 else "counts")

    from testbed.bed import Bed

    bed = Bed.create(log=lambda m: print(f"[bed] {m}", file=sys.stderr))
    rows = []
    servers = []  # stopped early (before the Redis phases) to free their memory; Bed.down() stops them too
    try:
        tmp = Path(tempfile.mkdtemp(prefix="helix-bench-"))
        for n in sizes:  # the scale curve
            curve.append((n, neo4j_phases(bed, a, n, 2 * n, tmp / str(n), servers, False, "counts")))
            for server in servers:  # free their memory for the next size
                server.stop()
            servers.clear()
        if not sizes:
            rows += neo4j_phases(bed, a, a.nodes, a.rels, tmp, servers, transactional, check)
            for server in servers:
                server.stop()
            rows += redis_phases(bed, a.redis_keys, tmp)
    finally:
        for server in servers:
            server.stop()
        bed.down()
    if sizes:
        scale_report(curve, Path(a.plot), a)
        return

    by = {r["name"]: r for r in rows}
    print(f"\nNeo4j 5.26 Community: {a.nodes} nodes, {a.rels} relationships (all property types; restores "
          f"compared by {check}; servers with heap {a.heap}, page cache {a.pagecache}); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'':22}{'logical':>24}{'neo4j-admin':>24}{'ratio':>8}")
    pairs = [("backup", "logical-backup", "dump"), ("backup, cold cache", "logical-backup-cold", "dump"),
             ("restore (import)", "logical-import", "load")]
    if "logical-restore" in by:
        pairs.append(("restore (Cypher)", "logical-restore", "load"))
    for what, left, right in pairs:
        lt, rt = by[left]["seconds"], by[right]["seconds"]
        print(f"{what + ' time':30}{lt:>15.1f}s{rt:>23.1f}s{lt / rt:>8.2f}")
        print(f"{what + ' peak RSS':30}{by[left]['rss']:>12.0f} MiB{by[right]['child_rss']:>14.0f} MiB (JVM)")
    print(f"  logical-import: neo4j-admin import JVM peak {by['logical-import']['child_rss']:.0f} MiB "
          "(the helix-ops process: the RSS above)")
    for r in (by["dump"], by["load"], by["logical-backup"], by["logical-convert"], by["import window"]):
        if r["extra"]:
            print(f"  {r['name']}: {r['extra'].strip()}")
    win, load, restore = by["import window"], by["load"], by["logical-import"]
    floor = win["import_s"] + win["downtime_s"]
    print(f"restore, Neo4j outage (stop, swap, start, counts){win['downtime_s']:>11.1f}s   neo4j-admin load "
          f"{load['admin_s']:.1f}s alone, {load['seconds']:.1f}s with stop/start   ratio "
          f"{win['downtime_s'] / load['seconds']:.2f} (goal <= 1.0; a load too needs Neo4j stopped and started)")
    print(f"restore, total {restore['seconds']:.1f}s   floor (importer {win['import_s']:.1f}s + swap "
          f"{win['downtime_s']:.1f}s) {floor:.1f}s   ratio {restore['seconds'] / floor:.2f} (goal <= 1.15); "
          f"the rest: conversion {by['logical-convert']['seconds']:.1f}s, schema and counts")
    print(f"\nRedis: {a.redis_keys} hashes")
    bare = by["redis-cli --rdb"]["seconds"]
    for name in ("redis-cli --rdb", "helix redis snapshot", "BGSAVE+LASTSAVE"):
        r = by[name]
        print(f"{name:24}{r['seconds']:>8.2f}s  x{r['seconds'] / bare:.2f}  peak RSS {r['rss']:.0f} MiB {r['extra']}")


if __name__ == "__main__":
    main()
