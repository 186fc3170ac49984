"""Summaries: the table printed (Markdown, pasted into benchmarks/README.md) and the JSON record."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

KIND_PEER = "peer"
KIND_CEILING = "ceiling"


def summarize(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per job, in first-run order: the best verified run, and every run's time."""
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in measurements:
        by_job[item["job"]].append(item)
    lines = []
    for job, runs in by_job.items():
        verified = [run for run in runs if run.get("verified")]
        best = min(verified, key=lambda run: run["seconds"]) if verified else None
        first = runs[0]
        lines.append(
            {
                "job": job,
                "label": first["label"],
                "kind": first["kind"],
                "rows": best["rows"] if best else None,
                "seconds": best["seconds"] if best else None,
                "rows_per_second": best["rows_per_second"] if best else None,
                "mb_per_second": best["mb_per_second"] if best else None,
                "peak_rss_mb": max(run["peak_rss_mb"] for run in verified) if verified else None,
                "runs_seconds": [
                    round(run["seconds"], 2) if run.get("verified") else None for run in runs
                ],
                "problem": None if best else (first.get("problem") or "no verified run"),
            }
        )
    fastest_peer = max(
        (line["rows_per_second"] or 0 for line in lines if line["kind"] == KIND_PEER), default=0
    )
    ceiling = max(
        (
            line["rows_per_second"] or 0
            for line in lines
            if line["kind"] in (KIND_PEER, KIND_CEILING)
        ),
        default=0,
    )
    for line in lines:
        rate = line["rows_per_second"]
        compare = line["kind"] == "s3rs" and rate
        line["vs_fastest_peer"] = rate / fastest_peer if compare and fastest_peer else None
        line["vs_ceiling"] = rate / ceiling if compare and ceiling else None
    return lines


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(lines: list[dict[str, Any]], rows: int, repeat: int) -> str:
    """A Markdown table of one table size."""
    out = [
        f"**{rows:,} rows** (best of {repeat}; peak RSS is the highest of the verified runs)",
        "",
        "| job | what | rows/s | MB/s | peak RSS MB | s3rs / fastest peer | s3rs / ceiling "
        "| runs (s) |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for line in lines:
        runs = " / ".join("failed" if s is None else f"{s:.1f}" for s in line["runs_seconds"])
        if line["problem"]:
            first = str(line["problem"]).strip().splitlines()[0]
            runs = f"**{first[:160]}**"
        out.append(
            f"| {line['job']} | {line['label']} | {_number(line['rows_per_second'])} "
            f"| {_number(line['mb_per_second'], 1)} | {_number(line['peak_rss_mb'])} "
            f"| {_ratio(line['vs_fastest_peer'])} | {_ratio(line['vs_ceiling'])} | {runs} |"
        )
    return "\n".join(out)


def micro_table(micro: dict[str, Any]) -> str:
    if not micro:
        return ""
    if micro.get("problem"):
        return f"Micro-benchmark: **{micro['problem']}**"
    result = micro["result"]
    objects = result["objects"]
    total = objects["data"] + objects["manifests"]
    out = [
        f"**Choosing what to load** (`load_table(..., dry_run=True)`) over {objects['data']:,} "
        f"data objects and {objects['manifests']:,} manifests; target < 2 s",
        "",
        "| run | seconds | files chosen | ListObjectsV2 | per 1,000 objects | GetObject "
        "| other S3 calls |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for index, run in enumerate(result["runs"], 1):
        calls = Counter(run["s3_requests"])
        lists = calls.pop("ListObjectsV2", 0)
        gets = calls.pop("GetObject", 0)
        out.append(
            f"| {index} | {run['seconds']:.2f} | {run['files_chosen']:,} | {lists} "
            f"| {lists / (total / 1000):.2f} | {gets} | {sum(calls.values())} |"
        )
    return "\n".join(out)


_LINE_NUMBER = re.compile(r":\d+\)$")
_RAW_LINE = re.compile(
    r'^(?P<processes>(?:process \d+:"[^"]*";)*)thread \((?P<tid>\d+)\)(?::\s*(?P<name>[^;]+))?'
    r"(?:;(?P<frames>.*))? (?P<count>\d+)$"
)
_PROCESS = re.compile(r'process (\d+):"([^"]*)"')


def profile_summary(raw_path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares of each process's main thread, from py-spy's raw
    output (`--threads`, and `--subprocesses` for a child such as a reader process)."""
    main_threads: dict[str, str] = {}
    commands: dict[str, str] = {}
    stacks: list[tuple[str, str, list[str], int]] = []
    for line in raw_path.read_text(errors="replace").splitlines():
        match = _RAW_LINE.match(line)
        if match is None or not match.group("frames"):
            continue
        chain = _PROCESS.findall(match.group("processes"))
        pid, command = chain[-1] if chain else ("main", "")
        commands[pid] = command
        tid = match.group("tid")
        if (match.group("name") or "").strip() == "MainThread":
            main_threads[pid] = tid
        frames = [_LINE_NUMBER.sub(")", frame) for frame in match.group("frames").split(";")]
        stacks.append((pid, tid, frames, int(match.group("count"))))
    processes = []
    for pid, command in commands.items():
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        total = 0
        for stack_pid, tid, frames, count in stacks:
            if stack_pid != pid or (pid in main_threads and tid != main_threads[pid]):
                continue
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
        if not total:
            continue
        processes.append(
            {
                "pid": pid,
                "command": command[:300],
                "samples": total,
                "self": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)],
                "inclusive": [
                    (f, round(100 * n / total, 1)) for f, n in inclusive.most_common(top * 3)
                ],
            }
        )
    processes.sort(key=lambda process: -process["samples"])
    return {"processes": processes}


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
