"""The ``worker`` fixture (tests/prefect_worker.py, shared with the browser tests in tests/ui)."""

from tests.prefect_worker import worker  # noqa: F401 - a fixture, found by pytest through this import
