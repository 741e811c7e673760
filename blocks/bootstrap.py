"""Register the helix block types and create an environment's credential blocks.

    python -m blocks.bootstrap --env local            # reads deployments/local.yaml in the cwd
    python -m blocks.bootstrap --descriptor PATH
    HELIX_NEO4J_PASSWORD=... python -m blocks.bootstrap --env staging --overwrite

Creates every block the descriptor names under ``credentials`` that does not exist yet. Secrets come from
environment variables (never from argv); a secret not supplied is generated with
``secrets.token_urlsafe(32)`` (43 characters). Existing blocks are kept, so a second run changes nothing
and says so, unless:

* ``--overwrite``: existing blocks take the values supplied through environment variables (and the
  descriptor's settings); blocks with nothing supplied are kept;
* ``--rotate``: every generated secret is generated anew (supplied values still win). This changes only the
  blocks: the running servers keep their old passwords until the rotate flow applies the new ones.

Inputs (environment variables):

========================================  =====================================================
HELIX_NEO4J_USER                          Neo4j user (default ``neo4j``)
HELIX_NEO4J_PASSWORD                      Neo4j password (8+ characters)
HELIX_REDIS_PASSWORD                      Redis password (8+)
HELIX_REDIS_SENTINEL_PASSWORD             password of the Sentinels, if they need one
HELIX_NEXTAUTH_SECRET                     dashboard NEXTAUTH_SECRET (32+)
HELIX_ANTHROPIC_API_KEY                   Anthropic API key; without it a placeholder is stored
HELIX_S3_ACCESS_KEY_ID / _SECRET_ACCESS_KEY  S3 keys (both or neither; neither: boto's default chain)
========================================  =====================================================

Then it creates or updates the environment's notification automations from ``notifications.yaml`` (or
``$HELIX_NOTIFICATIONS_FILE``; see :mod:`blocks.notifications`), one line each on stderr; with no notification
block configured for the environment it creates none and says so.

Supplied secrets must be printable ASCII without spaces, quotes, backslash, backtick or ``$``: they pass
through ``.env`` files, redis.conf and NEO4J_AUTH. The output names blocks and what happened, never a value.
Exit codes: 0 done, 2 invalid input (one line on stderr), 1 the Prefect API failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

from blocks.inputs import read_inputs
from blocks.notifications import EnvironmentSettings, apply_notifications, environment_settings
from helix_ops.descriptor import Descriptor, descriptor_path, load_descriptor
from helix_ops.errors import ConfigError, HelixOpsError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


# --- command line -----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError("arguments", message)


def build_parser() -> argparse.ArgumentParser:
    """``python -m blocks.bootstrap`` arguments (no secret is ever an argument)."""
    parser = _Parser(
        prog="python -m blocks.bootstrap",
        description="Register the helix block types and create an environment's credential blocks. "
        "Secrets come from HELIX_* environment variables or are generated; see the module docs.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--env", metavar="NAME", help="environment: reads deployments/NAME.yaml in the cwd")
    which.add_argument("--descriptor", metavar="PATH", help="path of an environment descriptor")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--overwrite", action="store_true",
                     help="apply supplied HELIX_* values and descriptor settings to existing blocks")
    how.add_argument("--rotate", action="store_true",
                     help="generate new secrets for existing blocks (servers change only via the rotate flow)")
    return parser


def _descriptor(args: argparse.Namespace) -> Descriptor:
    if args.descriptor:
        return load_descriptor(args.descriptor)
    path = descriptor_path(args.env)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml") if p.stem != "helix.config")
        raise ConfigError(
            "--env", f"unknown environment {args.env!r}: no {path}"
            + (f" (known: {', '.join(known)})" if known else " (run from the repository root)"),
        )
    descriptor = load_descriptor(path)
    if descriptor.environment != args.env:
        raise ConfigError("environment", f"is {descriptor.environment!r}, expected {args.env!r}", str(path))
    return descriptor


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the bootstrap; returns the exit code. ``environ`` defaults to ``os.environ``."""
    env = os.environ if environ is None else environ
    try:
        args = build_parser().parse_args(argv)
        descriptor = _descriptor(args)
        read_inputs(env)  # bad input fails here, before Prefect is imported
        notifications = environment_settings(descriptor.environment, env)  # so does a malformed notifications.yaml
        from blocks.provision import bootstrap

        outcomes = bootstrap(descriptor, env, overwrite=args.overwrite, rotate=args.rotate)
    except ConfigError as exc:
        return _fail(exc.one_line(), EXIT_INVALID)
    except HelixOpsError as exc:
        return _fail(str(exc), EXIT_FAILED)
    for outcome in outcomes:
        print(outcome.line())
    changed = [o for o in outcomes if o.action != "kept"]
    if changed:
        counts = {a: sum(o.action == a for o in outcomes) for a in ("created", "updated", "rotated", "kept")}
        print(f"environment {descriptor.environment}: " + ", ".join(f"{n} {a}" for a, n in counts.items() if n))
    else:
        print(f"environment {descriptor.environment}: nothing changed, all {len(outcomes)} blocks kept")
    return _notifications(notifications)


def _notifications(settings: EnvironmentSettings) -> int:
    """The environment's notification automations (blocks.notifications); their lines go to stderr, so stdout
    stays the blocks' report."""
    try:
        outcomes, summary = apply_notifications(settings)
    except ConfigError as exc:
        return _fail(exc.one_line(), EXIT_INVALID)
    except HelixOpsError as exc:
        return _fail(str(exc), EXIT_FAILED)
    for outcome in outcomes:
        print(outcome.line(), file=sys.stderr)
    print(summary, file=sys.stderr)
    return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"blocks.bootstrap: error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
