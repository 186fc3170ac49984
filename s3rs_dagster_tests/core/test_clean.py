"""core.clean and core.watermark_admin: the parsing of ages, patterns and timestamps."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from s3rs_dagster.core.clean import CleanError, check_pattern, parse_age
from s3rs_dagster.core.watermark_admin import AdminError, parse_timestamp


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("7d", timedelta(days=7)),
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        (" 90S ", timedelta(seconds=90)),
    ],
)
def test_ages(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["", "7", "seven days", "7y", "-1d", "7d!"])
def test_bad_ages_are_refused(text: str) -> None:
    with pytest.raises(CleanError, match="use a number and a unit"):
        parse_age(text)


@pytest.mark.parametrize("pattern", ["../*", "/", "/etc/*", "dt=x/../../*", "  "])
def test_patterns_that_look_like_escaping_are_refused(pattern: str) -> None:
    with pytest.raises(CleanError):
        check_pattern(pattern)


def test_timestamps_naive_in_the_zone_aware_kept() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    summer = parse_timestamp("2025-07-01 00:00:00", berlin)
    assert summer.isoformat() == "2025-07-01T00:00:00+02:00"
    assert parse_timestamp("2025-01-01", berlin).isoformat() == "2025-01-01T00:00:00+01:00"
    assert parse_timestamp("2025-01-01T10:00:00Z", berlin).tzinfo == UTC
    offset = parse_timestamp("2025-01-01 10:00:00.5-05:00", berlin)
    assert offset.utcoffset() == timezone(timedelta(hours=-5)).utcoffset(None)


@pytest.mark.parametrize(
    "text", ["tomorrow", "2025-02-30", "2025-1-1", "1757376000", "2025-09-09 7pm"]
)
def test_garbage_timestamps_name_the_accepted_formats(text: str) -> None:
    with pytest.raises(AdminError, match="accepted: 2025-09-09, 2025-09-09 00:00:00"):
        parse_timestamp(text, UTC)
