"""`s3rs status`: watermark, last runs, files pending load, lock holder."""

from __future__ import annotations

import socket

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.core import naming
from s3rs_dagster.core.lease import Lease
from s3rs_dagster_tests.commands.conftest import BASE_TIME, Orders


def test_status_shows_watermark_pending_files_and_lock_holder(orders: Orders) -> None:
    orders.insert(range(1, 9), BASE_TIME)
    orders.ok("sync", "-p", "p", "--limit", "4", "--max-chunks", "1")
    orders.ok("sync", "-p", "p", "--backup-only")
    shown = orders.ok("status")
    row = next(line for line in shown.output.splitlines() if line.startswith("p/"))
    assert row.split()[:3] == [f"p/{orders.table}", "2025-03-01T12:00:07+00:00", "8"]
    data = orders.json("status", "-p", "p")[0]
    assert (data["pending_files"], data["pending_rows"], data["loaded_rows"]) == (1, 4, 4)
    assert data["extract_status"] == "success" and data["locks"] == []
    storage = open_storage(orders.config.storage)
    lease = Lease(storage, naming.lock_key("p", orders.table), run_id="r1", purpose="extract")
    with lease:
        held = orders.ok("status")
        assert f"extract by {socket.gethostname()}" in held.output
        blocked = orders.run("watermark", "set", "-t", "orders", "--timestamp", "2025-03-02")
        assert blocked.exit_code == 1 and "another run holds this table" in blocked.output
    unknown = orders.run("status", "-p", "nope")
    assert unknown.exit_code == 2 and "pipeline 'nope' is not defined" in unknown.output
