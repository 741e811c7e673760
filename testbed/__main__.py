"""``python -m testbed up|down|status|build-images``: the test bed from the command line.

``up`` starts every part (or the ones named) in the background and prints where they listen; the passwords go
only into the run's ``state.json`` (mode 0600). ``down`` stops every run of ``up`` and of the quickstart (its
Prefect server and UI included), and the leftovers of crashed runs, but not the bed of a pytest session that
still runs (``down --all`` stops that too). The quickstart's Helix environment goes whole: every container,
network and volume of the project it recorded, also those a flow started by hand (without the bed's labels)
created. Both are safe to repeat.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from testbed import bed as bedmod
from testbed import procs
from testbed.paths import runs_dir


def _public(state: dict) -> dict:
    """The state without secrets, for printing."""
    hidden = {"password", "secret_key"}
    return {k: ({kk: ("***" if kk in hidden else vv) for kk, vv in v.items()} if isinstance(v, dict) else v)
            for k, v in state.items()}


def cmd_up(args: argparse.Namespace) -> int:
    # The run belongs to no live process once this command exits, so mark it as owned by "up" itself
    # via pid 1 (always alive): only `down` removes it.
    bed = bedmod.Bed.create(owner_pid=1, log=lambda m: print(m, file=sys.stderr))
    try:
        bed.up(tuple(args.parts) or bedmod.PARTS)
    except Exception:
        bed.down()
        raise
    path = bed.write_state()
    print(json.dumps(_public(bed.state()), indent=2))
    print(f"state (with passwords, mode 0600): {path}", file=sys.stderr)
    return 0


def _owned_by_live_session(run) -> int | None:
    """The pid of the live process (a pytest session) that owns ``run``, or None: a run of ``up`` or of the
    quickstart (owner pid 1), or one whose owner is gone."""
    return bedmod.live_owner(run.name)


def _engine_of(run):
    """The run's container engine (from its state.json), started again for the clean-up when it was a Podman
    service that is gone (its containers outlive it); ``(engine, started_here)`` or ``(None, False)``."""
    from testbed.engine import Engine, _answers

    state_file = run / "state.json"
    try:
        engine = json.loads(state_file.read_text()).get("engine")
    except (OSError, ValueError):
        engine = None
    if not engine:
        return None, False
    eng = Engine(run / "engine", kind=engine["kind"], base_url=engine["base_url"])
    if eng.kind == "podman" and not _answers(eng.base_url):
        (run / "engine" / "podman.sock").unlink(missing_ok=True)
        # a short folder of its own: a unix socket's path is limited to 107 bytes
        eng = Engine(Path(tempfile.mkdtemp(prefix="hx-down-")))
        try:
            eng.start()
        except BaseException:
            eng.stop()
            shutil.rmtree(eng.home, ignore_errors=True)
            raise
        return eng, True
    return eng, False


def _says(removed: dict[str, list[str]]) -> str:
    return ", ".join(f"{len(names)} {kind} ({' '.join(sorted(names))})" if names else f"0 {kind}"
                     for kind, names in removed.items())


def remove_run(run, spare_live: bool = True) -> int:
    """Stop everything of one run and delete its folder; returns the server processes stopped.

    In order: the processes other than the container engine (the worker and the Prefect server first, so no flow
    starts another container meanwhile), then every container, network and volume of the Helix projects it
    recorded (:data:`testbed.bed.PROJECTS_FILE`: the quickstart's environment, whoever started them; a live
    pytest session's are spared unless ``spare_live`` is False), then the other containers labelled as the
    run's, then the engine. Says what it removed."""
    from testbed.kube_node import clean_up_run

    clean_up_run(run)  # first: its pods' containers are gone only while containerd still runs
    pidfiles = sorted(run.rglob("*.pid"), key=lambda p: p.stem == "podman")
    stopped = sum(procs.reap_stale(p) for p in pidfiles if p.stem != "podman")
    projects = bedmod.recorded_projects(run)
    try:
        engine, started_here = _engine_of(run)
        if engine is None and projects:
            print(f"could not remove project(s) {', '.join(p['project'] for p in projects)} of {run.name}: no "
                  "container engine recorded (state.json)", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001
        print(f"could not reach the container engine of {run.name} (its containers stay): {exc}", file=sys.stderr)
        engine, started_here = None, False
    if engine is not None:
        try:
            spare = bedmod.owned_by_live_session if spare_live else (lambda labels: False)
            for p in projects:
                removed = engine.remove_project(p["project"], p.get("environment"), spare=spare)
                print(f"removed project {p['project']} (environment {p.get('environment')}) of {run.name}: "
                      f"{_says(removed)}")
            gone = engine.remove_labelled(owner=run.name)
            if gone:
                print(f"removed {gone} other container(s) of test-bed run {run.name}")
        except Exception as exc:  # noqa: BLE001
            print(f"could not remove containers of {run.name}: {exc}", file=sys.stderr)
        finally:
            if started_here:
                engine.stop()
                shutil.rmtree(engine.home, ignore_errors=True)
    for pidfile in pidfiles:
        if pidfile.stem == "podman":
            stopped += procs.reap_stale(pidfile)
    shutil.rmtree(run, ignore_errors=True)
    return stopped


def cmd_down(args: argparse.Namespace) -> int:
    stopped = 0
    for run in sorted(runs_dir().iterdir()):
        owner = None if args.all else _owned_by_live_session(run)
        if owner is not None:  # a running `make test` elsewhere: it stops its own bed when it ends
            print(f"left run {run.name} alone: pytest session {owner} owns it (`down --all` stops it too)")
            continue
        stopped += remove_run(run, spare_live=not args.all)
    print(f"stopped {stopped} server process(es)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    runs = []
    for run in sorted(runs_dir().iterdir()):
        state_file = run / "state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {"run_id": run.name}
        alive = {p.stem: procs.pid_alive(json.loads(p.read_text())["pid"]) for p in run.rglob("*.pid")}
        runs.append({**_public(state), "processes": alive})
    print(json.dumps(runs, indent=2))
    return 0


def cmd_build_kube(args: argparse.Namespace) -> int:
    from testbed.kube import ensure_built

    print(ensure_built(log=lambda m: print(m, file=sys.stderr)))
    return 0


def cmd_build_images(args: argparse.Namespace) -> int:
    bed = bedmod.Bed.create(log=lambda m: print(m, file=sys.stderr))
    try:
        print(json.dumps(bed.images(), indent=2))
    finally:
        bed.down()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the bed (all parts, or those named) in the background")
    up.add_argument("parts", nargs="*", metavar="PART",
                    help=f"any of {', '.join(bedmod.PARTS + bedmod.OPTIONAL_PARTS)} (default: {', '.join(bedmod.PARTS)}; "
                         "kube builds its Go binaries first, once per machine)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop the quickstart and every `up` run (the Prefect server and UI, the "
                          "servers, the containers); the beds of running pytest sessions only with --all")
    down.add_argument("--all", action="store_true", help="also the beds of pytest sessions that still run")
    down.set_defaults(func=cmd_down)
    sub.add_parser("status", help="what runs, where (no passwords)").set_defaults(func=cmd_status)
    sub.add_parser("build-images", help="build the local images (cached by their inputs)").set_defaults(
        func=cmd_build_images)
    sub.add_parser("build-kube", help="build the Kubernetes control plane's binaries (cached per version)"
                   ).set_defaults(func=cmd_build_kube)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
