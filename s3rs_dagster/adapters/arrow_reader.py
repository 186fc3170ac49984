"""A connectorx reader in a child process, streaming Arrow record batches to this one.

connectorx reads MySQL straight into Arrow, several times faster than PyMySQL, but it holds
Python's GIL while it works. In a process of its own it cannot stall this one: the SSH tunnel's
forwarding thread keeps running (in-process, connectorx could never connect through it), and
converting, writing and uploading the previous batch overlap with reading the next, on another
core. Batches cross a pipe as Arrow IPC; the pipe's small buffer is the backpressure, so at
most about one batch waits in either process.

One `ArrowReader` serves one extraction run: it starts its process on first use and stops it
on `close()`. If this process dies, the child reads EOF on its pipe and exits.

The child is a plain `python -m` of this module (not a multiprocessing spawn, which would
import the caller's main module, the whole CLI or Dagster, into it, and start a resource
tracker process), with Arrow's default allocator, mimalloc: this process asks for the C
library's (see `s3rs_dagster/__init__.py`), under which connectorx's buffers fragment and
the child grew to ~200 MB instead of ~125 MB.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO

import pyarrow as pa

_BATCH, _END, _ERROR = b"B", b"Z", b"E"
_STOP_SECONDS = 5
_LIVENESS_SECONDS = 1.0
LINK_LOST = "the link to the source was lost while reading"


class ArrowReaderError(Exception):
    """The reader failed; the message is connectorx's (with the password masked)."""


class ArrowReader:
    """Runs queries in a connectorx child process; see the module docstring."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe: multiprocessing.connection.Connection | None = None
        self._stderr: IO[bytes] | None = None

    def stream(
        self,
        url: str,
        query: str,
        batch_rows: int,
        link_alive: Callable[[], bool] = lambda: True,
    ) -> Iterator[pa.RecordBatch]:
        """The query's rows as record batches of up to `batch_rows` rows.

        While it waits, it asks `link_alive` every second: a tunnel whose SSH link died does
        not always close the forwarded socket, and connectorx has no read timeout, so without
        the question the child would wait forever. A dead link stops the child and raises.
        """
        pipe = self._start()
        pipe.send((url, query, batch_rows))
        finished = False
        try:
            while True:
                while not pipe.poll(_LIVENESS_SECONDS):
                    if not link_alive():
                        raise ArrowReaderError(LINK_LOST)
                try:
                    message = pipe.recv_bytes()
                except (EOFError, OSError):
                    raise ArrowReaderError(
                        f"the reader process ended unexpectedly{self._last_words(url)}"
                    ) from None
                kind, body = message[:1], pa.py_buffer(message).slice(1)  # no copy
                if kind == _END:
                    finished = True
                    return
                if kind == _ERROR:
                    finished = True
                    raise ArrowReaderError(body.to_pybytes().decode("utf-8", "replace"))
                with pa.ipc.open_stream(body) as reader:
                    yield from reader
        finally:
            if not finished:
                # Abandoned mid-stream: the child is still sending; start afresh next time.
                self.close()

    def _last_words(self, url: str) -> str:
        """The last line the child printed, if any, as ': <line>' (the password masked)."""
        if self._stderr is None:
            return ""
        with suppress(OSError):
            self._stderr.seek(0)
            lines = self._stderr.read()[-4096:].decode("utf-8", "replace").strip().splitlines()
            if lines:
                password = _password(url)
                return f": {lines[-1].replace(password, '***') if password else lines[-1]}"
        return ""

    def close(self) -> None:
        if self._pipe is not None:
            with suppress(OSError):
                self._pipe.close()
            self._pipe = None
        if self._process is not None:
            try:
                self._process.wait(_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(_STOP_SECONDS)
            self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def start(self) -> None:
        """Start the child now, so that its start-up (Python, pyarrow and connectorx, ~0.3 s)
        overlaps what the caller does before its first query."""
        self._start()

    def _start(self) -> multiprocessing.connection.Connection:
        if self._pipe is None:
            parent, child = multiprocessing.Pipe()
            root = str(Path(__file__).resolve().parents[2])  # where s3rs_dagster was imported
            paths = [root, *filter(None, [os.environ.get("PYTHONPATH")])]
            environment = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(paths),
                "ARROW_DEFAULT_MEMORY_POOL": "mimalloc",
                "MALLOC_ARENA_MAX": "2",  # connectorx's threads: ~25 MB less, no slower
                "RUST_BACKTRACE": "0",
            }
            # What the child prints (Rust prints each panic, a refused value's too, before it
            # reaches Python as an exception) is kept for the error of a child that dies.
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(child.fileno())],
                pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL,
                stderr=self._stderr,
                env=environment,
            )
            child.close()
            self._pipe = parent
        return self._pipe


def _serve(pipe: multiprocessing.connection.Connection) -> None:
    """The child: run each query it is sent and send back its batches, then an end mark."""
    import connectorx

    while True:
        try:
            url, query, batch_rows = pipe.recv()
        except (EOFError, OSError):
            return
        password = _password(url)
        try:
            reader = connectorx.read_sql(
                url, query, return_type="arrow_stream", batch_size=batch_rows
            )
            for batch in reader:
                if batch.num_rows:
                    pipe.send_bytes(_ipc(batch))
            pipe.send_bytes(_END)
        except (BrokenPipeError, EOFError):
            return
        except BaseException as exc:  # anything connectorx raises goes back as text
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise  # KeyboardInterrupt, SystemExit; pyo3's PanicException is a refused value
            text = str(exc).replace(password, "***") if password else str(exc)
            with suppress(OSError):
                pipe.send_bytes(_ERROR + text.encode())


def _ipc(batch: pa.RecordBatch) -> pa.Buffer:
    """The batch mark and the batch as an IPC stream, in one buffer (sent without a copy)."""
    sink = pa.BufferOutputStream()
    sink.write(_BATCH)
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def _password(url: str) -> str:
    from urllib.parse import unquote, urlparse

    secret = urlparse(url).password
    return unquote(secret) if secret else ""


if __name__ == "__main__":
    _serve(multiprocessing.connection.Connection(int(sys.argv[1])))
