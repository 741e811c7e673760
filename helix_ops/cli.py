"""``helix-ops``: validate a descriptor, render it, plan changes.

The CLI is the edge: it reads files and ``os.environ``; everything below it is pure. Exit codes: 0 success,
2 invalid input (one line on stderr naming the path, no traceback), 1 an internal failure.

    helix-ops validate --env prod
    helix-ops render --env prod --target kubernetes --out build/prod
    helix-ops plan --env local --state current.json
    helix-ops schedules --check        # prefect.yaml's generated schedules agree with the descriptors

Over the live environment (its target through ``drivers/target.py``, its backup store, the Prefect API;
``--json`` on each for scripts, tables for people):

    helix-ops status --env prod          # services, images, replicas, health, last backup, rotation, approvals
    helix-ops diff --env prod            # deploy's plan against the live state: exit 0 none, 2 changes, 1 error
    helix-ops history --env prod         # the change records kept in the backup store, newest first
    helix-ops backups list --env prod    # the backups (manifests), newest first; `backups show ID`
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from helix_ops.descriptor import Descriptor, descriptor_path, load_descriptor
from helix_ops.errors import ConfigError, HelixOpsError, PlanError, RenderError
from helix_ops.stack import Stack, build_stack

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError("arguments", message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``--help`` on the tool and on each command)."""
    parser = _Parser(prog="helix-ops", description="Deploy and operate Helix: validate, render, plan.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        which = sub.add_mutually_exclusive_group(required=True)
        which.add_argument("--env", metavar="NAME", help="environment: reads deployments/NAME.yaml in the cwd")
        which.add_argument("--descriptor", metavar="PATH", help="path of an environment descriptor")
        return sub

    validate = command("validate", "Validate a descriptor, its rules and its rendering.")
    validate.add_argument(
        "--helix-config", metavar="PATH",
        help="also interpolate and validate this helix.config.yaml with the current environment variables",
    )
    render = command("render", "Render the stack to Compose or Kubernetes files.")
    render.add_argument("--target", choices=("compose", "kubernetes"), help="default: the descriptor's target")
    render.add_argument("--out", metavar="DIR", required=True, help="directory to write into (created)")
    render.add_argument("--secrets-from-env", action="store_true",
                        help="fill the Kubernetes Secret from NEO4J_PASSWORD etc. (default: an empty template)")
    plan = command("plan", "Plan the changes from the current state to the rendering.")
    plan.add_argument("--target", choices=("compose", "kubernetes"), help="default: the descriptor's target")
    plan.add_argument("--state", metavar="FILE", help="current state as JSON (default: nothing exists)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    schedules_help = ("Check or write prefect.yaml's generated schedules (backup-helix, rotate-helix-secrets) "
                      "from the descriptors deployments/<env>.yaml of every environment prefect.yaml names.")
    schedules = commands.add_parser("schedules", help=schedules_help, description=schedules_help)
    mode = schedules.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 naming each deployment that disagrees")
    mode.add_argument("--write", action="store_true", help="rewrite the generated blocks (nothing else)")
    schedules.add_argument("--prefect-file", metavar="PATH", default="prefect.yaml",
                           help="default: prefect.yaml in the cwd (descriptors: deployments/ next to it)")
    for verb, what in (("approve", "Approve"), ("reject", "Reject")):
        text = (f"{what} a change waiting for an approval (the run's Resume form in the Prefect UI does the same). "
                "The Prefect API is PREFECT_API_URL's.")
        answer = commands.add_parser(verb, help=text, description=text)
        answer.add_argument("run_id", metavar="RUN_ID", help="the waiting flow run's id")
        answer.add_argument("--reason", required=True, help="why (recorded with the change)")
        answer.add_argument("--approver", help="who decides (recorded); default: the local user name")
        if verb == "approve":
            answer.add_argument("--confirm-backup-id", metavar="ID",
                                help="a restore's approval: the backup id typed back")
    _live_commands(commands)
    return parser


DIFF_HELP = """\
Exit codes (as `terraform plan -detailed-exitcode`): 0 the live state is what the descriptor renders (no change),
2 deploy-helix would change something (the changes are printed), 1 an error, INVALID INPUT INCLUDED (a bad
descriptor or argument is exit 1 here, not the exit 2 of the other commands, so 2 always means "changes")."""


def _live_commands(commands: Any) -> None:
    """``status``, ``diff``, ``history`` and ``backups list|show``: over the live environment."""
    def with_env(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        which = sub.add_mutually_exclusive_group(required=True)
        which.add_argument("--env", metavar="NAME", help="environment: reads deployments/NAME.yaml in the cwd")
        which.add_argument("--descriptor", metavar="PATH", help="path of an environment descriptor")
        sub.add_argument("--json", action="store_true", help="print JSON for scripts (default: tables)")
        return sub

    def with_target(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--engine-url", metavar="URL",
                         help="target engine: the Docker Engine API (default: DOCKER_HOST or the local socket)")
        sub.add_argument("--kubeconfig", metavar="FILE", help="target kubernetes: the kubeconfig (default: "
                                                              "$KUBECONFIG, ~/.kube/config)")
        sub.add_argument("--kube-context", metavar="NAME", help="target kubernetes: the kubeconfig's context")
        return sub

    def with_store(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--storage-path", metavar="DIR", help="a local backup folder instead of the descriptor's "
                                                                "backup.storage (as the backup flows' storage_path)")
        return sub

    text = ("Show the live environment: services, images, replicas and health (as deploy-helix's status step "
            "reads them), the last backup and its verification, the last credential rotation, and runs waiting "
            "for an approval (when the Prefect API answers). Exit 0 when every service is healthy, 1 when one is "
            "not or the environment cannot be read, 2 invalid input. Secrets (health probes, S3, rotation) come "
            "from the Prefect blocks of PREFECT_API_URL.")
    with_store(with_target(with_env(commands.add_parser("status", help=text.split(":")[0] + ".",
                                                        description=text))))
    text = "Plan deploy-helix against the live state (nothing changes)."
    with_target(with_env(commands.add_parser("diff", help=text, description=text + " " + DIFF_HELP,
                                             formatter_class=argparse.RawDescriptionHelpFormatter)))
    text = ("List the environment's change records (deploy, upgrade, scale, rollback, restore, rotation, pruning, "
            "refusals), newest first, from its backup store (changes/<env>/), where every change's record is kept.")
    history = with_store(with_env(commands.add_parser("history", help="List the change history, newest first.",
                                                      description=text)))
    history.add_argument("--limit", type=int, default=20, metavar="N", help="the newest N records (default 20; "
                                                                             "0: all)")
    text = "The environment's backups (their manifests in the backup store): list, or show one."
    backups = commands.add_parser("backups", help="List the backups, or show one.", description=text)
    verbs = backups.add_subparsers(dest="backups_command", required=True, parser_class=_Parser)
    with_store(with_env(verbs.add_parser("list", help="every complete backup, newest first",
                                         description="Every complete backup (one with a manifest), newest first.")))
    show = with_store(with_env(verbs.add_parser("show", help="one backup's manifest",
                                                description="One backup's manifest: objects, counts, verification.")))
    show.add_argument("backup_id", metavar="ID", help="the backup id (backups list shows them)")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI; returns the exit code. ``environ`` defaults to ``os.environ`` (the only place it does)."""
    env = os.environ if environ is None else environ
    # diff's exit 2 means "changes" (as terraform plan -detailed-exitcode): its invalid input is exit 1
    invalid = EXIT_FAILED if _command_of(sys.argv[1:] if argv is None else argv) == "diff" else EXIT_INVALID
    try:
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args, env)
    except ConfigError as exc:
        return _fail(exc.one_line(), invalid)
    except PlanError as exc:
        return _fail(f"plan: {exc}", invalid)
    except RenderError as exc:
        return _fail(f"rendering failed its schema: {exc}", EXIT_FAILED)
    except HelixOpsError as exc:
        return _fail(str(exc), EXIT_FAILED)


def _command_of(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _fail(message: str, code: int) -> int:
    print(f"helix-ops: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _descriptor_file(args: argparse.Namespace) -> Path:
    return Path(args.descriptor) if args.descriptor else descriptor_path(args.env)


def _load_stack(args: argparse.Namespace) -> Stack:
    path = _descriptor_file(args)
    descriptor = load_descriptor(path)
    return build_stack(descriptor, _helix_config_text(descriptor, path))


def _helix_config_text(descriptor: Descriptor, path: Path) -> str | None:
    if not descriptor.helix_config:
        return None
    from helix_ops.config import read_helix_config_text

    config = path.parent / descriptor.helix_config
    try:
        return read_helix_config_text(config)  # bounded, UTF-8 checked
    except ConfigError as exc:
        raise ConfigError("helix_config", f"{exc.message} ({config})", str(path)) from None


def _target(args: argparse.Namespace, stack: Stack) -> str:
    if getattr(args, "target", None):
        return args.target
    return "kubernetes" if stack.descriptor.target == "kubernetes" else "compose"


def _render(stack: Stack, target: str, secret_values: Mapping[str, str] | None = None) -> Any:
    """Render and validate against the target's schema."""
    if target == "compose":
        from helix_ops.render.compose import render_compose, validate_compose

        doc = render_compose(stack)
        validate_compose(doc)
        return doc
    from helix_ops.render.kubernetes import render_kubernetes, validate_kubernetes

    objects = render_kubernetes(stack, secret_values)
    validate_kubernetes(objects, stack.descriptor.kubernetes.version)
    return objects


def cmd_validate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``helix-ops validate``."""
    stack = _load_stack(args)
    target = _target(args, stack)
    _render(stack, target)
    if args.helix_config:
        from helix_ops.config import load_helix_config

        load_helix_config(Path(args.helix_config), env)  # bounded read; invalid UTF-8 is a ConfigError
    print(f"ok: {stack.environment} ({target}), {len(stack.services)} services valid")
    return EXIT_OK


def cmd_render(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``helix-ops render``: writes files into --out."""
    from helix_ops.stack import SECRET_ENV

    stack = _load_stack(args)
    target = _target(args, stack)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if target == "compose":
        from helix_ops.render.compose import env_file_keys
        from helix_ops.render.nginx import render_nginx_conf

        files = {
            "docker-compose.yaml": dump_yaml(_render(stack, target)),
            "nginx.conf": render_nginx_conf(stack),
            ".env.example": "".join(f"{k}=\n" for k in env_file_keys(stack)),
        }
    else:
        values = None
        if args.secrets_from_env:
            values = {key: env[var] for key, var in SECRET_ENV.items() if var in env}
        files = {"manifests.yaml": dump_yaml_all(_render(stack, target, values))}
    if stack.helix_config_text is not None and target == "compose":
        files["helix.config.yaml"] = stack.helix_config_text
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    print(f"wrote {', '.join(sorted(files))} to {out}")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``helix-ops plan``: against an empty state or ``--state FILE``."""
    from helix_ops.plan import CurrentState, compose_objects, compute_plan, kubernetes_objects, parse_state

    stack = _load_stack(args)
    target = _target(args, stack)
    rendered = _render(stack, target)
    desired = compose_objects(rendered) if target == "compose" else kubernetes_objects(rendered)
    current = CurrentState()
    if args.state:
        current = parse_state(_read_json(Path(args.state)), args.state)
    plan = compute_plan(desired, current)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else "\n".join(plan.lines()))
    return EXIT_OK


def cmd_schedules(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``helix-ops schedules --check | --write``: prefect.yaml's generated schedules against the descriptors."""
    from helix_ops._validation import load_yaml_mapping
    from helix_ops.safe_load import PREFECT_FILE_LIMIT, read_text
    from helix_ops.schedules import all_schedules, check_schedules, environment_of, write_schedules

    path = Path(args.prefect_file)
    text = read_text(path, what="prefect.yaml", limit=PREFECT_FILE_LIMIT)
    doc = load_yaml_mapping(text, str(path), aliases=True)  # prefect.yaml shares work pools by alias: bounded
    envs = sorted({e for d in doc.get("deployments") or [] if (e := environment_of(d))})
    wanted = all_schedules([load_descriptor(descriptor_path(e, path.parent)) for e in envs])
    written = write_schedules(text, wanted, str(path))
    if args.write:
        if written != text:
            path.write_text(written, encoding="utf-8")
        print(f"{'wrote' if written != text else 'up to date:'} {path}: schedules of {len(wanted)} deployments "
              f"from {len(envs)} descriptors")
        return EXIT_OK
    problems = check_schedules(load_yaml_mapping(text, str(path), aliases=True), wanted)
    if written != text and not problems:
        problems.append("the generated blocks' text is not as `helix-ops schedules --write` writes it")
    for line in problems:
        print(f"{path}: {line}", file=sys.stderr)
    if problems:
        print(f"helix-ops: {len(problems)} disagreement(s) with the descriptors: run `helix-ops schedules --write`",
              file=sys.stderr)
        return EXIT_FAILED
    print(f"ok: {path}: schedules of {len(wanted)} deployments agree with {len(envs)} descriptors")
    return EXIT_OK


def _read_json(path: Path) -> Any:
    """The ``--state`` file: bounded size, UTF-8, depth and no duplicate keys; each failure is a ConfigError."""
    from helix_ops.safe_load import STATE_LIMIT, load_json_file

    return load_json_file(path, what="state", limit=STATE_LIMIT)


def dump_yaml(data: Any) -> str:
    """YAML for humans: keys in rendering order, block style, no aliases."""
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False, default_flow_style=False, width=120)


def dump_yaml_all(objects: list[Any]) -> str:
    """Several YAML documents separated by ``---``."""
    return yaml.dump_all(objects, Dumper=_NoAliasDumper, sort_keys=False, default_flow_style=False, width=120)


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def cmd_answer(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``approve`` / ``reject``: resume a run waiting at the change gate with an answer."""
    import getpass

    from flows.gate import answer_run  # the orchestration side (Prefect's client), loaded only for these verbs

    approver = args.approver or env.get("USER") or getpass.getuser()
    print(answer_run(args.run_id, args.command == "approve", args.reason, approver,
                     getattr(args, "confirm_backup_id", None)))
    return EXIT_OK


# --- over the live environment: status, diff, history, backups -------------------------------------------------

def _live(fn: Any) -> Any:
    """A live verb: an unexpected error (an API, a socket) is one line and exit 1, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace, env: Mapping[str, str]) -> int:
        try:
            return fn(args, env)
        except HelixOpsError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as one line
            raise HelixOpsError(f"{args.command}: {type(exc).__name__}: {exc}") from exc
    return wrapper


def _descriptor(args: argparse.Namespace) -> tuple[Descriptor, Path]:
    path = _descriptor_file(args)
    return load_descriptor(path), path


def _connection(args: argparse.Namespace) -> Any:
    from drivers.target import Connection

    return Connection(engine_url=getattr(args, "engine_url", None), kubeconfig=getattr(args, "kubeconfig", None),
                      kube_context=getattr(args, "kube_context", None))


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _console() -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200, highlight=False, soft_wrap=False)


def _print_table(title: str | None, table: tuple[tuple[str, ...], list[tuple[str, ...]]]) -> None:
    from rich import box
    from rich.table import Table

    headers, rows = table
    t = Table(*headers, title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for row in rows:
        t.add_row(*row)
    _console().print(t)


@_live
def cmd_history(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``helix-ops history``: the change records in the backup store, newest first."""
    from drivers.change_log import ChangeLog
    from helix_ops.history import history_table
    from tasks.history import open_history_store

    if args.limit < 0:
        raise ConfigError("--limit", "must be 0 (all) or more")
    desc, _ = _descriptor(args)
    log = ChangeLog(open_history_store(desc, args.storage_path))
    records, skipped = log.list(desc.environment, args.limit or None)
    for line in skipped:
        print(f"helix-ops: warning: unreadable change record skipped: {line}", file=sys.stderr)
    if args.json:
        _print_json([{k: v for k, v in r.items() if k != "_name"} | {"name": r["_name"]} for r in records])
        return EXIT_OK
    if not records:
        print(f"no change records of {desc.environment} in {log.where}")
        return EXIT_OK
    _print_table(f"changes of {desc.environment} ({log.where}), newest first", history_table(records))
    return EXIT_OK


def _manifests(args: argparse.Namespace) -> tuple[Descriptor, Any, list[Any]]:
    from tasks.history import open_history_store

    desc, _ = _descriptor(args)
    store = open_history_store(desc, args.storage_path)
    mine = [m for m in store.list() if m.environment == desc.environment and m.project == desc.project]
    return desc, store, mine[::-1]


@_live
def cmd_backups(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``helix-ops backups list | show ID``: the manifests in the backup store."""
    from helix_ops.backup import validate_backup_id
    from helix_ops.history import backup_lines, backup_row, backups_table

    if args.backups_command == "show":
        validate_backup_id(args.backup_id)
        desc, _ = _descriptor(args)
        from tasks.history import open_history_store

        m = open_history_store(desc, args.storage_path).read_manifest(args.backup_id)
        if args.json:
            _print_json(m.model_dump(mode="json"))
        else:
            print("\n".join(backup_lines(m)))
        return EXIT_OK
    desc, store, manifests = _manifests(args)
    if args.json:
        _print_json([backup_row(m) for m in manifests])
    elif not manifests:
        print(f"no backups of {desc.environment} in {store.where}")
    else:
        _print_table(f"backups of {desc.environment} ({store.where}), newest first", backups_table(manifests))
    return EXIT_OK


@_live
def cmd_diff(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``helix-ops diff``: deploy-helix's plan against the live state; exit 0 no change, 2 changes, 1 error."""
    from helix_ops.history import diff_table
    from tasks.history import kept_overrides, live_plan, open_target

    declared, path = _descriptor(args)
    overrides, why = kept_overrides(declared)  # as deploy-helix: upgrade/scale results stay on top
    desc = overrides.applied_to(declared)
    notes = [why] if why else [f"override kept: {line}" for line in overrides.lines(declared)]
    target = open_target(desc, _connection(args))
    plan = live_plan(target, desc, _helix_config_text(desc, path))
    if not args.json:
        for note in notes:
            print(note)
    code = EXIT_OK if plan.is_noop else 2
    if args.json:
        _print_json({"environment": desc.environment, "target": target.where(), "changes": not plan.is_noop,
                     "plan": plan.to_dict(), "overrides": overrides.model_dump(), "notes": notes})
        return code
    counts = ", ".join(f"{n} {a}" for a, n in plan.counts().items())
    if plan.is_noop:
        print(f"no changes: {desc.environment} ({target.where()}) is as {path} renders it ({counts})")
        return code
    _print_table(f"deploy-helix would change {desc.environment} ({target.where()})", diff_table(plan.to_dict()))
    print(counts)
    return code


@_live
def cmd_status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``helix-ops status``: services, last backup, last rotation, open approvals."""
    from helix_ops.history import approvals_table, backup_row, services_table, verification_text
    from tasks.history import last_rotation, live_services, open_approvals, open_history_store, open_target, prefect_api

    desc, _ = _descriptor(args)
    target = open_target(desc, _connection(args))
    services = live_services(target, desc)
    notes: list[str] = []
    out: dict[str, Any] = {"environment": desc.environment, "project": desc.project, "target": target.where(),
                           "services": services, "healthy": bool(services) and all(r["healthy"] for r in services),
                           "last_backup": None, "backups": None, "rotation": None, "approvals": None}
    last = None
    try:
        store = open_history_store(desc, args.storage_path)
        mine = [m for m in store.list() if m.environment == desc.environment and m.project == desc.project]
        out["backups"] = len(mine)
        if mine:
            last = mine[-1]
            out["last_backup"] = backup_row(last)
    except Exception as exc:  # noqa: BLE001 - a note, the rest of the status stands
        notes.append(f"backups not read: {type(exc).__name__}: {exc}")
    api, why = prefect_api()
    if api is None:
        notes.append(f"rotation and approvals not read: {why}")
    else:
        for key, read in (("rotation", lambda: last_rotation(desc)),
                          ("approvals", lambda: open_approvals(desc.environment))):
            try:
                out[key] = read()
            except Exception as exc:  # noqa: BLE001 - a note, the rest of the status stands
                notes.append(f"{key} not read: {type(exc).__name__}: {exc}")
    out["notes"] = notes
    code = EXIT_OK if out["healthy"] else EXIT_FAILED
    if args.json:
        _print_json(out)
        return code
    _print_table(f"{desc.environment} ({target.where()})", services_table(services))
    print(f"last backup: {f'{last.backup_id}, {verification_text(last)}' if last else 'none'}"
          + (f" ({out['backups']} in all)" if out["backups"] else ""))
    rotation = out["rotation"]
    if rotation is not None:
        when = ", ".join(f"{k} {v or 'never'}" for k, v in rotation["rotated_at"].items())
        busy = rotation["in_progress"]
        print(f"credentials last set: {when}" + (f"; rotation in progress: {', '.join(busy)}" if busy else ""))
    approvals = out["approvals"]
    if approvals:
        _print_table("waiting for an approval (helix-ops approve|reject RUN_ID --reason ...)",
                     approvals_table(approvals))
    elif approvals is not None:
        print("waiting for an approval: none")
    for note in notes:
        print(f"note: {note}")
    if not out["healthy"]:
        bad = [r["service"] for r in services if not r["healthy"]] or ["(no services)"]
        print(f"NOT HEALTHY: {', '.join(bad)}")
    return code


_COMMANDS = {"validate": cmd_validate, "render": cmd_render, "plan": cmd_plan, "schedules": cmd_schedules,
             "approve": cmd_answer, "reject": cmd_answer, "status": cmd_status, "diff": cmd_diff,
             "history": cmd_history, "backups": cmd_backups}

if __name__ == "__main__":
    sys.exit(main())
