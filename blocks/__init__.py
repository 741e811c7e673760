"""Prefect blocks for helix-ops: credentials and backup storage, every secret a ``SecretStr``.

Block types (slugs): ``helix-neo4j-credentials`` (:class:`Neo4jCredentials`), ``helix-redis-credentials``
(:class:`RedisCredentials`), ``helix-app-secrets`` (:class:`HelixAppSecrets`), ``helix-anthropic-credentials``
(:class:`AnthropicCredentials`), ``helix-local-backup-storage`` (:class:`LocalBackupStorage`). Reused as they
are: prefect-aws ``AwsCredentials``/``S3Bucket`` (:mod:`blocks.storage`), prefect-docker ``DockerHost`` and
prefect-kubernetes ``KubernetesClusterConfig``/``KubernetesCredentials`` (:mod:`blocks.engine`).

:mod:`blocks.secrets` loads an environment's blocks into one bundle and turns it into container
environments and ``.env`` files; ``python -m blocks.bootstrap --env NAME`` creates the blocks.
"""

from blocks.credentials import AnthropicCredentials, HelixAppSecrets, Neo4jCredentials, RedisCredentials
from blocks.storage import LocalBackupStorage

__all__ = [
    "AnthropicCredentials",
    "HelixAppSecrets",
    "LocalBackupStorage",
    "Neo4jCredentials",
    "RedisCredentials",
]
