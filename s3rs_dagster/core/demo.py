"""The whole job on the embedded default: SQLite source -> file:// Parquet lake -> DuckDB.

`run_demo` builds a sample `settle_orders` table (shaped like the existing tool's: money in
DECIMAL, timestamps with ties, NULLs, unicode, a column named `190_time` that the warehouse
cannot take as is), writes a pipelines.yaml for it, runs a full sync, changes the source
(new rows, updated rows), runs an incremental sync and validates the counts. Nothing but
Python is needed; the same folder then opens in Dagster (`S3RS_CONFIG=<dir>/pipelines.yaml`).
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from s3rs_dagster.config import Config, load_config
from s3rs_dagster.core.counts import CountReport, count_table
from s3rs_dagster.core.sync import TableRun, sync_pipeline

MARKER = ".s3rs-demo"
"""A file that marks a folder as the demo's own, so a rerun may clear it."""
PIPELINE = "demo"
TABLE = "main.settle_orders"
DEFAULT_ROWS = 100_000

CONFIG = """\
# Written by `s3rs demo`: the embedded default, no servers needed.
connections:
  sources:
    demo_sqlite:
      type: sqlite
      path: source.sqlite
      time_zone: "+00:00"
  targets:
    demo_duckdb:
      type: duckdb
      path: warehouse.duckdb
      schema: settlement

storage:
  url: lake

pipelines:
  demo:
    description: The demo's SQLite settle_orders into DuckDB through a local Parquet lake.
    source: demo_sqlite
    target: demo_duckdb
    processing:
      batch_size: 50000
    tables:
      main.settle_orders:
        cdc_strategy: hybrid
        cdc_timestamp_column: updated_at
        cdc_id_column: id
        partitioning: daily
        start_date: {start_date}
"""

_DDL = """
CREATE TABLE settle_orders (
    id INTEGER PRIMARY KEY,
    order_no VARCHAR(32) NOT NULL,
    merchant_id INTEGER NOT NULL,
    customer_name VARCHAR(64),
    amount DECIMAL(12,2) NOT NULL,
    fee DECIMAL(10,4),
    currency VARCHAR(3) NOT NULL,
    status VARCHAR(16) NOT NULL,
    note VARCHAR(255),
    "190_time" VARCHAR(8),
    settled_at DATETIME,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL
)
"""
_INDEX = "CREATE INDEX settle_orders_updated ON settle_orders (updated_at, id)"
_NAMES = ["Zoë", "Łukasz", "José", "Ngozi", "李雷", "Søren", "Ана", "O'Brien", "Ayşe", "🙂 Kim"]
_STATUSES = ["settled"] * 6 + ["pending"] * 3 + ["refunded"]
_CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CNY"]
DAYS = 7


@dataclass
class StageFigures:
    """One stage of one sync: rows, files, bytes and rate."""

    rows: int = 0
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SyncFigures:
    name: str
    extract: StageFigures = field(default_factory=StageFigures)
    load: StageFigures = field(default_factory=StageFigures)
    ok: bool = True
    error: str | None = None


@dataclass
class DemoReport:
    folder: Path
    config_path: Path
    source_rows: int
    syncs: list[SyncFigures]
    counts: CountReport
    seconds: float

    @property
    def ok(self) -> bool:
        return all(sync.ok for sync in self.syncs) and self.counts.verdict == "ok"


Echo = Callable[[str], None]


def run_demo(folder: Path, *, rows: int = DEFAULT_ROWS, echo: Echo = print) -> DemoReport:
    """Build the demo in `folder` (cleared first if it is a previous demo's) and run it."""
    started = time.monotonic()
    folder = _prepare(folder)
    now = datetime.now(UTC).replace(tzinfo=None)
    first_day = (now - timedelta(days=DAYS)).date()
    config_path = folder / "pipelines.yaml"
    config_path.write_text(CONFIG.format(start_date=first_day.isoformat()), encoding="utf-8")
    source = folder / "source.sqlite"
    echo(f"source: {rows:,} orders over {DAYS} days in {source}")
    _create_source(source, rows, now)
    config = load_config(config_path)

    syncs = [_sync(config, "full sync", echo)]
    changed = _change_source(source, now, rows)
    echo(f"source: {changed['inserted']:,} orders added, {changed['updated']:,} updated")
    syncs.append(_sync(config, "incremental sync", echo))
    counts = count_table(config, PIPELINE, TABLE)
    with sqlite3.connect(source) as connection:
        total = int(connection.execute("SELECT COUNT(*) FROM settle_orders").fetchone()[0])
    return DemoReport(folder, config_path, total, syncs, counts, seconds=time.monotonic() - started)


def _prepare(folder: Path) -> Path:
    folder = folder.expanduser().resolve()
    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).exists():
            raise DemoError(
                f"{folder} is not empty and not a previous demo's folder; "
                "choose an empty or new folder with --dir"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by `s3rs demo`; rerunning the demo clears this folder\n")
    return folder


class DemoError(Exception):
    """The demo cannot run as asked; the message says why."""


def _create_source(path: Path, rows: int, now: datetime) -> None:
    rng = random.Random(20250909)
    with sqlite3.connect(path) as connection:
        connection.execute(_DDL)
        connection.execute(_INDEX)
        batch: list[tuple[object, ...]] = []
        for order_id in range(1, rows + 1):
            batch.append(_order(rng, order_id, now))
            if len(batch) == 10_000:
                _insert(connection, batch)
                batch = []
        _insert(connection, batch)


def _order(rng: random.Random, order_id: int, now: datetime) -> tuple[object, ...]:
    # Busy hours: many orders share a second, so the cursor's (updated_at, id) ties matter.
    created = now - timedelta(seconds=rng.randint(60, DAYS * 86_400 - 60))
    if rng.random() < 0.4:
        created = created.replace(microsecond=0)
    else:
        created = created.replace(microsecond=rng.randrange(1_000_000))
    status = rng.choice(_STATUSES)
    amount = Decimal(rng.lognormvariate(3.5, 1.1)).quantize(Decimal("0.01"))
    settled = created + timedelta(minutes=rng.randint(1, 600)) if status == "settled" else None
    if settled is not None and settled > now:
        settled = None
    return (
        order_id,
        f"SO-{order_id:09d}",
        rng.randint(1, 500),
        rng.choice(_NAMES) if rng.random() > 0.05 else None,
        str(amount),
        str((amount * Decimal("0.029")).quantize(Decimal("0.0001")))
        if rng.random() > 0.1
        else None,
        rng.choice(_CURRENCIES),
        status,
        rng.choice(["", "gift 🎁", "express", "über-fast", None, None]),
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        _text(settled),
        _text(created),
        _text(created),
    )


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _insert(connection: sqlite3.Connection, batch: list[tuple[object, ...]]) -> None:
    connection.executemany(f"INSERT INTO settle_orders VALUES ({', '.join('?' * 13)})", batch)


def _change_source(path: Path, before: datetime, rows: int) -> dict[str, int]:
    """New orders and updates to old ones (refunds), all stamped after the first sync."""
    rng = random.Random(7)
    now = datetime.now(UTC).replace(tzinfo=None)
    inserted = max(rows // 100, 1)
    updated = max(rows // 50, 1)
    with sqlite3.connect(path) as connection:
        _insert(
            connection,
            [
                (*_order(rng, order_id, now)[:11], _text(now), _text(now))
                for order_id in range(rows + 1, rows + inserted + 1)
            ],
        )
        ids = rng.sample(range(1, rows + 1), updated)
        stamp = _text(max(now, before))
        connection.executemany(
            "UPDATE settle_orders SET status = 'refunded', amount = ROUND(amount + 0.01, 2), "
            "updated_at = ? WHERE id = ?",
            [(stamp, order_id) for order_id in ids],
        )
    return {"inserted": inserted, "updated": updated}


def _sync(config: Config, name: str, echo: Echo) -> SyncFigures:
    echo(f"{name}: extracting and loading ...")
    [run] = sync_pipeline(config, PIPELINE, [TABLE])
    figures = _figures(name, run)
    echo(
        f"{name}: extracted {figures.extract.rows:,} rows into {figures.extract.files} files "
        f"({figures.extract.bytes / 1e6:.1f} MB, {figures.extract.rate:,.0f} rows/s); "
        f"loaded {figures.load.rows:,} rows ({figures.load.rate:,.0f} rows/s)"
    )
    return figures


def _figures(name: str, run: TableRun) -> SyncFigures:
    figures = SyncFigures(name, ok=run.ok)
    if run.extract is not None:
        report = run.extract
        figures.extract = StageFigures(report.rows, report.files, report.bytes, report.seconds)
        figures.error = report.error
    if run.load is not None:
        report = run.load
        figures.load = StageFigures(report.rows, report.files, 0, report.seconds)
        figures.error = figures.error or report.error
    return figures
