"""The lake: Apache Iceberg tables through pyiceberg.

Locally a SQL catalog on SQLite with a file warehouse; in production a SQL
catalog on Postgres (or a REST catalog) with an S3/MinIO warehouse. Every
write is one Iceberg commit, so a crash before the commit leaves the table at
its previous snapshot, and partition writes *replace* the partition in that
same commit (delete + append), so re-running a partition never duplicates it.

pyiceberg and pyarrow are imported inside methods: the code location must
load without them.
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource
from pydantic import PrivateAttr

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

# Parquet settings for every table: snappy matches pyarrow's default and
# is ~2x faster to write than Iceberg's default zstd at similar size here.
TABLE_PROPERTIES = {
    "write.parquet.compression-codec": "snappy",
    "format-version": "2",
    # keep table metadata small: commit cost grows with the metadata log
    "write.metadata.previous-versions-max": "20",
    "write.metadata.delete-after-commit.enabled": "true",
}

# A commit that loses a race with another writer of the same table is redone on
# the new snapshot at most this many times in all (see LakeResource._commit).
COMMIT_ATTEMPTS = 8


def commit_backoff(attempt: int) -> None:
    """Wait before redoing a commit that lost a race: exponential from 50 ms, at most 2 s, jittered so two
    writers that collided do not collide again."""
    import random
    import time

    time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))


def _same_iceberg_type(actual: "pa.DataType", target: "pa.DataType") -> bool:
    """True when both Arrow types map to the same Iceberg type (no cast needed)."""
    import pyarrow as pa

    if actual == target:
        return True
    if pa.types.is_large_string(target) and pa.types.is_string(actual):
        return True
    if pa.types.is_large_binary(target) and pa.types.is_binary(actual):
        return True
    return False


def lake_schema(schema: "pa.Schema") -> "pa.Schema":
    """The Arrow schema as the lake stores it: timestamps in microseconds, zoned ones in UTC.

    Iceberg keeps an instant (timestamptz) or a wall time (timestamp) in microseconds, and pyiceberg
    only accepts UTC as the zone of an instant: a column zoned elsewhere (DuckDB hands out
    TIMESTAMPTZ in the session's zone, i.e. the machine's) is the same instant in UTC.
    """
    import pyarrow as pa

    fields = []
    for field in schema:
        if pa.types.is_timestamp(field.type) and (field.type.unit != "us" or field.type.tz not in (None, "UTC")):
            field = field.with_type(pa.timestamp("us", tz=None if field.type.tz is None else "UTC"))
        fields.append(field)
    return pa.schema(fields, metadata=schema.metadata)


def _require_partition_rows(data: "pa.Table", column: str, value: Any) -> None:
    """Refuse rows outside the partition being replaced: the delete only clears ``column == value``, so such
    rows would land in another partition on top of what it holds, again on every re-run."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column in data.column_names:  # an empty write clears the partition: its value must still be of the type
        column_type = data.schema.field(column).type
        try:
            expected = pa.scalar(value).cast(column_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise ValueError(f"cannot replace partition {column}={value!r}: the value is not a {column_type}") from exc
    if not data.num_rows:
        return
    if column not in data.column_names:
        raise ValueError(f"cannot replace partition {column}={value}: the data has no column {column!r}")
    values = data.column(column)
    outside = pc.invert(pc.fill_null(pc.equal(values, expected), False))
    if pc.any(outside).as_py():
        stray = pc.unique(pc.filter(values, outside)).to_pylist()
        raise ValueError(f"cannot replace partition {column}={value}: {pc.sum(outside).as_py()} row(s) have "
                         f"{column} {sorted(stray, key=str)[:5]}, outside the partition")


class LakeResource(ConfigurableResource):
    """Iceberg catalog access: create, evolve, write and read lake tables."""

    catalog_name: str = "platformq"
    catalog_type: str = "sql"  # "sql" (SQLite/Postgres) or "rest"
    catalog_uri: str
    warehouse: str
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"

    _catalog: Any = PrivateAttr(default=None)
    _commit_retries: int = PrivateAttr(default=0)

    @property
    def commit_retries(self) -> int:
        """Commits redone after losing a race with another writer (in this process)."""
        return self._commit_retries

    # -- catalog ----------------------------------------------------------
    def catalog_properties(self) -> dict[str, str]:
        props = {"type": self.catalog_type, "uri": self.catalog_uri, "warehouse": self.warehouse}
        if self.catalog_type == "sql" and self.catalog_uri.startswith("sqlite"):
            props["init_catalog_tables"] = "true"
        if self.s3_endpoint:
            props.update({
                "s3.endpoint": self.s3_endpoint,
                "s3.access-key-id": self.s3_access_key or "",
                "s3.secret-access-key": self.s3_secret_key or "",
                "s3.region": self.s3_region,
                "s3.path-style-access": "true",
            })
        return props

    def catalog(self) -> "Catalog":
        if self._catalog is None:
            from pyiceberg.catalog import load_catalog

            if self.warehouse.startswith("file://"):
                from pathlib import Path
                from urllib.parse import urlparse

                Path(urlparse(self.warehouse).path).mkdir(parents=True, exist_ok=True)
            if self.catalog_uri.startswith("sqlite:///"):
                from pathlib import Path

                Path(self.catalog_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self._catalog = load_catalog(self.catalog_name, **self.catalog_properties())
        return self._catalog

    def teardown_after_execution(self, context) -> None:  # noqa: ARG002 - dagster hook
        catalog, self._catalog = self._catalog, None
        engine = getattr(catalog, "engine", None)
        if engine is not None:
            engine.dispose()

    # -- tables -----------------------------------------------------------
    def table_exists(self, identifier: str) -> bool:
        return self.catalog().table_exists(identifier)

    def load_table(self, identifier: str) -> "Table":
        return self.catalog().load_table(identifier)

    def ensure_table(self, identifier: str, schema: "pa.Schema", partition_by: str | None = None) -> "Table":
        """Create the table (and namespace) if missing; evolve it to take the data.

        New columns are added (as optional columns; one of Arrow's null type waits for data that gives it a
        type), and a column whose type the data widens the way Iceberg
        allows (int to long, float to double, a wider decimal) is promoted, so the data is
        never cast down into the old type; required columns stay required. A change
        Iceberg does not allow raises pyiceberg's ValidationError before anything is written.
        """
        import pyarrow as pa

        schema = lake_schema(schema)
        # A column of Arrow's null type (every value null, so no type) gives Iceberg nothing to store: it is
        # left out until data gives it a type (an existing column takes such nulls: conform() casts them).
        schema = pa.schema([f for f in schema if not pa.types.is_null(f.type)], metadata=schema.metadata)
        catalog = self.catalog()
        namespace = identifier.split(".")[0]
        catalog.create_namespace_if_not_exists(namespace)
        if not catalog.table_exists(identifier):
            try:
                # schema and partition spec in the table's first metadata (one commit): a crash can never leave
                # the table created but unpartitioned
                with catalog.create_table_transaction(identifier, schema=schema,
                                                      properties=TABLE_PROPERTIES) as create:
                    if partition_by:
                        with create.update_spec() as spec:
                            spec.add_identity(partition_by)
                return catalog.load_table(identifier)
            except Exception as exc:  # lost a creation race: fall through to load
                from pyiceberg.exceptions import TableAlreadyExistsError

                if not isinstance(exc, TableAlreadyExistsError):
                    raise
        from pyiceberg.exceptions import CommitFailedException

        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            table = catalog.load_table(identifier)
            # a required column stays required (conform() refuses nulls in it), whatever the data's nullability;
            # a new column is optional, whatever the data declares (the rows already there have no value)
            existing = {f.name: f for f in table.schema().fields}
            wanted = pa.schema([(f.with_nullable(not existing[f.name].required) if f.name in existing
                                 else f.with_nullable(True)) for f in schema])
            try:
                # commits only when the data changes the schema (a new column, a promotion)
                with table.update_schema() as update:
                    update.union_by_name(wanted)
                return table
            except CommitFailedException:  # another writer evolved it first: look again
                if attempt == COMMIT_ATTEMPTS:
                    raise
                self._commit_retries += 1
        return catalog.load_table(identifier)

    @staticmethod
    def conform(table: "Table", data: "pa.Table") -> "pa.Table":
        """Cast data to the table's Arrow schema (column order, types, nullability)."""
        import pyarrow as pa

        target = table.schema().as_arrow()
        fields, columns = [], []
        for field in target:
            if field.name in data.column_names:
                column = data.column(field.name)
                if not _same_iceberg_type(column.type, field.type):
                    column = column.cast(field.type)
                fields.append(pa.field(field.name, column.type, field.nullable))
                columns.append(column)
            else:
                fields.append(pa.field(field.name, field.type, field.nullable))
                columns.append(pa.nulls(data.num_rows, type=field.type))
        return pa.Table.from_arrays(columns, schema=pa.schema(fields))

    def replace_partition(self, identifier: str, data: "pa.Table", column: str, value: Any) -> dict:
        """Atomically replace every row where ``column == value`` with ``data``.

        One commit holds both the delete and the new file, so readers see the
        old partition or the new one, never neither and never both.
        """
        from pyiceberg.expressions import EqualTo

        _require_partition_rows(data, column, value)
        table = self.ensure_table(identifier, data.schema, partition_by=column)
        literal = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value
        predicate = EqualTo(column, literal)
        return self._commit(table, data, delete=predicate, partition_path=f"{column}={literal}")

    def replace_where(self, identifier: str, data: "pa.Table", predicate: Any, partition_by: str | None = None) -> dict:
        """Atomically replace the rows matching a pyiceberg predicate with ``data``."""
        table = self.ensure_table(identifier, data.schema, partition_by=partition_by)
        return self._commit(table, data, delete=predicate)

    def append(self, identifier: str, data: "pa.Table", partition_by: str | None = None) -> dict:
        table = self.ensure_table(identifier, data.schema, partition_by=partition_by)
        if partition_by:
            values = data.column(partition_by).unique().to_pylist()
            if len(values) == 1:
                value = values[0]
                literal = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value
                return self._commit(table, data, partition_path=f"{partition_by}={literal}")
            table.append(self.conform(table, data))  # several partitions: let pyiceberg split
            return self.write_metadata(table, data.num_rows)
        return self._commit(table, data)

    def _commit(self, table: "Table", data: "pa.Table", delete: Any = None, partition_path: str | None = None) -> dict:
        """Write ``data`` as one Parquet file and commit it (after an optional delete) in one snapshot.

        Writing the file with pyarrow and registering it with ``add_files`` is
        ~2x faster than pyiceberg's own writer at 1M rows; the file name is a
        fresh UUID, so the duplicate-file scan (which grows with history) is skipped.

        Concurrency is optimistic, as Iceberg intends. pyiceberg itself re-bases a
        commit that raced with a writer of *other* rows; when the other writer
        touched the rows we replace, it refuses (``ValidationException``) and we
        redo the whole replacement on the new snapshot — the delete re-evaluated
        there, the same data file added, so the last writer wins and nothing is
        duplicated — up to ``COMMIT_ATTEMPTS`` times. Dagster pools keep one
        writing step per table (pipelines/pools.py); this covers every other
        writer (the CLI, services, a second code location).
        """
        import uuid

        import pyarrow.parquet as pq
        from pyiceberg.exceptions import CommitFailedException, ValidationException

        # conform() builds plain fields: add_files maps columns by name, and the
        # file must not carry Iceberg field ids
        conformed = self.conform(table, data)
        path = None
        if conformed.num_rows:
            folder = f"{table.location().rstrip('/')}/data"
            if partition_path:
                folder = f"{folder}/{partition_path}"
            path = f"{folder}/{uuid.uuid4()}.parquet"
            with table.io.new_output(path).create(overwrite=False) as stream:
                pq.write_table(conformed, stream, compression="snappy")
        identifier = ".".join(table.name()[-2:])
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                with table.transaction() as tx:
                    if delete is not None:
                        with warnings.catch_warnings():  # an empty partition is a normal first write
                            warnings.filterwarnings("ignore", message="Delete operation did not match any records")
                            tx.delete(delete)
                    if path is not None:
                        tx.add_files([path], check_duplicate_files=False)
                break
            except (CommitFailedException, ValidationException):
                if attempt == COMMIT_ATTEMPTS:
                    raise  # the table keeps its last committed snapshot; the unreferenced file is an orphan
                self._commit_retries += 1
                commit_backoff(attempt)
                table = self.load_table(identifier)
        return self.write_metadata(table, data.num_rows)

    def write_metadata(self, table: "Table", rows_written: int) -> dict:
        table.refresh()
        snapshot = table.current_snapshot()
        summary = snapshot.summary if snapshot else None
        return {
            "table": ".".join(table.name()[-2:]),
            "rows_written": rows_written,
            "snapshot_id": snapshot.snapshot_id if snapshot else None,
            "total_rows": int(summary["total-records"]) if summary and "total-records" in summary else 0,
            "metadata_location": table.metadata_location,
        }

    def read(self, identifier: str, row_filter: Any = None, columns: tuple[str, ...] | None = None,
             snapshot_id: int | None = None) -> "pa.Table":
        from pyiceberg.expressions import AlwaysTrue

        table = self.load_table(identifier)
        scan = table.scan(
            row_filter=row_filter if row_filter is not None else AlwaysTrue(),
            selected_fields=columns or ("*",),
            snapshot_id=snapshot_id,
        )
        return scan.to_arrow()

    def read_partition(self, identifier: str, column: str, value: Any) -> "pa.Table":
        from pyiceberg.expressions import EqualTo

        literal = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value
        return self.read(identifier, row_filter=EqualTo(column, literal))

    def list_tables(self) -> list[str]:
        catalog = self.catalog()
        out = []
        for namespace in catalog.list_namespaces():
            for identifier in catalog.list_tables(namespace):
                out.append(".".join(identifier))
        return sorted(out)

    def describe(self, identifier: str) -> dict:
        """Row count, snapshot id and last update from table metadata (no data scan)."""
        table = self.load_table(identifier)
        snapshot = table.current_snapshot()
        rows = int(snapshot.summary["total-records"]) if snapshot and snapshot.summary and "total-records" in snapshot.summary else 0
        updated = (
            dt.datetime.fromtimestamp(table.metadata.last_updated_ms / 1000, tz=dt.timezone.utc)
            if table.metadata.last_updated_ms
            else None
        )
        return {
            "table": identifier,
            "rows": rows,
            "snapshot_id": snapshot.snapshot_id if snapshot else None,
            "last_updated": updated,
            "snapshots": len(table.metadata.snapshots),
        }
