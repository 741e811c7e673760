"""The one error tree of helix-ops.

Every failure the core or a driver reports is a :class:`HelixOpsError`, so flows and the CLI can catch one
type. Library errors (Docker, Kubernetes, Bolt, RESP, S3) are translated at the driver boundary with
``raise ... from exc`` and a hint.
"""

from __future__ import annotations

from collections.abc import Sequence


class HelixOpsError(Exception):
    """Base of every error helix-ops raises on purpose."""


class ConfigError(HelixOpsError):
    """Invalid input: a descriptor, a helix.config.yaml, a state file or a request that breaks a rule.

    ``path`` is the dotted location of the offending value (``gates.gate_1.timeout_hours``), ``message`` says
    what was expected and ``source`` names the file (or ``<string>``). ``str()`` is a single line.
    """

    def __init__(self, path: str, message: str, source: str | None = None) -> None:
        self.path = path
        self.message = message
        self.source = source
        super().__init__(self.one_line())

    def __reduce__(self):
        return (type(self), (self.path, self.message, self.source))

    def one_line(self) -> str:
        """The error as one line: ``source: path: message`` (parts that are unknown are left out)."""
        parts = [p for p in (self.source, self.path) if p]
        text = ": ".join([*parts, self.message])
        return " ".join(text.split())

    def with_source(self, source: str) -> ConfigError:
        """The same error, attributed to ``source`` (a file name)."""
        return ConfigError(self.path, self.message, source)


class PlanError(HelixOpsError):
    """A plan cannot be computed, e.g. the current state is malformed or an object is owned by someone else."""


class ChangeRefused(HelixOpsError):
    """A change was refused before anything was changed: an approval not given (or given for another plan), a
    policy that says no. The flows raise their own subclass (restore, rotation, pruning, drift)."""


class DriftRefused(ChangeRefused):
    """A deploy found fields changed out of band and the environment's ``kubernetes.drift`` is ``refuse``."""


class RenderError(HelixOpsError):
    """A rendered object does not pass its schema (Compose specification, Kubernetes OpenAPI)."""


class CommandFailed(HelixOpsError):
    """A command (an argument list, never a shell string) exited non-zero."""

    def __init__(self, argv: Sequence[str], rc: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.rc = rc
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        super().__init__(f"{self.argv[0] if self.argv else '?'} exited {rc}: {tail}".rstrip(": "))

    def __reduce__(self):
        return (type(self), (self.argv, self.rc, self.stderr))


class WaitTimeout(HelixOpsError):
    """A condition was not met before its deadline; ``last_seen`` is the last observed state."""

    def __init__(self, what: str, last_seen: object) -> None:
        self.what = what
        self.last_seen = last_seen
        super().__init__(f"timed out waiting for {what}; last seen: {last_seen!r}")

    def __reduce__(self):
        return (type(self), (self.what, self.last_seen))


class BackupIntegrityError(HelixOpsError):
    """A backup artifact does not match its manifest (checksum, size, missing file, failed check)."""


class LockHeld(HelixOpsError):
    """An environment lease is held by someone else."""

    def __init__(self, environment: str, owner: str, expires_at: str) -> None:
        self.environment = environment
        self.owner = owner
        self.expires_at = expires_at
        super().__init__(f"environment {environment} is locked by {owner} until {expires_at}")

    def __reduce__(self):
        return (type(self), (self.environment, self.owner, self.expires_at))


class DriverError(HelixOpsError):
    """A side-effecting backend failed; ``hint`` says what to check."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.hint = hint
        self.message = message
        super().__init__(f"{message} (hint: {hint})" if hint else message)

    def __reduce__(self):
        return (type(self), (self.message, self.hint))


class OfflineUnavailable(DriverError):
    """The offline ``neo4j-admin`` path cannot run on this target (not exactly one running Neo4j container, no
    named data volume, no image for the one-off container); nothing was stopped."""
