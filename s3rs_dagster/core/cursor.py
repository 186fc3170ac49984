"""CDC cursors: which columns order a table's changes, and the SQL that pages through them.

Keyset pagination in the index-friendly form (MariaDB does not range-scan a row-value
comparison): `(ts, id) > (:t, :id)` is written `ts >= :t AND (ts > :t OR id > :id)`, and
longer keys nest the same way.

Cursor values are kept as the exact text MySQL printed and turned back into typed parameters
here: an integer key is compared as an integer (a string would make MySQL compare as DOUBLE and
lose precision beyond 2**53), an epoch column as a raw integer, a DATETIME as its text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from s3rs_dagster.config import TableConfig
from s3rs_dagster.core.schema import INTEGER_TYPES, SourceColumn, SourceTable, quote_mysql
from s3rs_dagster.core.state import Cursor

TEMPORAL_TYPES = frozenset({"datetime", "timestamp", "date"})
EPOCH_FACTORS = {"seconds": 1, "milliseconds": 1_000, "microseconds": 1_000_000}

TimestampKind = Literal["datetime", "timestamp", "date", "epoch"]


class CursorError(Exception):
    """The table's CDC configuration does not fit the table; says which column and why."""


@dataclass(frozen=True)
class CursorSpec:
    """The ordering of one table's extraction."""

    strategy: str
    timestamp: SourceColumn | None
    timestamp_kind: TimestampKind | None
    keys: tuple[SourceColumn, ...]
    epoch_factor: int = 1

    @property
    def order_columns(self) -> tuple[SourceColumn, ...]:
        return ((self.timestamp,) if self.timestamp else ()) + self.keys

    def order_by(self) -> str:
        return ", ".join(quote_mysql(column.name) for column in self.order_columns)


def zone_of(time_zone: str) -> tzinfo:
    """A source's configured time zone: '+05:30' or an IANA name."""
    if time_zone[0] in "+-":
        hours, minutes = time_zone[1:].split(":")
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-offset if time_zone[0] == "-" else offset)
    return ZoneInfo(time_zone)


def resolve_cursor(table: SourceTable, config: TableConfig) -> CursorSpec:
    """Check the configured CDC columns against the reflected table and build the spec."""
    columns = {column.name: column for column in table.columns}
    where = f"`{table.schema}`.`{table.name}`"

    def column(name: str, role: str) -> SourceColumn:
        if name not in columns:
            raise CursorError(
                f"{role} '{name}' is not a column of {where}; columns: {', '.join(columns)}"
            )
        return columns[name]

    primary_key = tuple(config.primary_key or table.primary_key)
    for name in primary_key:
        column(name, "primary_key column")
    strategy = config.cdc_strategy
    timestamp: SourceColumn | None = None
    kind: TimestampKind | None = None
    if strategy in ("hybrid", "timestamp_only"):
        timestamp = column(str(config.cdc_timestamp_column), "cdc_timestamp_column")
        if timestamp.data_type in TEMPORAL_TYPES:
            kind = timestamp.data_type  # type: ignore[assignment]
        elif timestamp.data_type in INTEGER_TYPES:
            kind = "epoch"
        else:
            raise CursorError(
                f"cdc_timestamp_column '{timestamp.name}' of {where} is {timestamp.column_type}; "
                "it must be DATETIME, TIMESTAMP, DATE or an integer epoch"
            )
    if strategy in ("hybrid", "id_only"):
        key = column(str(config.cdc_id_column), "cdc_id_column")
        keys: tuple[SourceColumn, ...] = (key,)
    else:
        keys = tuple(columns[name] for name in primary_key)
    if strategy == "id_only" and keys[0].data_type not in INTEGER_TYPES | {"decimal"}:
        raise CursorError(
            f"cdc_id_column '{keys[0].name}' of {where} is {keys[0].column_type}; id_only needs "
            "an increasing number (use hybrid or full_sync otherwise)"
        )
    return CursorSpec(
        strategy=strategy,
        timestamp=timestamp,
        timestamp_kind=kind,
        keys=keys,
        epoch_factor=EPOCH_FACTORS[config.cdc_timestamp_unit],
    )


def parameter(column: SourceColumn, text: str) -> object:
    """A cursor value's text as the parameter type MySQL compares correctly."""
    if column.data_type in INTEGER_TYPES:
        return int(text)
    if column.data_type == "decimal":
        return Decimal(text)
    if column.data_type in ("float", "double"):
        return float(text)
    if column.data_type in ("binary", "varbinary"):
        return bytes.fromhex(text)
    return text


def cursor_text(column: SourceColumn, value: str | bytes | int | datetime) -> str:
    """The storable text of a value read for the cursor: the text MySQL prints for it (binary
    keys as hex). The text protocol gives that text itself; the Arrow reader gives integers,
    and DATETIME values as timestamps, printed here with the column's fractional digits."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        v = value
        text = f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        digits = column.datetime_precision or 0
        return f"{text}.{v.microsecond:06d}"[: len(text) + 1 + digits] if digits else text
    return str(value)


def after(columns: tuple[SourceColumn, ...], texts: list[str]) -> tuple[str, list[object]]:
    """`(c1, c2, ...) > (v1, v2, ...)` in the index-friendly nested form."""
    first, value = columns[0], parameter(columns[0], texts[0])
    name = quote_mysql(first.name)
    if len(columns) == 1:
        return f"{name} > %s", [value]
    rest_sql, rest_params = after(columns[1:], texts[1:])
    return f"{name} >= %s AND ({name} > %s OR {rest_sql})", [value, value, *rest_params]


def last_row_before(
    spec: CursorSpec,
    table_sql: str,
    text: str,
    rows: Callable[[str, list[object]], list[tuple[object, ...]]],
    *,
    lower: str | None = None,
) -> Cursor | None:
    """The cursor on the last row (in cursor order) whose timestamp is below `text` (and at or
    after `lower`), or None when there is none: a run that resumes there takes every row
    stamped at or after `text`, ties included. `rows` runs a query on the source (values as
    text). One index lookup, read backwards."""
    assert spec.timestamp is not None
    column = quote_mysql(spec.timestamp.name)
    names = ", ".join(quote_mysql(c.name) for c in spec.order_columns)
    descending = ", ".join(f"{quote_mysql(c.name)} DESC" for c in spec.order_columns)
    conditions = [f"{column} < %s"]
    params = [parameter(spec.timestamp, text)]
    if lower is not None:
        conditions.append(f"{column} >= %s")
        params.append(parameter(spec.timestamp, lower))
    found = rows(
        f"SELECT {names} FROM {table_sql} WHERE {' AND '.join(conditions)} "
        f"ORDER BY {descending} LIMIT 1",
        params,
    )
    if not found:
        return None
    texts = [cursor_text(c, v) for c, v in zip(spec.order_columns, found[0], strict=True)]  # type: ignore[arg-type]
    return Cursor(timestamp=texts[0], key=texts[1:])


def timestamp_text(moment: datetime, spec: CursorSpec, zone: tzinfo) -> str:
    """An aware instant as the text (or integer) a comparison with the cursor column needs."""
    if spec.timestamp_kind == "epoch":
        return str(int(moment.timestamp() * spec.epoch_factor))
    if spec.timestamp_kind == "timestamp":  # the extraction session runs in UTC
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    local = moment.astimezone(zone)
    if spec.timestamp_kind == "date":
        return local.date().isoformat()
    return local.strftime("%Y-%m-%d %H:%M:%S.%f")


def timestamp_instant(text: str, spec: CursorSpec, zone: tzinfo) -> datetime | None:
    """The aware instant a cursor timestamp's text stands for (None for zero dates)."""
    if spec.timestamp_kind == "epoch":
        return datetime.fromtimestamp(int(text) / spec.epoch_factor, UTC)
    if text.startswith("0000") or "-00" in text[:10]:
        return None
    if spec.timestamp_kind == "date":
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), zone)
    naive = datetime.fromisoformat(text)
    return naive.replace(tzinfo=UTC if spec.timestamp_kind == "timestamp" else zone)


@dataclass(frozen=True)
class Window:
    """A partition's window of the timestamp cursor: [start, end), aware datetimes."""

    key: str
    start: datetime
    end: datetime


_PARTITION_FORMATS = {"daily": "%Y-%m-%d", "hourly": "%Y-%m-%d-%H:%M", "monthly": "%Y-%m"}


def partition_window(key: str, granularity: str, spec: CursorSpec, zone: tzinfo) -> Window:
    """The window of a partition key ('2025-03-01', '2025-03-01-13:00', '2025-03').

    DATETIME and DATE columns hold wall-clock times of the source's zone, so their windows are
    wall-clock days in that zone; TIMESTAMP and epoch columns are instants, windowed in UTC,
    the same rule the extract stage uses for the `dt=` of every file.
    """
    if granularity not in _PARTITION_FORMATS:
        raise CursorError(f"partitioning: {granularity} has no partitions")
    try:
        start = datetime.strptime(key, _PARTITION_FORMATS[granularity])
    except ValueError:
        raise CursorError(
            f"partition key {key!r} does not match {granularity} partitions "
            f"(like {datetime(2025, 3, 1).strftime(_PARTITION_FORMATS[granularity])})"
        ) from None
    if granularity == "daily":
        end = start + timedelta(days=1)
    elif granularity == "hourly":
        end = start + timedelta(hours=1)
    else:
        end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    local = UTC if spec.timestamp_kind in ("timestamp", "epoch") else zone
    return Window(key, start.replace(tzinfo=local), end.replace(tzinfo=local))


def cursor_order(spec: CursorSpec, timestamp: str | None, key: list[str]) -> tuple[object, ...]:
    """A cursor as typed values, for comparing two cursors of the same table."""
    texts = ([timestamp] if spec.timestamp else []) + key
    return tuple(
        parameter(column, str(text)) for column, text in zip(spec.order_columns, texts, strict=True)
    )
