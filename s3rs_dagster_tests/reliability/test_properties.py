"""The invariants of DESIGN.md §5 as a property: whatever the schedule, nothing lost or twice.

Hypothesis draws schedules of source inserts, updates and deletes, syncs with random
`--limit`/`--max-chunks`, and crashes: a sync that dies after its n-th committed file (the
progress callback raises an exception that no `except Exception` can swallow, so the
process-level clean-up paths are the only ones that run, as in a kill; the real `kill -9` is
test_faults.py's). After the schedule, a catch-up sync and a refresh of every window the
rows ever touched must leave the target equal to the source: same rows, same versions,
deletes carried, no key twice, no file loaded twice, and the watermark's loaded count equal
to COUNT(*).

Each example gets its own table, DuckDB file and file:// lake, against the real MariaDB.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.config import Config
from s3rs_dagster.core.counts import count_table
from s3rs_dagster.core.extract import Progress, extract_table
from s3rs_dagster.core.load import load_table
from s3rs_dagster.core.state import WatermarkStore
from s3rs_dagster.core.sync import sync_pipeline
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import SourceDb
from s3rs_dagster_tests.reliability.helpers import HYBRID, build_config, target_query

EXAMPLES = 25
FIRST_DAY = datetime(2025, 3, 1)
STEP = timedelta(hours=7)  # the source's clock moves on between steps, across day windows
TOTALS = {"examples": 0, "steps": 0, "syncs": 0, "crashes": 0}


class Crash(BaseException):
    """A process dying mid-run: not an Exception, so no error handler turns it into a report."""


@dataclass(frozen=True)
class Insert:
    rows: int


@dataclass(frozen=True)
class Update:
    fraction: float


@dataclass(frozen=True)
class Delete:
    fraction: float


@dataclass(frozen=True)
class Sync:
    limit: int
    max_chunks: int | None
    crash_after_files: int | None


Step = Insert | Update | Delete | Sync

steps = st.lists(
    st.one_of(
        st.builds(Insert, st.integers(1, 25)),
        st.builds(Update, st.floats(0.05, 0.6)),
        st.builds(Delete, st.floats(0.05, 0.3)),
        st.builds(
            Sync,
            st.integers(1, 12),
            st.one_of(st.none(), st.integers(1, 3)),
            st.one_of(st.none(), st.integers(1, 3)),
        ),
    ),
    min_size=2,
    max_size=9,
)


class Schedule:
    """Applies steps to one table of the source and one pipeline over it."""

    def __init__(self, db: SourceDb, config: Config, table: str) -> None:
        self.db = db
        self.config = config
        self.table = table
        self.clock = FIRST_DAY
        self.next_id = 1
        self.days: set[date] = set()
        self.crashes = 0

    def apply(self, step: Step) -> None:
        self.clock += STEP
        self.days.add(self.clock.date())
        if isinstance(step, Insert):
            ids = range(self.next_id, self.next_id + step.rows)
            self.next_id += step.rows
            self._write(ids, "insert")
        elif isinstance(step, Update):
            self._write(self._sample(step.fraction), "update")
        elif isinstance(step, Delete):
            for key in self._sample(step.fraction):
                self.db.execute(f"DELETE FROM `{self.table}` WHERE id = %s", (key,))
        else:
            self._sync(step)

    def _sample(self, fraction: float) -> list[int]:
        ids = [row[0] for row in self.db.execute(f"SELECT id FROM `{self.table}` ORDER BY id")]
        return ids[:: max(1, round(1 / fraction))]

    def _write(self, ids: range | list[int], note: str) -> None:
        rows = [
            (i, self.clock + timedelta(microseconds=i % 3), Decimal(i) / 8, f"{note} {i} é")
            for i in ids
        ]
        if rows:
            self.db.executemany(
                f"INSERT INTO `{self.table}` (id, updated_at, amount, note) "
                "VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
                "updated_at = VALUES(updated_at), amount = VALUES(amount), note = VALUES(note)",
                rows,
            )

    def _sync(self, step: Sync) -> None:
        progress: Callable[[Progress], None] | None = None
        if step.crash_after_files is not None:
            crash_at = step.crash_after_files

            def progress(update: Progress) -> None:
                if update.files >= crash_at:
                    raise Crash

        try:
            sync_pipeline(
                self.config,
                "p",
                limit=step.limit,
                max_chunks=step.max_chunks,
                progress=progress,
            )
        except Crash:
            self.crashes += 1

    def finish(self) -> None:
        """Catch up, then refresh every window rows ever lived in (carries the deletes)."""
        run = sync_pipeline(self.config, "p")[0]
        assert run.ok, (run.extract and run.extract.error, run.load and run.load.error)
        for day in sorted(self.days):
            refresh = extract_table(self.config, "p", self.table, partition=str(day), refresh=True)
            assert refresh.ok, refresh.error
            loaded = load_table(self.config, "p", self.table, refresh_run=refresh.run_id)
            assert loaded.ok, loaded.error


def _create(db: SourceDb, table: str) -> None:
    db.execute(
        f"CREATE TABLE `{table}` (id BIGINT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
        "amount DECIMAL(12,3), note VARCHAR(60) NULL, KEY by_updated (updated_at, id))"
    )


def _rows(config: Config, stack: Stack, table: str) -> list[tuple[Any, ...]]:
    schema = config.connections.targets["wh"].schema_
    return target_query(
        config, stack, f'SELECT id, updated_at, amount, note FROM "{schema}"."{table}" ORDER BY id'
    )


@pytest.mark.reliability(
    f"{EXAMPLES} random schedules (hypothesis): inserts, updates, deletes, syncs with random "
    "--limit/--max-chunks, crashes after a random committed file; then a catch-up sync and a "
    "refresh of every window",
    "the target equals the source (deletes included), no key twice, no file loaded twice, "
    "the watermark's loaded count equals COUNT(*), validate-counts agrees",
)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=steps)
def test_any_schedule_of_changes_syncs_and_crashes_ends_with_the_target_equal_to_the_source(
    schedule: list[Step],
    source_db: SourceDb,
    stack: Stack,
    tmp_path: Path,
    reliability_note: Callable[..., None],
) -> None:
    table = f"orders_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / table
    folder.mkdir()
    _create(source_db, table)
    config = build_config(
        stack,
        source_db,
        folder,
        {table: HYBRID},
        target="duckdb",
        storage={"url": str(folder / "lake")},
    )
    runner = Schedule(source_db, config, table)
    for step in schedule:
        runner.apply(step)
    runner.finish()

    source = [tuple(row) for row in source_db.execute(
        f"SELECT id, updated_at, amount, note FROM `{table}` ORDER BY id"
    )]  # fmt: skip
    target = _rows(config, stack, table)
    keys = [row[0] for row in target]
    assert len(keys) == len(set(keys)), "a primary key appears twice in the target"
    assert target == source
    schema = config.connections.targets["wh"].schema_
    twice = target_query(
        config,
        stack,
        f'SELECT file_key FROM "{schema}".s3rs_loaded_files GROUP BY file_key HAVING COUNT(*) > 1',
    )
    assert twice == [], f"files loaded twice: {twice}"
    store = WatermarkStore(open_storage(config.storage), "p", f"{source_db.name}.{table}", "wh")
    watermark, _ = store.load()
    assert watermark.redshift_state.total_rows == len(source)
    counts = count_table(config, "p", table)
    assert counts.verdict == "ok", counts
    TOTALS["examples"] += 1
    TOTALS["steps"] += len(schedule)
    TOTALS["syncs"] += sum(isinstance(step, Sync) for step in schedule)
    TOTALS["crashes"] += runner.crashes
    reliability_note(
        f"{TOTALS['examples']} schedules, {TOTALS['steps']} steps, {TOTALS['syncs']} syncs, "
        f"{TOTALS['crashes']} crashes mid-sync",
        replace=True,
    )
