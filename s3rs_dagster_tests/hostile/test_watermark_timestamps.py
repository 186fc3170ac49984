"""Hostile `s3rs watermark set --timestamp` values: odd formats, offsets and zones, DST gaps and
overlaps, epochs, words, impossible dates, the far future. An accepted value is stored with an
explicit offset and means the instant the user wrote (the next sync starts exactly there); a
refused one names the value and the accepted formats, exits 2, and leaves the watermark's bytes
as they were."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.config import Config
from s3rs_dagster.core import naming
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb
from s3rs_dagster_tests.hostile.conftest import invoke

pytestmark = [pytest.mark.hostile, pytest.mark.stack]

ZONE = "America/New_York"
NEW_YORK = ZoneInfo(ZONE)
# (what the user types, the instant it means)
ACCEPTED: list[tuple[str, datetime]] = [
    ("2025-01-01T00:00:00+05:30", datetime(2024, 12, 31, 18, 30, tzinfo=UTC)),
    ("2025-01-01 00:00:00", datetime(2025, 1, 1, 5, 0, tzinfo=UTC)),  # New York wall clock
    ("2025-01-01T00:00:00Z", datetime(2025, 1, 1, 0, 0, tzinfo=UTC)),
    ("2025-01-01", datetime(2025, 1, 1, 5, 0, tzinfo=UTC)),
    ("  2025-07-01T12:00:00.250000-07:00 ", datetime(2025, 7, 1, 19, 0, 0, 250000, tzinfo=UTC)),
    ("2025-07-01 12:00", datetime(2025, 7, 1, 16, 0, tzinfo=UTC)),  # EDT in summer
    ("2025-11-02T01:30:00-05:00", datetime(2025, 11, 2, 6, 30, tzinfo=UTC)),  # offset decides
]
REFUSED = [
    "1735689600",  # epoch seconds
    "1735689600000",
    "2025-13-01",
    "2025-02-30",
    "2025-01-01T24:00:00",
    "yesterday",
    "now",
    "",
    "2025-01-01T00:00:00+25:00",
    "2025-01-01 00:00:00 UTC",
    "2025-01-01T00:00:00 Europe/Paris",
    "01/02/2025",
    "2025-01-01'; DROP TABLE orders; --",
    "9999-12-31 23:59:59",  # far future
    "9999-12-31T23:59:59-05:00",  # beyond the last representable UTC instant
    "2999-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",  # before the first representable UTC instant
    "2025-03-09 02:30:00",  # does not exist in New York (clocks jump 02:00 -> 03:00)
    "2025-11-02 01:30:00",  # happens twice in New York: which one?
]
ROWS_AT = [datetime(2024, 12, 31, 12, 0) + timedelta(hours=h) for h in range(0, 24, 1)]


def orders_table(db: SourceDb) -> None:
    db.execute(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
        "KEY by_updated (updated_at, id))"
    )
    db.executemany(
        "INSERT INTO orders (id, updated_at) VALUES (%s, %s)",
        [(i + 1, when) for i, when in enumerate(ROWS_AT)],
    )


def document_bytes(config: Config, table: str) -> bytes:
    return open_storage(config.storage).get_bytes(naming.watermark_key("p", table))[0]


def stored(config: Config, table: str) -> dict[str, Any]:
    return json.loads(document_bytes(config, table))


def setup_table(source_db: SourceDb, make_config: MakeConfig) -> tuple[Config, str, str]:
    orders_table(source_db)
    config = make_config(
        {"orders": {"cdc_strategy": "hybrid", "start_date": "2020-01-01"}},
        local_storage=True,
        source_extra={"time_zone": ZONE},
    )
    return config, str(config.source_file), f"{source_db.name}.orders"


def test_accepted_timestamps_are_stored_with_an_offset_and_mean_that_instant(
    source_db: SourceDb, make_config: MakeConfig
) -> None:
    """offsets, 'Z', naive (source zone, summer and winter), dates, padding -> stored with an
    explicit offset, the same instant; the next sync starts exactly there."""
    config, path, table = setup_table(source_db, make_config)
    for text, instant in ACCEPTED:
        result = invoke(
            "--config", path, "watermark", "set", "-p", "p", "-t", "orders", "--timestamp", text
        )
        assert result.exit_code == 0, (text, result.output)
        document = stored(config, table)
        cutoff = document["load_cutoff"]
        assert re.search(r"([+-]\d{2}:\d{2}|Z)$", cutoff), f"{text!r} stored without offset"
        assert datetime.fromisoformat(cutoff) == instant, (text, cutoff)
        last = document["mysql_state"]["last_timestamp"]
        if last is not None:
            assert re.search(r"[+-]\d{2}:\d{2}$", last), (text, last)
            assert datetime.fromisoformat(last) < instant, "the cursor sits on the row before"
        shown = invoke("--config", path, "watermark", "get", "-p", "p", "-t", "orders")
        assert shown.exit_code == 0 and cutoff in shown.output, shown.output
    # The first one again, then a sync: exactly the rows at or after the instant arrive.
    text, instant = ACCEPTED[0]
    assert (
        invoke(
            "--config", path, "watermark", "set", "-p", "p", "-t", "orders", "--timestamp", text
        ).exit_code
        == 0
    )
    synced = invoke("--config", path, "sync", "-p", "p", "-t", "orders", "--backup-only")
    assert synced.exit_code == 0, synced.output
    wanted = [when for when in ROWS_AT if when.replace(tzinfo=NEW_YORK) >= instant]
    assert f"extracted {len(wanted)} rows" in synced.output, synced.output


def test_refused_timestamps_name_the_value_and_formats_and_change_nothing(
    source_db: SourceDb, make_config: MakeConfig, tmp_path: Path
) -> None:
    """epochs, words, impossible dates, zone names, far future, DST gaps/overlaps -> exit 2
    naming the value and the accepted formats; the watermark's bytes are unchanged."""
    config, path, table = setup_table(source_db, make_config)
    synced = invoke("--config", path, "sync", "-p", "p", "-t", "orders")
    assert synced.exit_code == 0, synced.output
    before = document_bytes(config, table)
    for text in REFUSED:
        result = invoke(
            "--config", path, "watermark", "set", "-p", "p", "-t", "orders", "--timestamp", text
        )
        assert result.exit_code == 2, (text, result.output)
        assert f"--timestamp {text!r}" in result.output, (text, result.output)
        assert "2025-09-09 00:00:00+02:00" in result.output, (text, result.output)
        assert document_bytes(config, table) == before, f"{text!r} changed the watermark"
