"""``helix-ops``: validate a descriptor, render it, plan changes.

The CLI is the edge: it reads files and ``os.environ``; everything below it is pure. Exit codes: 0 success,
2 invalid input (one line on stderr naming the path, no traceback), 1 an internal failure.

    helix-ops validate --env prod
    helix-ops render --env prod --target kubernetes --out build/prod
    helix-ops plan --env local --state current.json
    helix-ops schedules --check        # prefect.yaml's generated schedules agree with the descriptors
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
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI; returns the exit code. ``environ`` defaults to ``os.environ`` (the only place it does)."""
    env = os.environ if environ is None else environ
    try:
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args, env)
    except ConfigError as exc:
        return _fail(exc.one_line(), EXIT_INVALID)
    except PlanError as exc:
        return _fail(f"plan: {exc}", EXIT_INVALID)
    except RenderError as exc:
        return _fail(f"rendering failed its schema: {exc}", EXIT_FAILED)
    except HelixOpsError as exc:
        return _fail(str(exc), EXIT_FAILED)


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


_COMMANDS = {"validate": cmd_validate, "render": cmd_render, "plan": cmd_plan, "schedules": cmd_schedules,
             "approve": cmd_answer, "reject": cmd_answer}

if __name__ == "__main__":
    sys.exit(main())
