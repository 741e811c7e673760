"""The Bolt connection the Neo4j backup modules share (export, load, importer restore): a driver with the
backup's settings, and the driver's errors as :class:`helix_ops.errors.DriverError`.

Kept apart from :mod:`drivers.neo4j` (the deploy's client), which imports pydantic: an export worker process
imports this and should carry no more than it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import neo4j

from drivers.plain import plain
from helix_ops.errors import DriverError

if TYPE_CHECKING:  # not imported at run time: an export worker would carry pydantic's ~8 MiB for nothing
    from pydantic import SecretStr


def connect(uri: str, user: str, password: SecretStr | str) -> neo4j.Driver:
    """A driver for ``uri`` (15 s connection timeout, 30 s of transaction retries, no deprecation notices)."""
    secret = plain(password)
    # id() is deprecated in 5.x (still the cheapest seek): without this, every chunk's query logs a warning
    return neo4j.GraphDatabase.driver(uri, auth=(user, secret), connection_timeout=15,
                                      notifications_disabled_classifications=["DEPRECATION"],
                                      max_transaction_retry_time=30)


def translate_error(exc: Exception, doing: str, uri: str) -> DriverError:
    """A driver or socket error while ``doing`` as a :class:`DriverError` (the server's code and message)."""
    return DriverError(f"Neo4j at {uri}: {type(exc).__name__} while {doing}: "
                       f"{getattr(exc, 'code', '') or ''} {getattr(exc, 'message', '') or ''}".strip(),
                       hint="is the server up and the password right?")
