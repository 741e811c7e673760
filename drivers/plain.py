"""A secret's plain text, for the one call that needs it (a client's auth, a subprocess's environment)."""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:  # duck-typed at run time: a worker process need not load pydantic for this
    from pydantic import SecretStr


@overload
def plain(secret: SecretStr | str) -> str: ...
@overload
def plain(secret: SecretStr | str | None) -> str | None: ...
def plain(secret: SecretStr | str | None) -> str | None:
    """``secret``'s text: a ``SecretStr`` revealed, a ``str`` (or ``None``) as it is."""
    return secret if secret is None or isinstance(secret, str) else secret.get_secret_value()
