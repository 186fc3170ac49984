"""One extraction per table at a time: a lease object in storage.

The lease is created only if absent (a conditional write), renewed by a background thread
while its run lives, and released at the end. A second run finds it and is refused with the
holder's name and expiry. A lease whose holder died is taken over once it expires, or at once
when the holder ran on this host and its process is gone. Every change is a compare-and-swap,
so two runs can never both believe they hold it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from s3rs_dagster.adapters.storage import (
    ObjectNotFound,
    PreconditionFailed,
    Storage,
    StorageError,
)

DEFAULT_TTL_SECONDS = 120

_LIVE: set[str] = set()
"""Run ids of the leases this process holds now. A lease naming this process but none of
these was left by a run of this process that ended without releasing it (its release write
failed, e.g. while storage was unreachable): it is taken over at once, not after the TTL."""
_LIVE_LOCK = threading.Lock()


class LeaseHeld(Exception):
    """Another run holds the lease."""


class LeaseLost(Exception):
    """This run's lease was taken over or could not be renewed in time."""


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: tells a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _now() -> datetime:
    return datetime.now(UTC)


class Lease:
    """`with Lease(storage, key, run_id=...):` holds the lease for the block."""

    def __init__(
        self,
        storage: Storage,
        key: str,
        *,
        run_id: str,
        purpose: str,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> None:
        self.storage = storage
        self.key = key
        self.ttl = timedelta(seconds=ttl_seconds)
        self.holder = {
            "run_id": run_id,
            "purpose": purpose,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
        }
        self._etag: str | None = None
        self._expires_at = _now()
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public

    def __enter__(self) -> Lease:
        self.acquire()
        with _LIVE_LOCK:
            _LIVE.add(str(self.holder["run_id"]))
        self._thread = threading.Thread(target=self._renew_loop, name="s3rs-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _LIVE_LOCK:
            _LIVE.discard(str(self.holder["run_id"]))
        self.release()

    def check(self) -> None:
        """Raise LeaseLost if the lease can no longer be trusted; call before each commit."""
        with self._lock:
            if self._lost is None and _now() >= self._expires_at:
                self._lost = "it expired before it could be renewed"
            if self._lost is not None:
                raise LeaseLost(f"lost the lease {self.storage.uri(self.key)}: {self._lost}")

    def acquire(self) -> None:
        try:
            self._etag = self._write(if_none_match=True)
            return
        except PreconditionFailed:
            pass
        try:
            data, etag = self.storage.get_bytes(self.key)
        except ObjectNotFound:
            self._etag = self._write(if_none_match=True)
            return
        current = self._decode(data)
        if not self._takeover_allowed(current):
            raise LeaseHeld(
                f"another run holds this table: {self._describe(current)}, lease "
                f"{self.storage.uri(self.key)} expires at {current.get('expires_at')}; wait for "
                "it to finish (or, if it died on another host, for the lease to expire)"
            )
        try:
            self._etag = self._write(if_match=etag)
        except PreconditionFailed:
            raise LeaseHeld(
                f"another run took this table's lease {self.storage.uri(self.key)} at the "
                "same moment; try again"
            ) from None

    def release(self) -> None:
        """Mark the lease released (a conditional write: never releases someone else's)."""
        if self._etag is None:
            return
        with suppress(PreconditionFailed, StorageError):
            self._write(if_match=self._etag, released=True)
        self._etag = None

    # ------------------------------------------------------------------ internals

    def _document(self, released: bool) -> bytes:
        now = _now()
        expires = now if released else now + self.ttl
        document = {
            **self.holder,
            "renewed_at": now.isoformat(),
            "expires_at": expires.isoformat(),
            "released": released,
        }
        return json.dumps(document, indent=2).encode()

    def _write(
        self, *, if_none_match: bool = False, if_match: str | None = None, released: bool = False
    ) -> str:
        body = self._document(released)
        expires = _now() + self.ttl
        etag = self.storage.put_bytes(
            self.key,
            body,
            if_none_match=if_none_match,
            if_match=if_match,
            content_type="application/json",
        )
        if not released:
            with self._lock:
                self._expires_at = expires
        return etag

    def _renew_loop(self) -> None:
        interval = self.ttl.total_seconds() / 4
        while not self._stop.wait(interval):
            try:
                new_etag = self._write(if_match=self._etag)
            except PreconditionFailed:
                with self._lock:
                    self._lost = "another run took it over"
                return
            except StorageError:
                continue  # transient; check() fails once the lease has expired
            self._etag = new_etag

    def _decode(self, data: bytes) -> dict[str, object]:
        try:
            document = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return document if isinstance(document, dict) else {}

    def _takeover_allowed(self, current: dict[str, object]) -> bool:
        if not current or current.get("released"):
            return True
        try:
            expires = datetime.fromisoformat(str(current["expires_at"]))
        except (KeyError, ValueError):
            return True
        if expires <= _now():
            return True
        same_host = current.get("hostname") == self.holder["hostname"]
        pid = current.get("pid")
        this_process = pid == self.holder["pid"]
        if same_host and this_process and current.get("pid_start") == self.holder["pid_start"]:
            with _LIVE_LOCK:
                return current.get("run_id") not in _LIVE
        if same_host and isinstance(pid, int):
            return _process_start(pid) != current.get("pid_start")
        return False

    @staticmethod
    def _describe(current: dict[str, object]) -> str:
        return (
            f"run {current.get('run_id')} ({current.get('purpose')}) on "
            f"{current.get('hostname')} pid {current.get('pid')}"
        )
