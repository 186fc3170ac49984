"""Where each table stands (`s3rs status`): watermark, last runs, files waiting, lock holders.

Read-only. A table whose target cannot be reached still shows its storage-side state, with
the pending count unknown and the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from s3rs_dagster.adapters.storage import ObjectNotFound, Storage, StorageError, open_storage
from s3rs_dagster.adapters.tunnel import TunnelError
from s3rs_dagster.adapters.warehouse import WarehouseError
from s3rs_dagster.config import Config
from s3rs_dagster.core import naming
from s3rs_dagster.core.ledger import loaded_files
from s3rs_dagster.core.manifests import committed_files
from s3rs_dagster.core.state import StateError, WatermarkStore


@dataclass
class LockHolder:
    purpose: str
    run_id: str
    hostname: str
    pid: int | None
    expires_at: str


@dataclass
class TableStatus:
    pipeline: str
    table: str
    target: str
    last_timestamp: str | None = None
    last_id: Any = None
    extracted_rows: int = 0
    extract_status: str = "never"
    last_extract_at: str | None = None
    load_status: str = "never"
    last_load_at: str | None = None
    loaded_rows: int = 0
    load_cutoff: str | None = None
    committed_files: int = 0
    pending_files: int | None = None
    pending_rows: int | None = None
    locks: list[LockHolder] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """Last errors recorded by the stages, and problems reading this status."""
    ok: bool = True
    """False when the status itself could not be read completely."""


def table_status(
    config: Config, pipeline: str, table: str, *, storage: Storage | None = None
) -> TableStatus:
    table_key, _ = config.table(pipeline, table)
    storage = storage or open_storage(config.storage)
    target = config.pipeline(pipeline).target
    status = TableStatus(pipeline, table_key, target)
    try:
        watermark, _ = WatermarkStore(storage, pipeline, table_key, target).load()
        files = committed_files(storage, pipeline, table_key, watermark)
    except (StateError, StorageError) as exc:
        status.errors.append(str(exc))
        status.ok = False
        return status
    state, loaded = watermark.mysql_state, watermark.redshift_state
    status.last_timestamp = _iso(state.last_timestamp)
    status.last_id = state.last_id
    status.extracted_rows = state.total_rows
    status.extract_status = state.status
    status.last_extract_at = _iso(state.last_run_finished_at or state.last_run_started_at)
    status.load_status = loaded.status
    status.last_load_at = _iso(loaded.last_loaded_at)
    status.loaded_rows = loaded.total_rows
    status.load_cutoff = _iso(watermark.load_cutoff)
    status.committed_files = len(files)
    for stage, error in (("extract", state.last_error), ("load", loaded.last_error)):
        if error:
            status.errors.append(f"last {stage} error: {error}")
    try:
        ledger = loaded_files(config, pipeline, table_key)
    except (WarehouseError, TunnelError) as exc:
        status.errors.append(f"files pending unknown: cannot read the ledger: {exc}")
        status.ok = False
    else:
        cutoff = watermark.load_cutoff
        pending = [
            entry
            for entry in files
            if entry.key not in ledger
            and (cutoff is None or (naming.file_timestamp(entry.key) or entry.created_at) > cutoff)
        ]
        status.pending_files = len(pending)
        status.pending_rows = sum(entry.rows for entry in pending)
    for key in (naming.lock_key(pipeline, table_key), naming.load_lock_key(pipeline, table_key)):
        holder = _holder(storage, key)
        if holder is not None:
            status.locks.append(holder)
    return status


def _holder(storage: Storage, key: str) -> LockHolder | None:
    """The lease's holder, if it is held and not expired."""
    try:
        data, _ = storage.get_bytes(key)
        document = json.loads(data)
        expires = datetime.fromisoformat(str(document["expires_at"]))
    except (ObjectNotFound, ValueError, KeyError, TypeError):
        return None
    if document.get("released") or expires <= datetime.now(UTC):
        return None
    return LockHolder(
        purpose=str(document.get("purpose")),
        run_id=str(document.get("run_id")),
        hostname=str(document.get("hostname")),
        pid=document.get("pid"),
        expires_at=expires.isoformat(),
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
