"""Errors cross process boundaries (Prefect results, subprocess pools) intact: every one pickles."""

from __future__ import annotations

import pickle

import pytest

from helix_ops.errors import CommandFailed, ConfigError, DriverError, LockHeld, WaitTimeout


@pytest.mark.parametrize("error", [
    ConfigError("services.dashboard.replicas", "must be at least 1", "prod.yaml"),
    CommandFailed(["neo4j-admin", "database", "dump"], 1, "the database is in use"),
    WaitTimeout("dashboard to be healthy", "HTTP 503"),
    LockHeld("prod", "flow-run/1", "12:00"),
    DriverError("engine unreachable", hint="start it"),
])
def test_every_error_pickles_with_its_fields_and_message(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and vars(copy) == vars(error)
