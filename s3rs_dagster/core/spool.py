"""Rows waiting on local disk, grouped by partition window, until a checkpoint writes them.

An initial snapshot reads a table in primary-key order, so consecutive rows belong to many
partition windows, while every Parquet file must belong to one (its `dt=`). Between two
checkpoints each window's rows are appended to Arrow IPC files in a private temporary folder;
at the checkpoint each window becomes one Parquet file. Memory holds one batch at a time, not
the checkpoint: the disk (and the page cache, which the kernel can drop) does the buffering.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

MAX_OPEN_FILES = 128
"""Spool files open at once; past it, all are closed and windows seen again start a new
segment (a snapshot of an hourly table can touch thousands of windows per checkpoint)."""


class WindowSpool:
    """Appends record batches per window label; reads each window back as batches."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.folder = Path(tempfile.mkdtemp(prefix="s3rs-spool-"))
        self._segments: dict[str, list[Path]] = {}
        self._open: dict[str, tuple[pa.NativeFile, pa.ipc.RecordBatchStreamWriter]] = {}
        self._rows: dict[str, int] = {}
        self._files = 0

    def add(self, label: str, batch: pa.RecordBatch) -> None:
        if label not in self._open:
            if len(self._open) >= MAX_OPEN_FILES:
                self._close_all()
            self._files += 1
            path = self.folder / f"{self._files:06d}.arrows"
            self._segments.setdefault(label, []).append(path)
            sink = pa.OSFile(str(path), "wb")
            self._open[label] = (sink, pa.ipc.new_stream(sink, self.schema))
        self._open[label][1].write_batch(batch)
        self._rows[label] = self._rows.get(label, 0) + batch.num_rows

    def finish(self) -> dict[str, int]:
        """Close every file; the windows (in the order first seen) and their row counts."""
        self._close_all()
        return dict(self._rows)

    def read(self, label: str) -> Iterator[pa.RecordBatch]:
        """A finished window's batches, in the order they were added."""
        for path in self._segments[label]:
            with pa.OSFile(str(path), "rb") as source, pa.ipc.open_stream(source) as reader:
                yield from reader

    def remove(self, label: str) -> None:
        """Delete a window's files once written out (frees the disk as the checkpoint goes)."""
        for path in self._segments.get(label, []):
            path.unlink(missing_ok=True)

    def cleanup(self) -> None:
        self._close_all()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _close_all(self) -> None:
        for sink, writer in self._open.values():
            writer.close()
            sink.close()
        self._open.clear()
