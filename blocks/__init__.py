"""Prefect blocks for helix-ops: credentials and backup storage, every secret a ``SecretStr``.

Block types (slugs): ``helix-neo4j-credentials`` (:class:`Neo4jCredentials`), ``helix-redis-credentials``
(:class:`RedisCredentials`), ``helix-app-secrets`` (:class:`HelixAppSecrets`), ``helix-anthropic-credentials``
(:class:`AnthropicCredentials`), ``helix-local-backup-storage`` (:class:`LocalBackupStorage`). Reused as they
are: prefect-aws ``AwsCredentials``/``S3Bucket`` (:mod:`blocks.storage`), prefect-docker ``DockerHost`` and
prefect-kubernetes ``KubernetesClusterConfig``/``KubernetesCredentials`` (:mod:`blocks.engine`).

:mod:`blocks.secrets` loads an environment's blocks into one bundle and turns it into container
environments and ``.env`` files; ``python -m blocks.bootstrap --env NAME`` creates the blocks.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "AnthropicCredentials": "blocks.credentials",
    "HelixAppSecrets": "blocks.credentials",
    "Neo4jCredentials": "blocks.credentials",
    "RedisCredentials": "blocks.credentials",
    "LocalBackupStorage": "blocks.storage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, so ``python -m blocks.bootstrap`` can reject bad input before importing Prefect (seconds).
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'blocks' has no attribute {name!r}")
