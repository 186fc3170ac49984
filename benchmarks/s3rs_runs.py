"""s3rs's side of the benchmark: configs, and the child process that runs one s3rs operation.

The parent (benchmarks.run) writes a pipelines.yaml per measurement into a temporary folder
and starts `python -m benchmarks.s3rs_runs OPERATION --config FILE ...` so that each
measurement is its own process tree (its peak RSS isolated) and pays its own imports, as a CLI
run does. The child uses s3rs's public Python API only and prints one JSON line: what s3rs
reported.

    extract   s3rs_dagster.core.extract.extract_table (direct, or through the SSH bastion)
    load      s3rs_dagster.core.load.load_table into the pipeline's target
    sync      s3rs_dagster.core.sync.sync_pipeline (extract, then load)
    choose    load_table(..., dry_run=True) over a table with many committed files, counting
              S3 requests by operation (the micro-benchmark)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

PIPELINE = "bench"
START_DATE = "2024-12-01"


def config_document(
    *,
    database: str,
    prefix: str,
    source: str,
    target: str,
    target_schema: str,
    duckdb_path: Path,
    partitioning: str = "daily",
    batch_size: int | None = None,
) -> dict[str, Any]:
    """A pipelines.yaml for one measurement: pipeline `bench`, table `<database>.orders`."""
    direct: dict[str, Any] = {
        "host": "${MYSQL_HOST}",
        "port": "${MYSQL_PORT}",
        "database": database,
        "username": "${MYSQL_USER}",
        "password": "${MYSQL_PASSWORD}",
        "time_zone": "+00:00",
    }
    bastion = {
        **direct,
        "ssh_tunnel": {
            "enabled": True,
            "host": "${SSH_BASTION_HOST}",
            "port": "${SSH_BASTION_PORT}",
            "username": "${SSH_BASTION_USER}",
            "private_key_path": "${SSH_BASTION_KEY_PATH}",
        },
    }
    targets = {
        "postgres": {
            "type": "postgres",
            "host": "${POSTGRES_HOST}",
            "port": "${POSTGRES_PORT}",
            "database": "${POSTGRES_DATABASE}",
            "username": "${POSTGRES_USER}",
            "password": "${POSTGRES_PASSWORD}",
            "schema": target_schema,
            "sslmode": "disable",
        },
        "redshift": {
            "type": "redshift",
            "host": "${REDSHIFT_HOST}",
            "port": "${REDSHIFT_PORT}",
            "database": "${REDSHIFT_DATABASE}",
            "username": "${REDSHIFT_USER}",
            "password": "${REDSHIFT_PASSWORD}",
            "iam_role": "${REDSHIFT_IAM_ROLE}",
            "schema": target_schema,
            "sslmode": "disable",
        },
        "duckdb": {"type": "duckdb", "path": str(duckdb_path), "schema": target_schema},
    }
    processing: dict[str, Any] = {"strategy": "sequential"}
    if batch_size is not None:
        processing["batch_size"] = batch_size
    table: dict[str, Any] = {
        "cdc_strategy": "hybrid",
        "cdc_timestamp_column": "updated_at",
        "cdc_id_column": "id",
        "partitioning": partitioning,
    }
    if partitioning != "none":
        table["start_date"] = START_DATE
    return {
        "connections": {
            "sources": {"direct": direct, "bastion": bastion},
            "targets": {target: targets[target]},
        },
        "storage": {
            "url": f"s3://${{S3_BUCKET}}/{prefix}",
            "endpoint_url": "${S3_ENDPOINT_URL}",
            "region": "${AWS_REGION}",
        },
        "pipelines": {
            PIPELINE: {
                "source": source,
                "target": target,
                "processing": processing,
                "tables": {f"{database}.orders": table},
            }
        },
    }


def write_config(folder: Path, name: str, **options: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config_document(**options), sort_keys=False))
    return path


# ---------------------------------------------------------------------- the child process


def _count_requests(storage: Any) -> Counter[str]:
    """Count the S3 requests a storage's boto3 client sends, by operation name."""
    calls: Counter[str] = Counter()

    def hook(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    storage.get_client().meta.events.register("before-call.s3", hook)
    return calls


def _extract(config: Any, table: str, limit: int | None) -> dict[str, Any]:
    from s3rs_dagster.adapters.storage import open_storage
    from s3rs_dagster.core.extract import extract_table

    storage = open_storage(config.storage)
    calls = _count_requests(storage)
    report = extract_table(config, PIPELINE, table, limit=limit, storage=storage)
    return {
        "status": report.status,
        "error": report.error,
        "rows": report.rows,
        "files": report.files,
        "bytes": report.bytes,
        "seconds": report.seconds,
        "warnings": report.warnings,
        "s3_requests": dict(calls),
    }


def _load(config: Any, table: str) -> dict[str, Any]:
    from s3rs_dagster.core.load import load_table

    report = load_table(config, PIPELINE, table)
    return {
        "status": report.status,
        "error": report.error,
        "rows": report.rows,
        "files": report.files,
        "target_rows": report.target_rows,
        "seconds": report.seconds,
        "warnings": report.warnings,
    }


def _sync(config: Any, table: str) -> dict[str, Any]:
    from s3rs_dagster.core.sync import sync_pipeline

    [run] = sync_pipeline(config, PIPELINE, [table])
    extract, load = run.extract, run.load
    assert extract is not None and load is not None
    return {
        "status": "success" if run.ok else "failed",
        "error": extract.error or load.error,
        "rows": extract.rows,
        "files": extract.files,
        "bytes": extract.bytes,
        "loaded_rows": load.rows,
        "target_rows": load.target_rows,
        "extract_seconds": extract.seconds,
        "load_seconds": load.seconds,
        "seconds": extract.seconds + load.seconds,
    }


def _choose(config: Any, table: str, iterations: int) -> dict[str, Any]:
    """Time load_table(dry_run=True) and count its S3 requests, `iterations` times."""
    from s3rs_dagster.adapters.storage import open_storage
    from s3rs_dagster.core import naming
    from s3rs_dagster.core.load import load_table

    runs = []
    for _ in range(iterations):
        storage = open_storage(config.storage)
        calls = _count_requests(storage)
        started = time.monotonic()
        report = load_table(config, PIPELINE, table, dry_run=True, storage=storage)
        seconds = time.monotonic() - started
        runs.append(
            {
                "status": report.status,
                "error": report.error,
                "seconds": seconds,
                "files_chosen": report.files,
                "rows_chosen": report.rows,
                "strays": len(report.strays),
                "s3_requests": dict(calls),
            }
        )
    storage = open_storage(config.storage)
    table_key = config.table(PIPELINE, table)[0]
    objects = {
        "data": sum(1 for _ in storage.list(naming.table_prefix(PIPELINE, table_key))),
        "manifests": sum(1 for _ in storage.list(naming.manifests_prefix(PIPELINE, table_key))),
    }
    return {
        "status": runs[-1]["status"],
        "error": runs[-1]["error"],
        "runs": runs,
        "objects": objects,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s3rs_runs")
    parser.add_argument("operation", choices=["extract", "load", "sync", "choose"])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--table", required=True)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args(argv)

    from s3rs_dagster.config import load_config

    config = load_config(args.config)
    started = time.monotonic()
    if args.operation == "extract":
        result = _extract(config, args.table, args.limit)
    elif args.operation == "load":
        result = _load(config, args.table)
    elif args.operation == "sync":
        result = _sync(config, args.table)
    else:
        result = _choose(config, args.table, args.iterations)
    result["operation_seconds"] = time.monotonic() - started
    import s3rs_dagster

    result["s3rs_dagster"] = str(Path(s3rs_dagster.__file__).parent)
    print(json.dumps(result, default=str), flush=True)
    return 0 if result["status"] in ("success", "dry_run", "nothing_to_do") else 1


if __name__ == "__main__":
    sys.exit(main())
