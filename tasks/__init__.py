"""Prefect tasks: one verb on one object, explicit retries and timeouts, no caching where secrets pass."""
