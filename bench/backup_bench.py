"""Backup benchmark (not a test): prints, side by side, time and peak RSS of

* Neo4j logical backup (export through the storage pipeline) and restore (load into an empty server)
  next to ``neo4j-admin database dump`` / ``load`` of the same database (offline, through the same storage);
* Redis: helix-ops' snapshot (``redis-cli --rdb`` + ``redis-check-rdb`` + zstd + sha256 into storage) next to a
  bare ``redis-cli --rdb`` and BGSAVE with LASTSAVE polling.

Each phase runs in its own spawned process, so its peak RSS is its own (the JVM of neo4j-admin is a child
of that process and is reported separately).

    .venv/bin/python bench/backup_bench.py                     # small: 20k nodes / 40k relationships
    .venv/bin/python bench/backup_bench.py --nodes 1000000 --rels 2000000 --redis-keys 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, kids


def _phase(name, args):  # runs in a spawned process
    import logging

    logging.disable(logging.WARNING)
    from drivers import neo4j_backup as nb
    from drivers import redis_backup as rb
    from drivers.storage import LocalStore
    from helix_ops.backup import Manifest, new_backup_id

    now = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    extra = ""
    if name in ("logical-backup", "dump"):
        store = LocalStore(args["store"])
        bid = new_backup_id("bench", now, rand=os.urandom(3).hex())
        with store.begin(bid) as w:
            with w.object("neo4j", component="neo4j", kind=name) as obj:
                if name == "logical-backup":
                    nb.export_logical(args["uri"], args["user"], args["password"], obj.write)
                else:
                    from testbed.neo4j import Neo4jServer

                    server = Neo4jServer(Path(args["home"]), args["port"], args["password"])
                    extra = f"downtime {nb.dump_offline(nb.HostNeo4j(server, args['work']), obj.write).downtime_s:.1f}s"
            m = w.commit(Manifest(backup_id=bid, environment="bench", project="helix", created_at=now,
                                  finished_at=now, duration_s=0, tool="bench", components=("neo4j",), objects=()))
        extra += f" stored {m.objects[0].size / 2**20:.1f} MiB (raw {m.objects[0].raw_size / 2**20:.1f})"
        result = {"bid": bid}
    elif name in ("logical-restore", "load"):
        store = LocalStore(args["store"])
        entry = store.read_manifest(args["bid"]).objects[0]
        if name == "logical-restore":
            nb.load_logical(args["uri"], args["user"], args["password"], store.open_raw(args["bid"], entry), wipe=True)
        else:
            from testbed.neo4j import Neo4jServer

            server = Neo4jServer(Path(args["home"]), args["port"], args["password"])
            r = nb.load_offline(nb.HostNeo4j(server, args["work"]), store.raw_chunks(args["bid"], entry), entry.raw_size)
            extra = f"downtime {r.downtime_s:.1f}s"
        result = {}
    elif name == "redis-cli --rdb":
        rb.snapshot_rdb("127.0.0.1", args["port"], args["password"], Path(args["tmp"]) / "bare.rdb")
        result = {}
    elif name == "helix redis snapshot":
        store = LocalStore(args["store"])
        bid = new_backup_id("bench", now, rand=os.urandom(3).hex())
        rdb = rb.snapshot_rdb("127.0.0.1", args["port"], args["password"], Path(args["tmp"]) / "snap.rdb")
        extra = rb.check_rdb(rdb)
        with store.begin(bid) as w:
            w.put_file("redis.rdb", "redis", "rdb", rdb)
            w.commit(Manifest(backup_id=bid, environment="bench", project="helix", created_at=now, finished_at=now,
                              duration_s=0, tool="bench", components=("redis",), objects=()))
        result = {}
    elif name == "BGSAVE+LASTSAVE":
        with rb.connect("127.0.0.1", args["port"], args["password"]) as c:
            rb.bgsave(c)
        result = {}
    else:
        raise ValueError(name)
    own, kids = _rss_mib()
    return {**result, "name": name, "seconds": time.monotonic() - t0, "rss": own, "child_rss": kids, "extra": extra}


def run(name, args):
    ctx = mp.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(_phase, (name, args))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=20000)
    p.add_argument("--rels", type=int, default=40000)
    p.add_argument("--redis-keys", type=int, default=200000)
    a = p.parse_args()

    from bench.graphgen import content_digest, generate
    from testbed.bed import Bed

    bed = Bed.create(log=lambda m: print(f"[bed] {m}", file=sys.stderr))
    rows = []
    try:
        tmp = Path(tempfile.mkdtemp(prefix="helix-bench-"))
        src = bed.new_neo4j("bench-src")
        t = time.monotonic()
        generate(src.uri, src.user, src.password, a.nodes, a.rels)
        print(f"generated {a.nodes} nodes / {a.rels} relationships in {time.monotonic() - t:.0f}s", file=sys.stderr)
        want = content_digest(src.uri, src.user, src.password)
        base = {"uri": src.uri, "user": src.user, "password": src.password, "store": str(tmp / "store"),
                "home": str(src.home), "port": src.bolt_port, "work": str(tmp / "work")}
        lb = run("logical-backup", base)
        rows.append(lb)
        dump = run("dump", base)
        rows.append(dump)
        dst = bed.new_neo4j("bench-dst")
        lr = run("logical-restore", {**base, "uri": dst.uri, "password": dst.password, "bid": lb["bid"]})
        rows.append(lr)
        assert content_digest(dst.uri, dst.user, dst.password) == want, "logical restore differs"
        dst.query("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS")
        ld = run("load", {**base, "home": str(dst.home), "port": dst.bolt_port, "password": dst.password,
                          "bid": dump["bid"]})
        rows.append(ld)
        # the dump carries the source's auth? no: auth lives in the system database; content must match
        assert content_digest(dst.uri, dst.user, dst.password) == want, "dump/load differs"
        src.stop()
        dst.stop()

        redis = bed.redis()
        with redis.client() as c:
            pipe = c.pipeline(transaction=False)
            for i in range(a.redis_keys):
                pipe.hset(f"h:{i}", mapping={"a": i, "b": "x" * 40})
                if i % 5000 == 4999:
                    pipe.execute()
            pipe.execute()
        rbase = {"port": redis.port, "password": redis.password, "tmp": str(tmp), "store": str(tmp / "rstore")}
        for name in ("redis-cli --rdb", "helix redis snapshot", "BGSAVE+LASTSAVE"):
            rows.append(run(name, rbase))
    finally:
        bed.down()

    by = {r["name"]: r for r in rows}
    print(f"\nNeo4j: {a.nodes} nodes, {a.rels} relationships (all property types)")
    print(f"{'':18}{'logical':>24}{'neo4j-admin':>24}{'ratio':>8}")
    for what, left, right in (("backup", "logical-backup", "dump"), ("restore", "logical-restore", "load")):
        lt, rt = by[left]["seconds"], by[right]["seconds"]
        print(f"{what + ' time':18}{lt:>23.1f}s{rt:>23.1f}s{lt / rt:>8.2f}")
        print(f"{what + ' peak RSS':18}{by[left]['rss']:>20.0f} MiB{by[right]['child_rss']:>16.0f} MiB (JVM)")
    for r in (by["dump"], by["load"], by["logical-backup"]):
        if r["extra"]:
            print(f"  {r['name']}: {r['extra'].strip()}")
    print(f"\nRedis: {a.redis_keys} hashes")
    bare = by["redis-cli --rdb"]["seconds"]
    for name in ("redis-cli --rdb", "helix redis snapshot", "BGSAVE+LASTSAVE"):
        r = by[name]
        print(f"{name:24}{r['seconds']:>8.2f}s  x{r['seconds'] / bare:.2f}  peak RSS {r['rss']:.0f} MiB {r['extra']}")


if __name__ == "__main__":
    main()
