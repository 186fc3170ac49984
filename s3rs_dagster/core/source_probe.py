"""Read-only questions to a table's source: its CDC cursor spec, and counts along that cursor.

The administrative commands (watermark set, validate-counts) must speak the extract stage's
cursor language exactly: the same reflected columns, the same texts for timestamps (TIMESTAMP
values in UTC, DATETIME values as wall-clock text of the source's zone, epochs as integers) and
the same keyset conditions (`core.cursor.after`). So they reflect the table the same way and
query in a UTC session over the raw text protocol, as extraction does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from sqlalchemy.exc import DBAPIError

from s3rs_dagster.adapters.source import (
    ConnectionLost,
    SourceConnection,
    SourceError,
    explain_source_error,
    open_source,
)
from s3rs_dagster.config import Config, TableConfig
from s3rs_dagster.core.cursor import CursorSpec, resolve_cursor, zone_of
from s3rs_dagster.core.schema import SourceTable, quote_mysql, reflect_table


@dataclass
class SourceProbe:
    """An open, read-only view of one source table; use through `probe_source`."""

    table: SourceTable
    spec: CursorSpec
    zone: tzinfo
    table_config: TableConfig
    _connection: SourceConnection

    @property
    def table_sql(self) -> str:
        return f"{quote_mysql(self.table.schema)}.{quote_mysql(self.table.name)}"

    def rows(self, sql: str, params: list[object]) -> list[tuple[Any, ...]]:
        """Run a query; values arrive as text (as the extract stage reads them)."""
        try:
            return self._connection.rows(sql, params)
        except ConnectionLost as exc:
            raise SourceError(f"lost the connection to the source: {exc}") from None

    def count(self, conditions: list[str], params: list[object]) -> int:
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return int(self.rows(f"SELECT COUNT(*) FROM {self.table_sql}{where}", params)[0][0])


@contextmanager
def probe_source(config: Config, pipeline: str, table: str) -> Iterator[SourceProbe]:
    """Reflect `table` and resolve its cursor; yield a probe holding a UTC raw connection."""
    table_key, table_config = config.table(pipeline, table)
    source_name = config.pipeline(pipeline).source
    source = config.connections.sources[source_name]
    schema, _, name = table_key.partition(".")
    with open_source(source) as meta, open_source(source, raw_text=True) as raw:
        try:
            with meta.connect() as connection:
                reflected = reflect_table(connection, schema, name)
        except DBAPIError as exc:
            raise explain_source_error(exc, source, source_name) from None
        connection_raw = SourceConnection(raw, source, source_name)
        try:
            yield SourceProbe(
                table=reflected,
                spec=resolve_cursor(reflected, table_config),
                zone=zone_of(source.time_zone),
                table_config=table_config,
                _connection=connection_raw,
            )
        finally:
            connection_raw.close()
