"""What the warehouse holds for one table: its rows, its columns and its ledger's row total.

The load stage keeps these private (it counts after each load); the asset's metadata and the
row-count check need them read-only, through the same warehouse adapter, on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

from s3rs_dagster.adapters.warehouse import WarehouseType, open_warehouse
from s3rs_dagster.adapters.warehouse.base import qualified
from s3rs_dagster.config import Config
from s3rs_dagster.core.load import LEDGER_TABLE
from s3rs_dagster.core.schema import sanitize_column_names


@dataclass(frozen=True)
class TargetFacts:
    table: str
    """`schema.table` in the warehouse."""
    rows: int | None
    """COUNT(*) of the target table; None when it does not exist yet."""
    columns: dict[str, WarehouseType]
    ledger_rows: int
    """The rows of every file the ledger records for this source table."""


def target_table_name(config: Config, pipeline: str, table: str) -> str:
    """The target table's name, as the load stage names it."""
    table_key, table_config = config.table(pipeline, table)
    if table_config.target_name:
        return table_config.target_name
    name = table_key.partition(".")[2]
    return sanitize_column_names([name])[name]


def target_facts(config: Config, pipeline: str, table: str) -> TargetFacts:
    """Read the target's row count, columns and ledger total in one read-only session."""
    table_key, _ = config.table(pipeline, table)
    target_name = config.pipeline(pipeline).target
    warehouse = open_warehouse(target_name, config.target_for(pipeline), config.storage)
    name = target_table_name(config, pipeline, table)
    schema = warehouse.schema
    with warehouse.connect(read_only=True) as session:
        columns = session.columns(schema, name)
        rows = None
        if columns is not None:
            rows = int(session.query(f"SELECT COUNT(*) FROM {qualified(schema, name)}")[0][0])
        ledger_rows = 0
        if session.columns(schema, LEDGER_TABLE) is not None:
            p = session.placeholder
            result = session.query(
                f"SELECT COALESCE(SUM(file_rows), 0) FROM {qualified(schema, LEDGER_TABLE)} "
                f"WHERE pipeline = {p} AND source_table = {p}",
                (pipeline, table_key),
            )
            ledger_rows = int(result[0][0])
    return TargetFacts(f"{schema}.{name}", rows, columns or {}, ledger_rows)
