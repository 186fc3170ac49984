"""A table's data files in storage: list them (`s3clean list`) and delete old ones (`clean`).

Safety rules, each enforced here rather than in the CLI:

- Only objects under the table's own prefix (`{pipeline}/{schema.table}/`) are ever listed, so
  only those can be deleted. A pattern selects among them; it never builds a key, so `../*`,
  `/` or `**` cannot reach anything else (a pattern with a `..` segment or a leading `/` is
  refused as a mistake).
- A file is deleted only when the ledger in the target holds it as loaded. Committed files not
  loaded yet, and strays (in no manifest), are kept unless `force`: deleting them loses rows
  that are in no other file.
- A file's age is that of its effective timestamp, the one the load stage compares with the
  cutoff: the run start in its name, else the object's LastModified.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from s3rs_dagster.adapters.storage import Storage, open_storage
from s3rs_dagster.adapters.tunnel import TunnelError
from s3rs_dagster.adapters.warehouse import WarehouseError
from s3rs_dagster.config import Config
from s3rs_dagster.core import naming
from s3rs_dagster.core.ledger import loaded_files
from s3rs_dagster.core.manifests import committed_files
from s3rs_dagster.core.state import WatermarkStore

AGE_BUCKETS: tuple[tuple[str, timedelta], ...] = (
    ("< 1 day", timedelta(days=1)),
    ("1-7 days", timedelta(days=7)),
    ("7-30 days", timedelta(days=30)),
    ("30-90 days", timedelta(days=90)),
)
OLDEST_BUCKET = "> 90 days"
_AGE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

FileKind = Literal["loaded", "waiting", "stray", "unknown"]


class CleanError(Exception):
    """The request is malformed (age, pattern); the message says what is accepted."""


def parse_age(text: str) -> timedelta:
    """'7d', '12h', '30m', '2w', '90s', or combinations like '1d12h'."""
    cleaned = text.strip().lower()
    parts = _AGE.findall(cleaned)
    if not parts or _AGE.sub("", cleaned).strip():
        raise CleanError(
            f"--older-than {text!r} is not an age; use a number and a unit: 90s, 30m, 12h, 7d, "
            "2w (or combined, 1d12h)"
        )
    return sum((timedelta(**{_UNITS[unit]: int(number)}) for number, unit in parts), timedelta())


def check_pattern(pattern: str) -> str:
    """A pattern relative to the table's folder; refuse ones that look like escaping it."""
    if not pattern.strip():
        raise CleanError("--pattern is empty; give a glob such as 'test_*' or 'dt=2025-08-*'")
    if "://" in pattern:
        raise CleanError(
            f"--pattern {pattern!r} is a URL; patterns match file names (or paths like "
            "'dt=2025-08-*/*') inside the table's folder, e.g. --pattern 'test_*'"
        )
    if pattern.startswith("/") or ".." in pattern.split("/"):
        raise CleanError(
            f"--pattern {pattern!r} points outside the table's folder; patterns match file "
            "names (or paths like 'dt=2025-08-*/*') inside it, and nothing outside it is ever "
            "deleted"
        )
    return pattern


@dataclass
class StoredFile:
    key: str
    """Relative to the storage root."""
    name: str
    """Relative to the table's folder, e.g. `dt=2025-09-01/p_s_t_..._00001.parquet`."""
    size: int
    written_at: datetime
    last_modified: datetime
    kind: FileKind


@dataclass
class Listing:
    pipeline: str
    table: str
    prefix_uri: str
    files: list[StoredFile]
    ledger_error: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def age_histogram(self, now: datetime | None = None) -> list[tuple[str, int, int]]:
        """(bucket, files, bytes) for each age bucket, youngest first."""
        now = now or datetime.now(UTC)
        labels = [label for label, _ in AGE_BUCKETS] + [OLDEST_BUCKET]
        counts = {label: [0, 0] for label in labels}
        for stored in self.files:
            counts[_bucket(now - stored.written_at)][0] += 1
            counts[_bucket(now - stored.written_at)][1] += stored.size
        return [(label, counts[label][0], counts[label][1]) for label in labels]

    def by_day(self) -> list[tuple[str, int, int]]:
        """(UTC day written, files, bytes), oldest first."""
        days: dict[str, list[int]] = {}
        for stored in self.files:
            day = days.setdefault(stored.written_at.date().isoformat(), [0, 0])
            day[0] += 1
            day[1] += stored.size
        return [(day, files, size) for day, (files, size) in sorted(days.items())]


def _bucket(age: timedelta) -> str:
    for label, limit in AGE_BUCKETS:
        if age < limit:
            return label
    return OLDEST_BUCKET


def list_files(
    config: Config, pipeline: str, table: str, *, storage: Storage | None = None
) -> Listing:
    """Every object under the table's prefix, with its age and whether it is loaded."""
    table_key, _ = config.table(pipeline, table)
    storage = storage or open_storage(config.storage)
    target = config.pipeline(pipeline).target
    watermark, _ = WatermarkStore(storage, pipeline, table_key, target).load()
    committed = {e.key for e in committed_files(storage, pipeline, table_key, watermark)}
    ledger: dict[str, int] | None = None
    ledger_error = None
    try:
        ledger = loaded_files(config, pipeline, table_key)
    except (WarehouseError, TunnelError) as exc:  # listing works without the target
        ledger_error = f"cannot read the ledger in target '{target}': {exc}"
    prefix = naming.table_prefix(pipeline, table_key)
    files = []
    for info in storage.list(prefix):
        kind: FileKind
        if ledger is not None and info.key in ledger:
            kind = "loaded"
        elif info.key not in committed:
            kind = "stray"
        else:
            kind = "unknown" if ledger is None else "waiting"
        files.append(
            StoredFile(
                key=info.key,
                name=info.key[len(prefix) :],
                size=info.size,
                written_at=naming.file_timestamp(info.key) or info.last_modified,
                last_modified=info.last_modified,
                kind=kind,
            )
        )
    return Listing(pipeline, table_key, storage.uri(prefix.rstrip("/")), files, ledger_error)


@dataclass
class CleanPlan:
    listing: Listing
    delete: list[StoredFile] = field(default_factory=list)
    kept: list[tuple[StoredFile, str]] = field(default_factory=list)
    """Files that matched the age and pattern but are kept, with the reason."""
    deleted: list[StoredFile] = field(default_factory=list)

    @property
    def delete_bytes(self) -> int:
        return sum(f.size for f in self.delete)


def plan_clean(
    listing: Listing,
    *,
    older_than: timedelta | None = None,
    pattern: str | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> CleanPlan:
    """Choose the files to delete: old enough, matching the pattern, and loaded (or force)."""
    now = now or datetime.now(UTC)
    if pattern is not None:
        check_pattern(pattern)
    plan = CleanPlan(listing)
    for stored in listing.files:
        if older_than is not None and now - stored.written_at <= older_than:
            continue
        if pattern is not None and not _matches(stored, pattern):
            continue
        if stored.kind == "loaded" or force:
            plan.delete.append(stored)
        elif stored.kind == "waiting":
            plan.kept.append((stored, "committed but not loaded yet (--force deletes it)"))
        elif stored.kind == "stray":
            plan.kept.append((stored, "in no manifest, never loaded (--force deletes it)"))
        else:
            plan.kept.append((stored, "the ledger could not be read (--force deletes it)"))
    return plan


def _matches(stored: StoredFile, pattern: str) -> bool:
    base = stored.name.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(stored.name, pattern) or fnmatch.fnmatchcase(base, pattern)


def execute_clean(plan: CleanPlan, *, storage: Storage) -> CleanPlan:
    """Delete the planned files; every key is re-checked to lie under the table's prefix."""
    prefix = naming.table_prefix(plan.listing.pipeline, plan.listing.table)
    keys = [stored.key for stored in plan.delete]
    if any(not key.startswith(prefix) for key in keys):  # listing guarantees it; belt and braces
        raise CleanError(f"refusing to delete outside {prefix}")
    storage.delete(keys)
    plan.deleted = list(plan.delete)
    return plan
