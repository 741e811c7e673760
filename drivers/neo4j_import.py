"""Restore a logical export through ``neo4j-admin database import full``: offline, into a stopped Neo4j.

Why: :func:`drivers.neo4j_load.load_logical` writes every node and relationship through Cypher, with two index
seeks per relationship; at 200k nodes / 400k relationships that took 11x the time of a dump's load. The
importer writes the store files directly.

How (:func:`import_logical`):

1. **convert** (Neo4j still running, nothing changed yet): the export's records become CSV files in a work
   folder, one header file and one data file per *property signature* (the set of ``key:type`` of a node or
   relationship). Labels go in a ``:LABEL`` column and types in a ``:TYPE`` column, the ids are the export's node
   ids (``--id-type=integer``), and every field is quoted (a quoted ``""`` is an empty string, not a missing
   value). The schema statements are kept aside.
2. **import** (Neo4j still serving the old store): ``neo4j-admin database import full`` with zero bad-entry
   tolerance into a *staging* database (``helix-restore``: Community never hosts a second user database, so the
   server ignores its folder). A failed import changes nothing.
3. **the window**: stop Neo4j, swap the staging store and transaction logs in for the database's (the replaced
   ones kept aside, :func:`helix_ops.backup_tools.neo4j_store_swap_argv`), start Neo4j and check the counts; if it
   does not come up or the counts differ, the replaced store goes back and Neo4j starts on it. Then the
   replaced store is removed. The downtime is a stop and a start, whatever the graph's size.
4. **schema**: the export's constraints and indexes are created over Bolt after the data, and the indexes are
   awaited.

Values CSV cannot carry exactly raise :class:`ImportUnsupported` in step 1, before anything is stopped: an empty
list or byte array (the importer reads an empty field as "no property"), a string list holding an empty string
or the array delimiter (U+001F), a key with ``:`` in it, a label with the delimiter, a version-1 zoned datetime.
The caller then loads transactionally (:func:`drivers.neo4j_load.load_logical`) instead.

Every field's text was checked against Neo4j 5.26's importer: temporal text as Neo4j writes it (zones, offsets,
nanoseconds, years beyond 9999), durations with negative parts, ``NaN``/``Infinity``, ``-0.0``, ``5e-324``,
points of the four CRSs and lists of them, byte arrays, NUL and newlines in strings (``--multiline-fields`` is
turned on only when a value holds a line break: it is slower).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import neo4j.exceptions as nex

from drivers.logical_format import LogicalStats
from drivers.neo4j_bolt import connect, translate_error
from drivers.neo4j_csv import CONVERT_WORKERS, CsvSet, to_csv_parallel
from drivers.neo4j_csv import ImportUnsupported  # noqa: F401 - import_logical's refusal: its callers catch it here
from drivers.neo4j_load import apply_schema
from drivers.neo4j_offline import OfflineNeo4j, PhysicalResult
from helix_ops.errors import BackupIntegrityError, CommandFailed, DriverError

if TYPE_CHECKING:  # not at run time: a conversion worker would carry pydantic for nothing
    from pydantic import SecretStr

def import_error(output: str) -> str:
    """The lines of the importer's output that say what was wrong (its stack traces say little)."""
    keep = ("original error", "raw field value", "in field", "data source", "IllegalArgumentException",
            "doesn't exist", "OutOfMemoryError", "Error in input", "InputException")
    lines = [line.strip() for line in output.splitlines() if any(k in line for k in keep)]
    seen: list[str] = []
    for line in lines:
        if line not in seen:
            seen.append(line)
    return " | ".join(seen[:6]) or (output.strip().splitlines() or ["no output"])[-1]


# --- the offline window -------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    stats: LogicalStats
    physical: PhysicalResult
    convert_s: float
    csv_bytes: int
    schema_s: float
    import_s: float = 0.0  # the import itself, with Neo4j serving the old store


def import_logical(target: OfflineNeo4j, stream: BinaryIO | Iterable[bytes], workdir: Path, uri: str, user: str,
                   password: SecretStr | str, *, database: str = "neo4j", workers: int = CONVERT_WORKERS,
                   log: Callable[[str], None] = lambda m: None) -> ImportResult:
    """Convert the export in ``stream`` to CSV in ``workdir`` with ``workers`` processes (Neo4j untouched;
    :class:`ImportUnsupported` here means: load it transactionally), then :func:`import_csv_set`."""
    _refuse_leftover(target, database)  # before the conversion's minutes, not after
    try:
        csvs = to_csv_parallel(stream, workdir, workers, log)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return _import_and_swap(target, csvs, uri, user, password, database, log)


def import_csv_set(target: OfflineNeo4j, csvs: CsvSet, uri: str, user: str, password: SecretStr | str, *,
                   database: str = "neo4j", log: Callable[[str], None] = lambda m: None) -> ImportResult:
    """Import ``csvs`` into :data:`~helix_ops.backup_tools.STAGING_DATABASE` while Neo4j still serves ``database``
    (a failed import changes nothing), then the window: stop Neo4j, swap the imported store in (the replaced
    one kept aside), start it and check its counts. If it does not come up or the counts differ, the replaced
    store is swapped back and Neo4j started on it before the error is raised. Then the replaced store is
    removed and the schema created. The CSV folder is removed. The downtime runs from the stop to the counts
    checked; the schema comes after it (the writers are still stopped then). Refused first, with nothing
    changed, while a store is still kept aside from an earlier restore (:func:`_refuse_leftover`)."""
    try:
        _refuse_leftover(target, database)
    except BaseException:
        shutil.rmtree(csvs.folder, ignore_errors=True)
        raise
    return _import_and_swap(target, csvs, uri, user, password, database, log)


def _import_and_swap(target: OfflineNeo4j, csvs: CsvSet, uri: str, user: str, password: SecretStr | str,
                     database: str, log: Callable[[str], None]) -> ImportResult:
    from helix_ops.backup_tools import STAGING_DATABASE

    log(f"converted {csvs.stats.nodes} nodes, {csvs.stats.relationships} relationships into "
        f"{len(csvs.nodes) + len(csvs.relationships)} CSV files ({csvs.bytes / 2**20:.1f} MiB) "
        f"in {csvs.stats.seconds:.1f}s")
    t_import = time.monotonic()
    try:
        target.import_csv(csvs, STAGING_DATABASE)
    except BaseException as exc:
        _forget_staging(target, database, log)
        if not isinstance(exc, CommandFailed):
            raise
        raise DriverError(f"neo4j-admin database import failed (exit {exc.rc}): {import_error(exc.stderr)}; "
                          f"{database} was not touched (the import writes a staging store first)",
                          hint="the lines above name the field the importer refused") from exc
    finally:
        shutil.rmtree(csvs.folder, ignore_errors=True)
    import_s = time.monotonic() - t_import
    log(f"imported into a staging store in {import_s:.1f}s with Neo4j serving; stopping it to swap the store in")
    t0 = time.monotonic()
    target.stop()
    try:
        target.swap_store("in", database)
        target.start()
        uri = target.uri or uri
        _check_counts(uri, user, password, database, csvs.stats)
    except BaseException as exc:
        log(f"the restored store did not come up right ({exc}); putting the previous store back")
        _swap_back(target, database)
        raise DriverError(f"the imported store of {database} did not come up right: {exc}; the previous store is "
                          "back and Neo4j runs on it", hint="nothing was lost; the cause is above") from exc
    downtime = time.monotonic() - t0
    _forget_staging(target, database, log)
    t1 = time.monotonic()
    stats = csvs.stats
    try:
        with connect(uri, user, password) as drv, drv.session(database=database) as s:
            stats.constraints, stats.indexes = apply_schema(s, csvs.schema)
    except (nex.Neo4jError, nex.DriverError, OSError) as exc:
        raise translate_error(exc, "creating the schema after the import", uri) from exc
    log(f"swapped in with Neo4j down for {downtime:.1f}s; schema ({stats.constraints} constraints, "
        f"{stats.indexes} indexes) online {time.monotonic() - t1:.1f}s later")
    return ImportResult(stats, PhysicalResult(downtime), csvs.stats.seconds, csvs.bytes,
                        round(time.monotonic() - t1, 2), round(import_s, 2))


def _refuse_leftover(target: OfflineNeo4j, database: str) -> None:
    """Refuse to start (nothing changed yet) when an earlier restore was interrupted inside its window: the
    store it kept aside is the only copy of what Neo4j held before, and this restore's swap would replace it."""
    from helix_ops.backup_tools import BEFORE_RESTORE, LEFTOVER_EXIT

    try:
        target.swap_store("check", database)
    except CommandFailed as exc:
        if exc.rc != LEFTOVER_EXIT:
            raise
        raise DriverError(
            f"an earlier restore of {database} was interrupted inside its window: Neo4j's data folder still holds "
            f"{BEFORE_RESTORE}/ (the store {database} had before that restore: {exc.stderr.strip() or 'see there'}); "
            "nothing was changed",
            hint=f"check what Neo4j serves now; keep it by removing {BEFORE_RESTORE}/ from the data folder, or put "
                 f"the old store back by moving {BEFORE_RESTORE}/databases/{database} and "
                 f"{BEFORE_RESTORE}/transactions/{database} over databases/ and transactions/ (Neo4j stopped); "
                 "then restore again") from None


def _check_counts(uri: str, user: str, password: SecretStr | str, database: str, stats: LogicalStats) -> None:
    with connect(uri, user, password) as drv:
        got = drv.execute_query("CALL { MATCH (n) RETURN count(n) AS n } CALL { MATCH ()-[r]->() RETURN count(r) AS r }"
                                " RETURN n, r", database_=database).records[0]
    if (got["n"], got["r"]) != (stats.nodes, stats.relationships):
        raise BackupIntegrityError(f"{got['n']} nodes, {got['r']} relationships after the swap; the export holds "
                                   f"{stats.nodes}, {stats.relationships}")


def _swap_back(target: OfflineNeo4j, database: str) -> None:
    """Neo4j on the store the swap kept aside again (from any point of the window)."""
    try:
        target.stop()
    except Exception:  # noqa: BLE001 - it may not have started at all
        pass
    target.swap_store("back", database)
    target.start()


def _forget_staging(target: OfflineNeo4j, database: str, log: Callable[[str], None]) -> None:
    """Remove the staging store and the replaced one (space only: a failure is logged, not raised)."""
    try:
        target.swap_store("drop", database)
    except Exception as exc:  # noqa: BLE001 - the restore itself is done or already failing
        from helix_ops.backup_tools import BEFORE_RESTORE

        log(f"could not remove the staging / replaced store: {exc}; the next restore refuses until "
            f"{BEFORE_RESTORE}/ is gone from Neo4j's data folder")
