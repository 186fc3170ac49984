"""core.counts: counts side by side and the verdict, through the API Dagster's checks will use."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from s3rs_dagster.config import Config
from s3rs_dagster.core.counts import count_table
from s3rs_dagster.core.sync import sync_pipeline
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb

BASE_TIME = datetime(2025, 3, 1, 12, 0, 0)
EVENTS_DDL = """
CREATE TABLE events (
  id BIGINT NOT NULL,
  updated_at DATETIME(6) NULL,
  note VARCHAR(40)
)
"""


def insert(db: SourceDb, ids: range, when: datetime | None) -> None:
    db.executemany(
        "INSERT INTO events (id, updated_at, note) VALUES (%s, %s, %s)",
        [(i, when and when + timedelta(seconds=i), f"n{Decimal(i)}") for i in ids],
    )


def test_append_table_counts_and_the_cursor_bound(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(EVENTS_DDL)
    insert(source_db, range(1, 21), BASE_TIME)
    config: Config = make_config(
        {"events": {"cdc_strategy": "timestamp_only", "start_date": "2025-03-01"}},
        local_storage=True,
    )
    table = f"{source_db.name}.events"
    assert sync_pipeline(config, "p", limit=8, max_chunks=1)[0].ok
    report = count_table(config, "p", table)
    assert report.write_mode == "append"
    assert (report.source_rows, report.source_rows_total) == (8, 20), "bounded by the cursor"
    assert (report.file_rows, report.loaded_rows, report.target_rows) == (8, 8, 8)
    assert report.verdict == "behind" and report.ok
    assert "12 source row(s) are past the watermark's cursor" in " ".join(report.notes)
    insert(source_db, range(100, 103), datetime(2024, 1, 1))  # before start_date: not counted
    insert(source_db, range(200, 202), None)  # NULL cursor, no key: never extracted
    assert sync_pipeline(config, "p")[0].ok
    report = count_table(config, "p", table)
    assert (report.source_rows, report.source_rows_total, report.target_rows) == (20, 20, 20)
    assert report.verdict == "ok", report.problems


def test_an_unreachable_target_gives_verdict_unknown(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    source_db.execute(EVENTS_DDL)
    insert(source_db, range(1, 4), BASE_TIME)
    config = make_config(
        {"events": {"cdc_strategy": "timestamp_only", "start_date": "2025-03-01"}},
        local_storage=True,
        target="postgres",
    )
    target = config.connections.targets["wh"].model_copy(update={"port": 1})
    broken = config.with_connections(targets={"wh": target})
    report = count_table(broken, "p", f"{source_db.name}.events")
    assert report.verdict == "unknown" and not report.ok
    assert report.source_rows_total == 3
    assert report.problems[0].startswith("cannot count the target 'wh'")
