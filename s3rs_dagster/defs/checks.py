"""Per warehouse asset, a row-count check against the watermark and the ledger.

- The target's COUNT(*) must equal the watermark's `redshift_state.total_rows`, which every
  load sets to a fresh count: a difference means something else wrote to the table.
- It must not exceed the rows of the files the ledger records. Fewer is expected, not an error:
  a merge keeps one row per key of many versions, and a window refresh records the files it
  superseded. More means rows came from outside the load stage.

The check reads the whole table, so it is not partitioned; it can be run at any time from the
UI. Each load also checks its own window (`batch_checks.py`). No `from __future__ import
annotations`: Dagster reads the check's `context` annotation at definition time.
"""

import dagster as dg

from s3rs_dagster.config import Config
from s3rs_dagster.core.state import WatermarkStore
from s3rs_dagster.core.target import target_facts
from s3rs_dagster.defs.assets import TableAssets
from s3rs_dagster.defs.resources import STORAGE_KEY, runtime_config, warehouse_key


def build_checks(config: Config, tables: list[TableAssets]) -> list[dg.AssetChecksDefinition]:
    return [_row_count_check(config, assets) for assets in tables]


def _row_count_check(config: Config, assets: TableAssets) -> dg.AssetChecksDefinition:
    pipeline, table = assets.pipeline, assets.table
    target_name = config.pipeline(pipeline).target
    resource_key = warehouse_key(target_name)

    @dg.asset_check(
        asset=assets.warehouse,
        name="row_count_matches_state",
        description=(
            "The target's row count equals the watermark's redshift_state.total_rows and is "
            "at most the rows of the files in the ledger."
        ),
        required_resource_keys={STORAGE_KEY, resource_key},
    )
    def row_count_matches_state(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        storage_resource = getattr(context.resources, STORAGE_KEY)
        run_config = runtime_config(
            config,
            storage=storage_resource,
            warehouses={target_name: getattr(context.resources, resource_key)},
        )
        facts = target_facts(run_config, pipeline, table)
        storage = storage_resource.get_storage()
        store = WatermarkStore(storage, pipeline, table, target_name)
        state_rows = store.load()[0].redshift_state.total_rows
        if facts.rows is None:
            return dg.AssetCheckResult(
                passed=False, metadata={"problem": f"{facts.table} does not exist (yet)"}
            )
        vs_state = facts.rows - state_rows
        over_ledger = max(facts.rows - facts.ledger_rows, 0)
        problems = []
        if vs_state:
            problems.append(
                f"{facts.table} has {abs(vs_state)} {'more' if vs_state > 0 else 'fewer'} rows "
                f"({facts.rows}) than the last load left ({state_rows})"
            )
        if over_ledger:
            problems.append(f"{over_ledger} rows more than the loaded files hold")
        return dg.AssetCheckResult(
            passed=not problems,
            description="; ".join(problems) or None,
            metadata={
                "target_rows": facts.rows,
                "watermark_rows": state_rows,
                "ledger_rows": facts.ledger_rows,
                "target_minus_watermark": vs_state,
                "target_rows_beyond_ledger": over_ledger,
            },
        )

    return row_count_matches_state
