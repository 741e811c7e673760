"""``verify-helix-backup``: re-read one backup (or the newest) and compare every object's size and sha256 with
its manifest; raises :class:`helix_ops.errors.BackupIntegrityError` on a mismatch; publishes the result."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.deploy import descriptor_path
from helix_ops.backup import validate_backup_id
from helix_ops.descriptor import load_descriptor
from helix_ops.errors import BackupIntegrityError, PlanError
from tasks.backup import open_store, record_verification, verify_backup

TOOL = "helix-ops verify-helix-backup"


@flow(name="verify-helix-backup", log_prints=False)
def verify_helix_backup(env: str = "local", descriptor: str | None = None, backup_id: str | None = None,
                        storage_path: str | None = None, deep: bool = False) -> dict[str, Any]:
    """Verify the checksums of backup ``backup_id`` (default: the newest of the environment).

    ``deep``: also decompress (and decrypt) every object and check its raw sha256.
    """
    logger = get_run_logger()
    desc = load_descriptor(descriptor_path(env, descriptor))
    store = open_store(desc, storage_path)
    if backup_id:
        validate_backup_id(backup_id)
    else:
        mine = [m for m in store.list() if m.environment == desc.environment]
        if not mine:
            raise PlanError(f"there is no backup of {desc.environment} in {store.where}")
        backup_id = mine[-1].backup_id
    try:
        checks = verify_backup(store, backup_id, deep=deep)
    except BackupIntegrityError as exc:
        logger.error("backup %s failed verification: %s", backup_id, exc)
        create_markdown_artifact(f"# Backup `{backup_id}`: verification FAILED\n\n{exc}",
                                 key=f"helix-backup-verify-{desc.environment}",
                                 description=f"verify-helix-backup {backup_id}")
        raise
    record_verification(store, backup_id, TOOL, checks)
    create_markdown_artifact("\n".join([f"# Backup `{backup_id}`: verified", "", *[f"- {c}" for c in checks]]),
                             key=f"helix-backup-verify-{desc.environment}",
                             description=f"verify-helix-backup {backup_id}")
    return {"backup_id": backup_id, "ok": True, "checks": checks}
