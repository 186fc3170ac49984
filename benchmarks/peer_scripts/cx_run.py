"""The ceiling: connectorx's Arrow stream written with pyarrow as Parquet straight to S3.

Runs in its own virtual environment (connectorx, pyarrow). Environment: BENCH_CONNECTORX_URL,
BENCH_QUERY, BENCH_S3_PATH (bucket/key), BENCH_BATCH_ROWS, and the stack's S3 variables
(S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION). Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import urlparse

import connectorx as cx
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def main() -> None:
    started = time.monotonic()
    endpoint = urlparse(os.environ["S3_ENDPOINT_URL"])
    filesystem = pafs.S3FileSystem(
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=os.environ["AWS_REGION"],
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme,
    )
    reader = cx.read_sql(
        os.environ["BENCH_CONNECTORX_URL"],
        os.environ["BENCH_QUERY"],
        return_type="arrow_stream",
        batch_size=int(os.environ.get("BENCH_BATCH_ROWS", "100000")),
    )
    rows = 0
    writer = None
    with filesystem.open_output_stream(os.environ["BENCH_S3_PATH"]) as sink:
        for batch in reader:
            if writer is None:
                writer = pq.ParquetWriter(sink, batch.schema, compression="snappy")
            writer.write_batch(batch)
            rows += batch.num_rows
        if writer is not None:
            writer.close()
    print(
        json.dumps({"status": "success", "rows": rows, "seconds": time.monotonic() - started}),
        flush=True,
    )


if __name__ == "__main__":
    main()
