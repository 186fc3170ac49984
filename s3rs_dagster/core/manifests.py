"""Batch manifests: the immutable lists of committed data files.

A file is committed when the watermark lists it (`pending_files`); every so often those
entries move into a manifest under `_state/{pipeline}/{table}/manifests/`. The committed files
of a table are the union of its manifests and the watermark's pending list, deduplicated by key
(a crash between the two writes lists a file in both).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel, ConfigDict, ValidationError

from s3rs_dagster.adapters.storage import ObjectInfo, Storage, StorageError
from s3rs_dagster.core import naming
from s3rs_dagster.core.state import FileEntry, StateError, Watermark, utc_now

MANIFEST_FORMAT = "s3rs-manifest/1"
READ_THREADS = 8
"""Manifests read at once: a table has one per extraction run (and chunk), so hundreds of small
GETs, each mostly waiting on the store."""


class _Manifest(BaseModel):
    """The fields of a manifest that loading reads, parsed and validated in one pass."""

    model_config = ConfigDict(extra="ignore")
    format: str | None = None
    files: list[FileEntry] = []


def write_manifest(
    storage: Storage, pipeline: str, table: str, run_id: str, seq: int, files: Iterable[FileEntry]
) -> str:
    """Write one immutable manifest; return its key."""
    key = naming.manifest_key(pipeline, table, run_id, seq)
    document = {
        "format": MANIFEST_FORMAT,
        "pipeline": pipeline,
        "table": table,
        "run_id": run_id,
        "seq": seq,
        "created_at": utc_now().isoformat(),
        "files": [entry.model_dump(mode="json") for entry in files],
    }
    body = json.dumps(document, indent=2, ensure_ascii=False).encode()
    storage.put_bytes(key, body, content_type="application/json")
    return key


def committed_files(
    storage: Storage, pipeline: str, table: str, watermark: Watermark
) -> list[FileEntry]:
    """Every committed file of a table, oldest first, each once."""
    return _committed(storage, _manifest_keys(storage, pipeline, table), watermark)


def committed_files_and_objects(
    storage: Storage, pipeline: str, table: str, watermark: Watermark
) -> tuple[list[FileEntry], dict[str, ObjectInfo]]:
    """committed_files, and every object under the table's prefix by key.

    The prefix is listed while the manifests are read (both mostly wait on the store: 10,000
    objects are ten listing requests in a row), but only once the manifests are listed: a data
    file is uploaded before any manifest or watermark names it, so every file committed by a
    manifest listed here is in the listing too, even while an extraction commits more.
    """
    keys = _manifest_keys(storage, pipeline, table)
    with ThreadPoolExecutor(1, thread_name_prefix="s3rs-listing") as pool:
        listing = pool.submit(
            lambda: {info.key: info for info in storage.list(naming.table_prefix(pipeline, table))}
        )
        files = _committed(storage, keys, watermark)
        return files, listing.result()


def _manifest_keys(storage: Storage, pipeline: str, table: str) -> list[str]:
    return [
        info.key
        for info in storage.list(naming.manifests_prefix(pipeline, table))
        if info.key.endswith(".json")
    ]


def _committed(storage: Storage, keys: list[str], watermark: Watermark) -> list[FileEntry]:
    """The files the manifests `keys` and the watermark's pending list name, oldest first."""
    entries: dict[str, FileEntry] = {}
    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="s3rs-manifests") as pool:
        for manifest in pool.map(lambda key: _read(storage, key), keys):
            for entry in manifest:
                entries[entry.key] = entry
    for entry in watermark.pending_files:
        entries[entry.key] = entry
    return sorted(entries.values(), key=lambda entry: (entry.created_at, entry.key))


def _read(storage: Storage, key: str) -> list[FileEntry]:
    uri = storage.uri(key)
    try:
        body = storage.get_bytes(key)[0]
    except StorageError as exc:
        raise StateError(f"cannot read the manifest {uri}: {exc}") from None
    try:
        manifest = _Manifest.model_validate_json(body)
    except ValidationError as exc:
        raise _problem(uri, body, exc) from None
    if manifest.format != MANIFEST_FORMAT:
        raise StateError(f"{uri} is not an s3rs manifest ({MANIFEST_FORMAT}). Nothing was loaded")
    return manifest.files


def _problem(uri: str, body: bytes, exc: ValidationError) -> StateError:
    """What is wrong with a manifest that did not validate, in the reader's terms."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return StateError(
            f"the manifest {uri} is not valid JSON ({error}); restore it from a backup. "
            "Nothing was loaded"
        )
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        return StateError(f"{uri} is not an s3rs manifest ({MANIFEST_FORMAT}). Nothing was loaded")
    return StateError(f"the manifest {uri} is invalid: {exc.errors()[0]['msg']}")
