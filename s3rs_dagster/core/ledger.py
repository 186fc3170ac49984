"""Read-only view of the load ledger (`<schema>.s3rs_loaded_files` in the target).

The ledger is the only authority on which files are in the warehouse (docs/decisions.md);
`watermark get --show-files`, `status` and `s3clean` read it here, never write it.
"""

from __future__ import annotations

from s3rs_dagster.adapters.warehouse import open_warehouse
from s3rs_dagster.adapters.warehouse.base import qualified
from s3rs_dagster.config import Config
from s3rs_dagster.core.target import LEDGER_TABLE


def loaded_files(config: Config, pipeline: str, table: str) -> dict[str, int]:
    """{file key: rows} of every file the ledger records for this pipeline's source table.

    Raises WarehouseError (or TunnelError) when the target cannot be read.
    """
    table_key, _ = config.table(pipeline, table)
    target_name = config.pipeline(pipeline).target
    warehouse = open_warehouse(target_name, config.target_for(pipeline), config.storage)
    with warehouse.connect(read_only=True) as session:
        if session.columns(warehouse.schema, LEDGER_TABLE) is None:
            return {}
        p = session.placeholder
        rows = session.query(
            f"SELECT file_key, file_rows FROM {qualified(warehouse.schema, LEDGER_TABLE)} "
            f"WHERE pipeline = {p} AND source_table = {p}",
            (pipeline, table_key),
        )
    return {str(key): int(count) for key, count in rows}
