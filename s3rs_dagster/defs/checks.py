"""Per warehouse asset, a row-count check against the watermark and the ledger.

- The target's COUNT(*) must equal the watermark's `redshift_state.total_rows`, which every
  load sets to a fresh count: a difference means something else wrote to the table.
- It must not exceed the rows of the files the ledger records. Fewer is expected, not an error:
  a merge keeps one row per key of many versions, and a window refresh records the files it
  superseded. More means rows came from outside the load stage.

The check reads the whole table, so it is not partitioned.
"""

from __future__ import annotations

import dagster as dg

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.config import Config
from s3rs_dagster.core.state import WatermarkStore
from s3rs_dagster.core.target import target_facts
from s3rs_dagster.defs.assets import TableAssets


def build_checks(config: Config, tables: list[TableAssets]) -> list[dg.AssetChecksDefinition]:
    return [_row_count_check(config, assets) for assets in tables]


def _row_count_check(config: Config, assets: TableAssets) -> dg.AssetChecksDefinition:
    pipeline, table = assets.pipeline, assets.table

    @dg.asset_check(
        asset=assets.warehouse,
        name="row_count_matches_state",
        description=(
            "The target's row count equals the watermark's redshift_state.total_rows and is "
            "at most the rows of the files in the ledger."
        ),
    )
    def row_count_matches_state() -> dg.AssetCheckResult:
        facts = target_facts(config, pipeline, table)
        storage = open_storage(config.storage)
        store = WatermarkStore(storage, pipeline, table, config.pipeline(pipeline).target)
        state_rows = store.load()[0].redshift_state.total_rows
        if facts.rows is None:
            return dg.AssetCheckResult(
                passed=False, metadata={"problem": f"{facts.table} does not exist (yet)"}
            )
        vs_state = facts.rows - state_rows
        over_ledger = max(facts.rows - facts.ledger_rows, 0)
        return dg.AssetCheckResult(
            passed=vs_state == 0 and over_ledger == 0,
            metadata={
                "target_rows": facts.rows,
                "watermark_rows": state_rows,
                "ledger_rows": facts.ledger_rows,
                "target_minus_watermark": vs_state,
                "target_rows_beyond_ledger": over_ledger,
            },
        )

    return row_count_matches_state
