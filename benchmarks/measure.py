"""Run one command and measure it: wall time and the peak RSS of its whole process tree.

The parent samples /proc every 50 ms: the child's PID and all its descendants (through
/proc/<pid>/task/<tid>/children), summing their resident set sizes, and keeps the highest sum.
Sampling can miss a spike shorter than 50 ms. (ru_maxrss from wait4 is no substitute: Linux
carries the forking parent's high-water mark into the child across fork and exec, so it reports
the harness's own size for a small child.)
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_SECONDS = 0.05
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Measured:
    """One command's run: its time, peak memory, exit status, output and JSON result."""

    seconds: float
    peak_rss_bytes: int
    samples: int
    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            text = (task / "children").read_text()
        except OSError:
            continue
        found.extend(int(part) for part in text.split())
    return found


def _rss(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * PAGE_SIZE


def tree_rss(root: int) -> int:
    """The summed RSS of a process and all its descendants, now."""
    total = 0
    stack = [root]
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss(pid)
        stack.extend(_children(pid))
    return total


class _Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self.samples += 1
            self._stop_event.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_measured(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdout_path: Path | None = None,
    timeout: float = 7200,
) -> Measured:
    """Run `command` to its end; its last stdout line, if JSON, becomes `result`.

    With stdout_path, the child's stdout goes to that file (not parsed); for a dump.
    """
    out_handle = stdout_path.open("wb") if stdout_path else subprocess.PIPE
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=out_handle,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    sampler = _Sampler(process.pid)
    sampler.start()
    chunks: dict[str, bytes] = {}

    def drain(name: str, stream: Any) -> None:
        chunks[name] = stream.read() if stream is not None else b""

    readers = [
        threading.Thread(target=drain, args=(name, stream), daemon=True)
        for name, stream in (("out", process.stdout), ("err", process.stderr))
    ]
    for reader in readers:
        reader.start()
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    _, status = os.waitpid(process.pid, 0)
    seconds = time.monotonic() - started
    timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop()
    for reader in readers:
        reader.join()
    if stdout_path is not None and not isinstance(out_handle, int):
        out_handle.close()
    text = chunks.get("out", b"").decode(errors="replace")
    measured = Measured(
        seconds=seconds,
        peak_rss_bytes=sampler.peak,
        samples=sampler.samples,
        returncode=process.returncode,
        stdout=text,
        stderr=chunks.get("err", b"").decode(errors="replace"),
    )
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines:
        try:
            value = json.loads(lines[-1])
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            measured.result = value
    return measured
