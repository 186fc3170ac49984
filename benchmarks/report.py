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


def profile_summary(raw_path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares of the main thread, from py-spy's raw output."""
    main_tid = None
    stacks: list[tuple[str, list[str], int]] = []
    for line in raw_path.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        frames = stack_text.split(";")
        thread = frames[0]
        match = re.match(r"thread \((\d+)\)(?::\s*(\S+))?", thread)
        tid = match.group(1) if match else thread
        rest = frames[1:]
        if match and match.group(2) == "MainThread":
            main_tid = tid
        stacks.append((tid, [_LINE_NUMBER.sub(")", frame) for frame in rest], int(count_text)))
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for tid, frames, count in stacks:
        if (main_tid is not None and tid != main_tid) or not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return {
        "samples": total,
        "self": [(frame, round(100 * n / total, 1)) for frame, n in own.most_common(top)],
        "inclusive": [
            (frame, round(100 * n / total, 1)) for frame, n in inclusive.most_common(top * 3)
        ],
    }


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
