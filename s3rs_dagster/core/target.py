"""A table's target in the warehouse: its name, and what it holds (rows, columns, ledger total).

The load stage names the target with `target_table_name`; Dagster's metadata and row-count
checks read `target_facts` read-only, through the same warehouse adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from s3rs_dagster.adapters.warehouse import WarehouseType, open_warehouse
from s3rs_dagster.adapters.warehouse.base import qualified, quote
from s3rs_dagster.config import (
    Config,
    ConfigError,
    ConfigProblem,
    TableConfig,
    format_key_path,
)
from s3rs_dagster.core.schema import IDENTIFIER_BYTES, sanitize_column_names

LEDGER_TABLE = "s3rs_loaded_files"
"""The ledger of loaded files, in the target's schema (see docs/decisions.md)."""


@dataclass(frozen=True)
class TargetFacts:
    table: str
    """`schema.table` in the warehouse."""
    rows: int | None
    """COUNT(*) of the target table; None when it does not exist yet."""
    columns: dict[str, WarehouseType]
    ledger_rows: int
    """The rows of every file the ledger records for this source table."""


def target_table_name(table: str, table_config: TableConfig, target_type: str = "redshift") -> str:
    """The target table of `schema.table`: its configured target_name, else its sanitised name
    (cut to what the warehouse keeps whole: 63 bytes on PostgreSQL, 127 elsewhere)."""
    if table_config.target_name:
        return table_config.target_name
    name = table.partition(".")[2]
    return sanitize_column_names([name], max_bytes=IDENTIFIER_BYTES[target_type])[name]


def check_target_names(config: Config, pipelines: list[str] | None = None) -> None:
    """Refuse two tables of one pipeline that would load into the same target table.

    Sanitising can map different source names to one target name (`na"me` and `na'me` both
    become `na_me`); loading both would merge two tables into one. A ConfigError names the
    tables and `target_name` as the fix.
    """
    problems = []
    for pipeline in pipelines or sorted(config.pipelines):
        target_type = config.target_for(pipeline).type
        by_target: dict[str, list[str]] = {}
        for table, table_config in config.pipeline(pipeline).tables.items():
            name = target_table_name(table, table_config, target_type).lower()
            by_target.setdefault(name, []).append(table)
        for name, tables in sorted(by_target.items()):
            if len(tables) > 1:
                listed = " and ".join(repr(table) for table in tables)
                problems.append(
                    ConfigProblem(
                        format_key_path(("pipelines", pipeline, "tables")),
                        f"tables {listed} would all load into the target table '{name}'; "
                        "give all but one of them a target_name of its own, e.g. "
                        f"target_name: {name}_2",
                    )
                )
    if problems:
        raise ConfigError(config.source_file, problems)


def target_facts(config: Config, pipeline: str, table: str) -> TargetFacts:
    """Read the target's row count, columns and ledger total in one read-only session."""
    table_key, table_config = config.table(pipeline, table)
    target_name = config.pipeline(pipeline).target
    warehouse = open_warehouse(target_name, config.target_for(pipeline), config.storage)
    name = target_table_name(table_key, table_config, config.target_for(pipeline).type)
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


def target_window_rows(
    config: Config, pipeline: str, table: str, column: str, kind: str, start: str, end: str
) -> int | None:
    """COUNT(*) of the target's rows with `column` in [start, end); None if there is no table.

    The bounds are texts as a WindowCount holds them; `kind` says how to type them: epoch
    (integers), date, datetime (naive wall clock) or timestamp (an aware instant).
    """
    table_key, table_config = config.table(pipeline, table)
    warehouse = open_warehouse(
        config.pipeline(pipeline).target, config.target_for(pipeline), config.storage
    )
    name = target_table_name(table_key, table_config, config.target_for(pipeline).type)
    bounds = (_typed(start, kind), _typed(end, kind))
    with warehouse.connect(read_only=True) as session:
        if session.columns(warehouse.schema, name) is None:
            return None
        p = session.placeholder
        quoted = quote(column)
        result = session.query(
            f"SELECT COUNT(*) FROM {qualified(warehouse.schema, name)} "
            f"WHERE {quoted} >= {p} AND {quoted} < {p}",
            bounds,
        )
    return int(result[0][0])


def _typed(text: str, kind: str) -> int | date | datetime:
    if kind == "epoch":
        return int(text)
    if kind == "date":
        return date.fromisoformat(text)
    return datetime.fromisoformat(text)
