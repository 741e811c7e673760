"""Refusing secret values in descriptors: descriptors live in git, secrets live in Prefect blocks.

Two checks on the raw YAML tree, before model validation so the error says *why*:

* a key named like a secret (password, secret, token, api key, private key, credential, ...) holding a
  literal value; keys ending in ``_name`` or ``_block`` hold names of things and are allowed;
* any string value that looks like a credential (private key block, cloud access key, vendor API token,
  a URL with a password, a JWT).
"""

from __future__ import annotations

import re
from typing import Any

from helix_ops._validation import format_path
from helix_ops.errors import ConfigError

_SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key|access[_-]?key|"
    r"(^|[_-])key$|credential|(^|[_-])auth($|[_-]))",
    re.IGNORECASE,
)
_NAME_SUFFIX = re.compile(r"[_-](name|block)$", re.IGNORECASE)
_SECRET_VALUE = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"\bsk-(ant-)?[A-Za-z0-9_-]{16,}"), "an API key"),
    (re.compile(r"\b(ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{20,}"), "a GitHub token"),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), "a Slack token"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\."), "a JWT"),
    (re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE), "a URL with a password"),
]

HINT = "store it in a Prefect Secret block and name the block under credentials"


def find_inline_secret(data: Any, loc: tuple[str | int, ...] = ()) -> ConfigError | None:
    """The first inline secret in a parsed YAML tree, as a ConfigError, or None."""
    if isinstance(data, dict):
        for key, value in data.items():
            here = (*loc, str(key))
            if _is_secret_key(str(key)) and _is_literal(value):
                return ConfigError(format_path(here), f"looks like an inline secret: {HINT}")
            found = find_inline_secret(value, here)
            if found:
                return found
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found = find_inline_secret(value, (*loc, i))
            if found:
                return found
    elif isinstance(data, str):
        for pattern, what in _SECRET_VALUE:
            if pattern.search(data):
                return ConfigError(format_path(loc) or "(top level)", f"value looks like {what}: {HINT}")
    return None


def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _NAME_SUFFIX.search(key)


def _is_literal(value: Any) -> bool:
    if value is None or isinstance(value, (dict, list)):
        return False
    return str(value).strip() != ""
