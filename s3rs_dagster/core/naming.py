"""Where things live in storage: data files, state documents, manifests and leases.

Data files: {pipeline}/{schema}.{table}/dt={partition}/
                {pipeline}_{schema}_{table}_{YYYYmmdd_HHMMSS}_{run}_{seq}.parquet
State:      _state/{pipeline}/{schema}.{table}/watermark.json, lock.json,
                manifests/{run}_{seq}.json

Names are unique per run (the run id) and files are never overwritten. The timestamp in a
file name is the run's start in UTC, which the load stage compares with the watermark cutoff.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

STATE_ROOT = "_state"
NO_PARTITION = "none"
_FILE_TIMESTAMP = re.compile(r"_(\d{8}_\d{6})_[0-9a-z]{12}_\d{5}\.parquet$")


def new_run_id() -> str:
    """12 lowercase alphanumerics: short enough for file names, random enough to be unique."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(secrets.choice(alphabet) for _ in range(12))


def table_prefix(pipeline: str, table: str) -> str:
    """The folder of a table's data files, relative to the storage root."""
    return f"{pipeline}/{table}/"


def state_prefix(pipeline: str, table: str) -> str:
    return f"{STATE_ROOT}/{pipeline}/{table}/"


def watermark_key(pipeline: str, table: str) -> str:
    return f"{state_prefix(pipeline, table)}watermark.json"


def lock_key(pipeline: str, table: str) -> str:
    return f"{state_prefix(pipeline, table)}lock.json"


def load_lock_key(pipeline: str, table: str) -> str:
    return f"{state_prefix(pipeline, table)}load_lock.json"


def manifests_prefix(pipeline: str, table: str) -> str:
    return f"{state_prefix(pipeline, table)}manifests/"


def manifest_key(pipeline: str, table: str, run_id: str, seq: int) -> str:
    return f"{manifests_prefix(pipeline, table)}{run_id}_{seq:05d}.json"


def file_key(
    pipeline: str, table: str, partition: str, run_started: datetime, run_id: str, seq: int
) -> str:
    schema, _, name = table.partition(".")
    stamp = run_started.astimezone(UTC).strftime("%Y%m%d_%H%M%S")
    return (
        f"{table_prefix(pipeline, table)}dt={partition}/"
        f"{pipeline}_{schema}_{name}_{stamp}_{run_id}_{seq:05d}.parquet"
    )


def file_timestamp(key: str) -> datetime | None:
    """The run start encoded in a data file's name (UTC), or None for a foreign name."""
    match = _FILE_TIMESTAMP.search(key)
    if match is None:
        return None
    text = match.group(1)  # YYYYmmdd_HHMMSS, sliced: strptime is slow over 10,000s of keys
    return datetime(
        int(text[0:4]),
        int(text[4:6]),
        int(text[6:8]),
        int(text[9:11]),
        int(text[11:13]),
        int(text[13:15]),
        tzinfo=UTC,
    )
