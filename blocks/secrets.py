"""One environment's secrets, loaded from its Prefect blocks, and the ways to hand them to a container.

* :func:`load_environment_secrets` loads the blocks a descriptor names under ``credentials`` into an
  :class:`EnvironmentSecrets` bundle (every secret a ``SecretStr``; ``repr``/``str`` show no value; the bundle
  refuses to be pickled, so it cannot end up in a persisted task result).
* :func:`secret_values` gives the stack's secret keys (``neo4j-password`` ...) for
  ``helix_ops.render.kubernetes.render_kubernetes(stack, secret_values(secrets))``.
* :func:`resolve_env` turns a service's ``EnvVar`` list (literals and secret keys, as ``helix_ops.stack``
  builds them) into the exact environment of a container: what the engine driver passes to the Docker API.
* :func:`compose_env` gives the guide's variable names (NEO4J_USER, NEO4J_PASSWORD, REDIS_PASSWORD,
  NEXTAUTH_SECRET, ANTHROPIC_API_KEY) for a Compose ``.env``; :func:`write_env_file` writes one (0600).

Tasks that call these must use ``cache_policy=NO_CACHE`` and return no secret.
"""

from __future__ import annotations

import os
import re
import secrets as _random
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from pydantic import SecretStr

from helix_ops.descriptor import Descriptor
from helix_ops.errors import ConfigError, DriverError, HelixOpsError
from helix_ops.stack import DERIVED_SECRETS, SECRET_ENV, EnvVar, secret_blocks

NEO4J_USER_ENV = "NEO4J_USER"
"""The variable carrying the Neo4j user (not a secret, but part of the login)."""

COMPOSE_ENV_NAMES: tuple[str, ...] = (NEO4J_USER_ENV, *SECRET_ENV.values())
"""Every variable :func:`compose_env` can give, in order."""


@dataclass(frozen=True, repr=False, eq=False)
class EnvironmentSecrets:
    """The secrets of one environment, as loaded from its Prefect blocks. Never shows a value.

    Attributes:
        environment: the environment name (``local``).
        blocks: secret key (``neo4j-password``) → name of the block it came from (for error messages).
        neo4j_user / neo4j_password: the active Neo4j login.
        redis_username / redis_password: the Redis login.
        nextauth_secret: the dashboard's NEXTAUTH_SECRET.
        anthropic_api_key: ANTHROPIC_API_KEY; ``anthropic_placeholder`` is True if it is a generated stand-in.
        redis_sentinel_master: Sentinel master name from the Redis block, if set.
        neo4j_alternate_user / neo4j_alternate_password: the second Neo4j login for rotation, if set.
    """

    environment: str
    blocks: Mapping[str, str]
    neo4j_user: str
    neo4j_password: SecretStr
    redis_username: str
    redis_password: SecretStr
    nextauth_secret: SecretStr
    anthropic_api_key: SecretStr
    anthropic_placeholder: bool = False
    redis_sentinel_master: str | None = None
    neo4j_alternate_user: str | None = None
    neo4j_alternate_password: SecretStr | None = field(default=None)

    def __post_init__(self) -> None:
        for name in ("neo4j_password", "redis_password", "nextauth_secret", "anthropic_api_key"):
            if not isinstance(getattr(self, name), SecretStr):
                raise TypeError(f"EnvironmentSecrets.{name} must be a SecretStr")

    def __repr__(self) -> str:
        return f"EnvironmentSecrets(environment={self.environment!r}, blocks={dict(self.blocks)!r}, values=<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "EnvironmentSecrets cannot be pickled (it would write secrets to a result store): "
            "load it inside the task that uses it and return no secret"
        )

    def __copy__(self) -> EnvironmentSecrets:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> EnvironmentSecrets:
        return self


class SecretEnv(dict[str, str]):
    """A plain ``dict[str, str]`` of environment variables whose ``repr``/``str`` hide the values."""

    def __repr__(self) -> str:
        return "SecretEnv({" + ", ".join(f"{k!r}: '***'" for k in self) + "})"

    __str__ = __repr__


def load_environment_secrets(descriptor: Descriptor) -> EnvironmentSecrets:
    """Load the credential blocks ``descriptor.credentials`` names into one bundle.

    Raises :class:`ConfigError` naming ``credentials.<entry>`` when a block is missing (run the bootstrap),
    :class:`DriverError` when the Prefect API cannot be reached.

    Example::

        secrets = load_environment_secrets(load_descriptor("deployments/local.yaml"))
        env = resolve_env(service.env, secrets)
    """
    from blocks.credentials import AnthropicCredentials, HelixAppSecrets, Neo4jCredentials, RedisCredentials

    creds = descriptor.credentials
    neo4j = _load(Neo4jCredentials, creds.neo4j, "neo4j", descriptor.environment)
    redis = _load(RedisCredentials, creds.redis, "redis", descriptor.environment)
    app = _load(HelixAppSecrets, creds.dashboard, "dashboard", descriptor.environment)
    anthropic = _load(AnthropicCredentials, creds.anthropic, "anthropic", descriptor.environment)
    return EnvironmentSecrets(
        environment=descriptor.environment,
        blocks=secret_blocks(descriptor),
        neo4j_user=neo4j.user,
        neo4j_password=neo4j.password,
        redis_username=redis.username,
        redis_password=redis.password,
        nextauth_secret=app.nextauth_secret,
        anthropic_api_key=anthropic.api_key,
        anthropic_placeholder=anthropic.placeholder,
        redis_sentinel_master=redis.sentinel_master_name,
        neo4j_alternate_user=neo4j.alternate_user,
        neo4j_alternate_password=neo4j.alternate_password,
    )


def _load(cls: Any, name: str, entry: str, environment: str) -> Any:
    try:
        return cls.load(name)
    except ValueError as exc:
        if "Unable to find block document" in str(exc):
            raise ConfigError(
                f"credentials.{entry}",
                f"no Prefect block {name!r} of type {cls.get_block_type_slug()}: "
                f"create it with python -m blocks.bootstrap --env {environment}",
            ) from None
        raise ConfigError(f"credentials.{entry}", f"block {name!r} does not load: {type(exc).__name__}") from None
    except HelixOpsError:
        raise
    except Exception as exc:  # httpx/API errors; the message names no secret, but keep only its type
        raise DriverError(
            f"cannot load Prefect block {name!r}: {type(exc).__name__}", hint="is PREFECT_API_URL reachable?"
        ) from exc


def secret_values(secrets: EnvironmentSecrets) -> SecretEnv:
    """Secret key → value for the stack's base keys (``neo4j-password``, ``redis-password``,
    ``nextauth-secret``, ``anthropic-api-key``): the ``secret_values`` of ``render_kubernetes``."""
    return SecretEnv({
        "neo4j-password": secrets.neo4j_password.get_secret_value(),
        "redis-password": secrets.redis_password.get_secret_value(),
        "nextauth-secret": secrets.nextauth_secret.get_secret_value(),
        "anthropic-api-key": secrets.anthropic_api_key.get_secret_value(),
    })


def secret_value(key: str, secrets: EnvironmentSecrets) -> str:
    """The value of one secret key, derived keys included (``neo4j-auth`` is ``neo4j/<password>``)."""
    prefix, base = DERIVED_SECRETS.get(key, ("", key))
    values = secret_values(secrets)
    if base not in values:
        raise ConfigError(f"secrets.{key}", f"not a secret key (expected one of: {', '.join(sorted(values))})")
    value = values[base]
    if not value:
        raise ConfigError(f"secrets.{base}", f"empty value in Prefect block {secrets.blocks.get(base, '?')}")
    return prefix + value


def resolve_env(env: Iterable[EnvVar], secrets: EnvironmentSecrets) -> SecretEnv:
    """A container's environment: literals as they are, secret keys replaced by their values.

    ``env`` is a service's ``ServiceSpec.env`` plus any member variables (``neo4j_member_env`` ...).
    This is what the engine driver passes as ``environment=`` to the Docker API (values never on argv).
    """
    out = SecretEnv()
    logins = compose_env(secrets)
    for var in env:
        if var.secret:
            out[var.name] = secret_value(var.secret, secrets)
        elif var.from_credentials:  # NEO4J_USER: the blocks' user, which a rotation switches with the password
            out[var.name] = logins.get(var.name) or var.value or ""
        else:
            out[var.name] = var.value or ""
    return out


def compose_env(secrets: EnvironmentSecrets) -> SecretEnv:
    """The guide's variables for a Compose ``.env``: NEO4J_USER, NEO4J_PASSWORD, REDIS_PASSWORD,
    NEXTAUTH_SECRET, ANTHROPIC_API_KEY (the names ``helix_ops.stack.SECRET_ENV`` and
    ``helix_ops.render.compose.env_file_keys`` use)."""
    out = SecretEnv({NEO4J_USER_ENV: secrets.neo4j_user})
    for key, value in secret_values(secrets).items():
        out[SECRET_ENV[key]] = value
    return out


# --- .env files -------------------------------------------------------------------------------------------

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)='([^']*)'$")


def check_env_value(key: str, value: str) -> None:
    """Refuse a value that Compose's and python-dotenv's ``.env`` parsers would read differently.

    Values are written single-quoted, which both read literally, except that python-dotenv (podman-compose)
    still expands ``${...}``. So a value must not contain ``'``, a backslash, ``${``, a newline or a NUL.
    The error names the key, never the value.
    """
    if not isinstance(value, str):
        raise ConfigError(f"env.{key}", "value must be a string")
    if "'" in value or "\\" in value or "${" in value or any(c in value for c in "\n\r\0"):
        raise ConfigError(
            f"env.{key}", "value contains a quote, backslash, '${', newline or NUL, which .env files cannot carry"
        )


def format_env_file(mapping: Mapping[str, str]) -> str:
    """The text of a ``.env`` file: ``KEY='value'`` lines in the mapping's order."""
    lines = []
    for key, value in mapping.items():
        if not _ENV_KEY.match(key):
            raise ConfigError(f"env.{key}", "not a variable name (letters, digits, underscore)")
        check_env_value(key, value)
        lines.append(f"{key}='{value}'\n")
    return "".join(lines)


def write_env_file(path: str | os.PathLike[str], mapping: Mapping[str, str]) -> Path:
    """Write a Compose ``.env`` with mode 0600 from its creation; returns the path.

    The file is created under a random name in the same folder with ``os.open(..., 0o600)`` and
    ``O_EXCL|O_NOFOLLOW``, written, fsynced, then renamed over ``path`` (an existing file is replaced, never
    rewritten in place, so its old mode cannot leak through). Refuses a folder that is world-writable without
    the sticky bit (anyone could swap the file). Raises :class:`ConfigError` (naming keys, never values).
    """
    target = Path(path)
    text = format_env_file(mapping)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        mode = folder.stat().st_mode
    except OSError as exc:
        raise ConfigError(str(folder), f"cannot use folder for the .env file: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise ConfigError(str(folder), "not a folder")
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise ConfigError(str(folder), "refusing to write secrets into a world-writable folder without the sticky bit")
    temp = folder / f".{target.name}.{_random.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(temp, flags, 0o600)
    except OSError as exc:
        raise ConfigError(str(target), f"cannot create the .env file: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise ConfigError(str(target), f"cannot write the .env file: {exc.strerror}") from None
    return target


def read_env_file(path: str | os.PathLike[str]) -> SecretEnv:
    """Parse a ``.env`` written by :func:`write_env_file` (``KEY='value'`` lines; blank lines and ``#``
    comments skipped). Raises :class:`ConfigError` naming the line number on anything else."""
    out = SecretEnv()
    from helix_ops.safe_load import read_text

    text = read_text(path, what=".env file", limit=1 << 20)  # bounded, UTF-8 checked: one ConfigError line
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigError(f"line {number}", "expected KEY='value'", str(path))
        out[match.group(1)] = match.group(2)
    return out
