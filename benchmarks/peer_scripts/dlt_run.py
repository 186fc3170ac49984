"""dlt: `sql_table` from MySQL to the `filesystem` destination as Parquet on S3.

Runs in dlt's own virtual environment. Configuration comes from the environment, as dlt users
set it (DESTINATION__FILESYSTEM__*), plus: BENCH_BACKEND (pyarrow | connectorx),
BENCH_SQLALCHEMY_URL, BENCH_CONNECTORX_URL, BENCH_TABLE, BENCH_DATASET, BENCH_PIPELINES_DIR.
Prints one JSON line: what dlt reports it loaded.
"""

from __future__ import annotations

import json
import os
import time

import dlt
from dlt.sources.sql_database import sql_table


def main() -> None:
    backend = os.environ["BENCH_BACKEND"]
    started = time.monotonic()
    kwargs: dict[str, object] = {}
    if backend == "connectorx":
        kwargs["backend_kwargs"] = {
            "conn": os.environ["BENCH_CONNECTORX_URL"],
            "return_type": "arrow_stream",
        }
    source = sql_table(
        credentials=os.environ["BENCH_SQLALCHEMY_URL"],
        table=os.environ["BENCH_TABLE"],
        backend=backend,
        **kwargs,
    )
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{backend}",
        destination="filesystem",
        dataset_name=os.environ["BENCH_DATASET"],
        pipelines_dir=os.environ["BENCH_PIPELINES_DIR"],
    )
    info = pipeline.run(source, loader_file_format="parquet", write_disposition="append")
    info.raise_on_failed_jobs()
    rows = pipeline.last_trace.last_normalize_info.row_counts.get(os.environ["BENCH_TABLE"], 0)
    print(
        json.dumps({"status": "success", "rows": rows, "seconds": time.monotonic() - started}),
        flush=True,
    )


if __name__ == "__main__":
    main()
