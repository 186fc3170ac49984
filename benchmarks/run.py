"""Benchmark s3rs against its peers on the local stack, in one invocation.

    .venv/bin/python -m benchmarks.run                      # 2,000,000 rows, each job twice
    .venv/bin/python -m benchmarks.run --sizes 2000000,10000000 --repeat 2
    .venv/bin/python -m benchmarks.run --only s3rs,sling --skip-generate
    .venv/bin/python -m benchmarks.run --only micro         # the 10,000-file micro-benchmark

Not part of the test suite: it takes minutes and writes hundreds of MB. It needs the local
stack (`scripts/stack up`). Each job runs as its own process, measured by benchmarks.measure,
and its output is read back (row count and sum of ids) before its time counts. Rounds
alternate the tools, since timings on a shared 2-core machine drift by tens of percent.
Results: a table on stdout and benchmarks/results/<time>.json.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import generate, peers, report, s3rs_runs, verify
from benchmarks.measure import Measured, run_measured
from benchmarks.stack import BUCKET_PREFIX, RESULTS, database_name, s3rs_snapshot, stack_env


@dataclass(frozen=True)
class Job:
    id: str
    group: str
    kind: str
    label: str


JOBS = [
    Job("s3rs-extract", "s3rs", "s3rs", "s3rs extract: MySQL -> S3 Parquet, direct"),
    Job("dlt-pyarrow", "dlt", "peer", "dlt sql_table, backend pyarrow -> filesystem S3 Parquet"),
    Job("s3rs-extract-ssh", "s3rs", "s3rs", "s3rs extract through the SSH bastion"),
    Job("sling", "sling", "peer", "Sling CLI MySQL -> S3 Parquet"),
    Job("dlt-connectorx", "dlt", "peer", "dlt sql_table, backend connectorx (arrow_stream)"),
    Job("connectorx", "connectorx", "ceiling", "ceiling: connectorx Arrow stream -> S3 Parquet"),
    Job("mariadb-dump", "mariadb", "ceiling", "ceiling: mariadb --quick -B > local file"),
    Job("s3rs-load-postgres", "s3rs", "s3rs-load", "s3rs load: S3 -> PostgreSQL (merge)"),
    Job("s3rs-load-redshift", "s3rs", "s3rs-load", "s3rs load: S3 -> Redshift stand-in (COPY)"),
    Job("s3rs-load-duckdb", "s3rs", "s3rs-load", "s3rs load: S3 -> DuckDB"),
    Job("s3rs-sync", "s3rs", "s3rs", "s3rs sync: extract + load -> PostgreSQL"),
]
GROUPS = {job.group for job in JOBS} | {"micro"}
TABLE = "orders"


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    """One invocation: a session id, the stack's env, a scratch folder, what to clean up."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.snapshot, self.s3rs_commit = s3rs_snapshot(args.s3rs_ref)
        if self.snapshot is not None:
            sys.path.insert(0, str(self.snapshot))  # the read-back imports s3rs_dagster too
        self.env = peers.environ_for_subprocess(stack_env(), self.snapshot)
        # The read-back in this process uses the same credentials (boto3's default chain).
        os.environ.update(self.env)
        self.session = datetime.now(UTC).strftime("%Y%m%dt%H%M%S")
        self.scratch = Path(tempfile.mkdtemp(prefix="s3rs-bench-"))
        self.prefix = f"{BUCKET_PREFIX}/{self.session}"
        self.unavailable: dict[str, str] = {}
        self.schemas: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ s3rs jobs

    def s3rs_config(self, name: str, **options: Any) -> Path:
        return s3rs_runs.write_config(
            self.scratch / "configs",
            name,
            duckdb_path=self.scratch / f"{name}.duckdb",
            **options,
        )

    def s3rs_command(
        self, operation: str, config: Path, *extra: str, table: str | None = None
    ) -> list[str]:
        table = table or f"{self.database}.{TABLE}"
        return [
            sys.executable,
            "-m",
            "benchmarks.s3rs_runs",
            operation,
            "--config",
            str(config),
            "--table",
            table,
            *extra,
        ]

    def prepare(self, job: Job, round_no: int, state: dict[str, Any]) -> peers.Prepared:
        name = f"r{round_no}-{job.id}"
        prefix = f"{self.prefix}/{self.rows}/{name}"
        schema = f"bench_{self.session}_{round_no}_{job.id.rsplit('-', 1)[-1]}"
        table = f"{self.database}.{TABLE}"
        common = {"database": self.database, "target_schema": schema}
        if job.id in ("s3rs-extract", "s3rs-extract-ssh"):
            source = "bastion" if job.id.endswith("ssh") else "direct"
            config = self.s3rs_config(
                name, prefix=prefix, source=source, target="postgres", **common
            )
            if source == "direct":
                state["extracted"] = prefix
            return peers.Prepared(
                command=self.s3rs_command("extract", config),
                env=self.env,
                verify=lambda: verify.s3rs_committed(self.env, config, s3rs_runs.PIPELINE, table),
            )
        if job.kind == "s3rs-load":
            target = job.id.rsplit("-", 1)[-1]
            if "extracted" not in state:
                state["extracted"] = self.unmeasured_extract(round_no)
            config = self.s3rs_config(
                name,
                prefix=state["extracted"],
                source="direct",
                target=target,
                **{**common, "target_schema": "main" if target == "duckdb" else schema},
            )
            self.schemas.append((target, schema))
            duckdb_path = self.scratch / f"{name}.duckdb"
            return peers.Prepared(
                command=self.s3rs_command("load", config),
                env=self.env,
                verify=lambda: verify.warehouse_table(
                    self.env,
                    target,
                    "main" if target == "duckdb" else schema,
                    TABLE,
                    duckdb_path,
                ),
                cleanup=lambda: verify.drop_schema(self.env, target, schema),
            )
        if job.id == "s3rs-sync":
            config = self.s3rs_config(
                name, prefix=prefix, source="direct", target="postgres", **common
            )
            self.schemas.append(("postgres", schema))
            return peers.Prepared(
                command=self.s3rs_command("sync", config),
                env=self.env,
                verify=lambda: verify.warehouse_table(self.env, "postgres", schema, TABLE),
                cleanup=lambda: verify.drop_schema(self.env, "postgres", schema),
            )
        workdir = self.scratch / name
        workdir.mkdir(parents=True, exist_ok=True)
        if job.id.startswith("dlt-"):
            return peers.prepare_dlt(self.env, job.id[4:], self.database, prefix, workdir)
        if job.id == "sling":
            return peers.prepare_sling(self.env, self.database, prefix, workdir)
        if job.id == "connectorx":
            return peers.prepare_connectorx(self.env, self.database, prefix)
        if job.id == "mariadb-dump":
            return peers.prepare_mariadb(self.env, self.database, workdir)
        raise ValueError(job.id)

    def unmeasured_extract(self, round_no: int) -> str:
        """Files for the load jobs when s3rs-extract itself is not selected."""
        prefix = f"{self.prefix}/{self.rows}/r{round_no}-load-input"
        config = self.s3rs_config(
            f"r{round_no}-load-input",
            prefix=prefix,
            source="direct",
            target="postgres",
            database=self.database,
            target_schema="unused",
        )
        log("  (extracting the load jobs' input, not measured)")
        measured = run_measured(
            self.s3rs_command("extract", config), env=self.env, cwd=self.scratch
        )
        if not measured.ok:
            raise SystemExit(f"the load jobs' input extraction failed:\n{measured.stderr[-3000:]}")
        return prefix

    # ------------------------------------------------------------------ one job

    def run_job(self, job: Job, round_no: int, state: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {
            "job": job.id,
            "label": job.label,
            "kind": job.kind,
            "round": round_no,
            "rows_expected": self.rows,
        }
        if job.id in self.unavailable:
            item.update(verified=False, problem=f"unavailable: {self.unavailable[job.id]}")
            return item
        try:
            prepared = self.prepare(job, round_no, state)
        except peers.PeerUnavailable as exc:
            self.unavailable[job.id] = str(exc)
            item.update(verified=False, problem=f"unavailable: {exc}")
            log(f"  {job.id}: UNAVAILABLE: {exc}")
            return item
        measured = run_measured(
            prepared.command,
            env=prepared.env,
            stdout_path=prepared.stdout_path,
            # Not the repo: the child's sys.path[0] is its cwd, which would shadow the snapshot.
            cwd=self.scratch,
        )
        item.update(_measured_fields(measured))
        if not measured.ok:
            tail = (measured.stderr or measured.stdout).strip().splitlines()[-5:]
            item.update(verified=False, problem=f"exit {measured.returncode}: {' | '.join(tail)}")
            log(f"  {job.id}: FAILED ({item['problem'][:400]})")
            prepared.cleanup()
            return item
        try:
            output = prepared.verify()
        except Exception as exc:  # a failed read-back is a failed run, reported as such
            item.update(verified=False, problem=f"verification failed: {exc}")
            log(f"  {job.id}: VERIFICATION FAILED: {exc}")
            prepared.cleanup()
            return item
        problem = output.problem(self.rows)
        written = output.bytes or int(state.get("extracted_bytes", 0))
        if job.id == "s3rs-extract":
            state["extracted_bytes"] = output.bytes
        item.update(
            verified=problem is None,
            problem=problem,
            rows=output.rows,
            id_sum=output.id_sum,
            bytes=written,
            files=output.files,
            rows_per_second=self.rows / measured.seconds,
            mb_per_second=written / 1e6 / measured.seconds,
        )
        prepared.cleanup()
        status = "ok" if problem is None else f"WRONG OUTPUT: {problem}"
        log(
            f"  {job.id}: {measured.seconds:.1f} s, {self.rows / measured.seconds:,.0f} rows/s, "
            f"{written / 1e6:.0f} MB, peak RSS {measured.peak_rss_bytes / 1e6:.0f} MB, {status}"
        )
        return item

    # ------------------------------------------------------------------ a size

    def run_size(self, rows: int, jobs: list[Job]) -> dict[str, Any]:
        self.rows = rows
        self.database = database_name(rows)
        generated = generate.ensure_table(
            self.env, rows, skip_generate=self.args.skip_generate, log=log
        )
        measurements = []
        for round_no in range(1, self.args.repeat + 1):
            log(f"{rows:,} rows, round {round_no} of {self.args.repeat}")
            state: dict[str, Any] = {}
            for job in jobs:
                measurements.append(self.run_job(job, round_no, state))
            self.cleanup_s3(f"{self.prefix}/{rows}/")
        lines = report.summarize(measurements)
        return {
            "rows": rows,
            "table": f"{self.database}.{TABLE}",
            "generate": generated,
            "measurements": measurements,
            "summary": lines,
            "unavailable": dict(self.unavailable),
        }

    def cleanup_s3(self, prefix: str) -> None:
        if self.args.keep:
            return
        removed = verify.delete_prefix(self.env, prefix)
        log(f"  removed {removed:,} objects under s3://{self.env['S3_BUCKET']}/{prefix}")

    # ------------------------------------------------------------------ micro

    def micro(self, files: int) -> dict[str, Any]:
        """Time choosing what to load over `files` committed files; count S3 requests."""
        generate.ensure_table(self.env, files, skip_generate=True, log=log)
        database = database_name(files)
        prefix = f"{BUCKET_PREFIX}/micro/{files}"
        config = s3rs_runs.write_config(
            self.scratch / "configs",
            f"micro-{files}",
            database=database,
            prefix=prefix,
            source="direct",
            target="duckdb",
            target_schema="main",
            duckdb_path=self.scratch / "micro.duckdb",
        )
        table = f"{database}.{TABLE}"
        setup: dict[str, Any] = {"reused": True}
        if not _micro_ready(self.env, config, table, files):
            log(f"micro: committing {files:,} one-row files through s3rs (limit=1), once")
            verify.delete_prefix(self.env, f"{prefix}/")
            measured = run_measured(
                self.s3rs_command("extract", config, "--limit", "1", table=table),
                env=self.env,
                cwd=self.scratch,
            )
            measured_table = measured.result
            if not measured.ok or measured_table.get("files") != files:
                return {"problem": f"setup failed: {measured.stderr[-1500:]}"}
            setup = {"reused": False, "seconds": measured.seconds, **measured_table}
        command = [
            sys.executable,
            "-m",
            "benchmarks.s3rs_runs",
            "choose",
            "--config",
            str(config),
            "--table",
            table,
            "--iterations",
            str(self.args.repeat + 1),
        ]
        measured = run_measured(command, env=self.env, cwd=self.scratch)
        if not measured.ok:
            return {"problem": f"failed: {measured.stderr[-1500:]}", "setup": setup}
        result = measured.result
        for index, run in enumerate(result["runs"], 1):
            log(
                f"micro run {index}: {run['seconds']:.2f} s, {run['files_chosen']:,} files "
                f"chosen, S3 requests {run['s3_requests']}"
            )
        return {
            "files": files,
            "setup": setup,
            "result": result,
            "peak_rss_mb": measured.peak_rss_bytes / 1e6,
        }

    # ------------------------------------------------------------------ profile

    def profile(self, rows: int) -> dict[str, Any]:
        """py-spy over one direct s3rs extract (wall-clock: idle samples included)."""
        try:
            folder = peers.ensure_venv("profile")
        except peers.PeerUnavailable as exc:
            return {"problem": str(exc)}
        self.rows, self.database = rows, database_name(rows)
        config = self.s3rs_config(
            "profile",
            prefix=f"{self.prefix}/profile",
            source="direct",
            target="postgres",
            database=self.database,
            target_schema="unused",
        )
        RESULTS.mkdir(parents=True, exist_ok=True)
        raw = RESULTS / f"{self.session}-profile-{rows}.txt"
        command = [
            str(folder / "bin" / "py-spy"),
            "record",
            "--format",
            "raw",
            "--idle",
            "--threads",
            "--subprocesses",
            "--rate",
            "100",
            "--output",
            str(raw),
            "--",
            *self.s3rs_command("extract", config),
        ]
        log(f"profile: py-spy over one s3rs extract of {rows:,} rows")
        measured = run_measured(command, env=self.env, cwd=self.scratch)
        self.cleanup_s3(f"{self.prefix}/profile/")
        if not measured.ok or not raw.exists():
            return {"problem": f"py-spy failed: {measured.stderr[-1500:]}"}
        summary = report.profile_summary(raw)
        packed = raw.with_name(raw.name + ".gz")
        packed.write_bytes(gzip.compress(raw.read_bytes()))
        raw.unlink()
        return {
            "raw": str(packed.relative_to(RESULTS.parent.parent)),
            "seconds": measured.seconds,
            **summary,
        }

    def close(self) -> None:
        for kind, schema in self.schemas:
            try:
                verify.drop_schema(self.env, kind, schema)
            except Exception as exc:  # best effort: report, keep going
                log(f"could not drop {kind} schema {schema}: {exc}")
        if not self.args.keep:
            verify.delete_prefix(self.env, f"{self.prefix}/")
        shutil.rmtree(self.scratch, ignore_errors=True)


def _measured_fields(measured: Measured) -> dict[str, Any]:
    return {
        "seconds": measured.seconds,
        "peak_rss_mb": measured.peak_rss_bytes / 1e6,
        "rss_samples": measured.samples,
        "returncode": measured.returncode,
        "result": measured.result,
    }


def _micro_ready(env: dict[str, str], config: Path, table: str, files: int) -> bool:
    """True when the micro fixture's watermark says `files` rows were committed."""
    from s3rs_dagster.adapters.storage import open_storage
    from s3rs_dagster.config import load_config
    from s3rs_dagster.core.state import WatermarkStore

    loaded = load_config(config, env=env)
    table_key = loaded.table(s3rs_runs.PIPELINE, table)[0]
    watermark, _ = WatermarkStore(
        open_storage(loaded.storage), s3rs_runs.PIPELINE, table_key, "duckdb"
    ).load()
    state = watermark.mysql_state
    return state.status == "success" and state.total_rows == files


def _git_state() -> dict[str, Any]:
    """The commit measured, and whether s3rs's own files had uncommitted changes."""
    import subprocess

    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "s3rs_dagster_dirty": bool(git("status", "--porcelain", "--", "s3rs_dagster")),
    }


def _sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="s3rs against dlt, Sling, connectorx and the mariadb client, on the stack.",
    )
    parser.add_argument("--rows", type=int, default=2_000_000, help="table size (default 2M)")
    parser.add_argument("--sizes", type=_sizes, help="several sizes, e.g. 2000000,10000000")
    parser.add_argument(
        "--only",
        help=f"comma-separated groups or job ids: {', '.join(sorted(GROUPS))}; "
        f"jobs: {', '.join(job.id for job in JOBS)}",
    )
    parser.add_argument("--repeat", type=int, default=2, help="rounds per size (default 2)")
    parser.add_argument(
        "--skip-generate",
        action="store_true",
        help="reuse s3rs_bench_<rows>.orders when it already has the right count",
    )
    parser.add_argument("--micro-files", type=int, default=10_000, help="micro-benchmark files")
    parser.add_argument("--no-micro", action="store_true", help="skip the micro-benchmark")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy one s3rs extract of the first size"
    )
    parser.add_argument("--keep", action="store_true", help="keep the S3 output")
    parser.add_argument(
        "--s3rs-ref",
        default="HEAD",
        help="the s3rs_dagster to measure: a git ref (default HEAD, a clean copy of the "
        "committed code) or 'worktree' (the files as they are now, uncommitted edits included)",
    )
    return parser.parse_args(argv)


def select_jobs(only: str | None) -> tuple[list[Job], bool]:
    if not only:
        return list(JOBS), True
    wanted = {part.strip() for part in only.split(",") if part.strip()}
    known = GROUPS | {job.id for job in JOBS}
    unknown = wanted - known
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))}; known: {sorted(known)}")
    jobs = [job for job in JOBS if job.group in wanted or job.id in wanted]
    return jobs, "micro" in wanted or "s3rs" in wanted


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = args.sizes or [args.rows]
    jobs, with_micro = select_jobs(args.only)
    bench = Bench(args)
    record: dict[str, Any] = {
        "session": bench.session,
        "started_at": datetime.now(UTC).isoformat(),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "args": vars(args),
        "git": {**_git_state(), "s3rs_measured": bench.s3rs_commit},
        "sizes": [],
    }
    started = time.monotonic()
    results_path = RESULTS / f"{bench.session}.json"
    try:
        for rows in sizes:
            if jobs:
                record["sizes"].append(bench.run_size(rows, jobs))
                report.write_json(results_path, record)
        if with_micro and not args.no_micro:
            record["micro"] = bench.micro(args.micro_files)
        if args.profile:
            record["profile"] = bench.profile(sizes[0])
    finally:
        bench.close()
    record["versions"] = {
        name: peers.installed_versions(name) for name in ("dlt", "sling", "connectorx")
    }
    record["seconds"] = time.monotonic() - started
    report.write_json(results_path, record)
    print()
    for size in record["sizes"]:
        print(report.table(size["summary"], size["rows"], args.repeat))
        print()
    if record.get("micro"):
        print(report.micro_table(record["micro"]))
        print()
    if record.get("profile") and not record["profile"].get("problem"):
        print_profile(record["profile"])
    print(f"record: {results_path}")
    return 0


def print_profile(profile: dict[str, Any]) -> None:
    for process in profile["processes"]:
        print(
            f"py-spy, s3rs extract, process {process['pid']} ({process['samples']} main-thread "
            f"samples, wall clock): {process['command'][:90]}"
        )
        print("  self time:")
        for frame, share in process["self"][:12]:
            print(f"    {share:5.1f}%  {frame}")
        print()


if __name__ == "__main__":
    sys.exit(main())
