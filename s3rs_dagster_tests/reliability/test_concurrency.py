"""Two runs of one table at once, by the CLI and by Dagster: one proceeds, the others are refused.

The first run (`s3rs sync`, its own process) is held mid-extraction for real: a FaultProxy in
front of MariaDB lets its data query through and black-holes the answer, so the run sits
there holding the table's lease, as a slow read would. Meanwhile a Dagster materialisation of
the same table and a second `s3rs sync` start, and both must be refused naming the holder.
Then the link is reset, the first run retries its chunk and finishes, and Dagster's next run
proceeds; the target equals the source.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg
import pytest

from s3rs_dagster.defs.assets import build_table_assets
from s3rs_dagster.defs.definitions import all_resources
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import SourceDb
from s3rs_dagster_tests.reliability.helpers import (
    BASE_TIME,
    HYBRID,
    ORDERS_DDL,
    assert_target_equals_source,
    build_config,
    cli_command,
    upsert,
)
from s3rs_dagster_tests.reliability.proxy import Proxies

PARTITION = BASE_TIME.date().isoformat()


def _step_errors(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        event.step_failure_data.error.message
        for event in result.get_step_failure_events()
        if event.step_failure_data.error is not None
    )


@pytest.mark.reliability(
    "`s3rs sync` holds a table mid-extraction while a Dagster run and a second `s3rs sync` "
    "of the same table start",
    "Dagster's run and the second sync are refused naming the holding run; the first "
    "finishes; Dagster's next run proceeds; the target equals the source",
)
def test_cli_and_dagster_on_one_table_one_proceeds_the_others_are_refused(
    source_db: SourceDb,
    stack: Stack,
    tmp_path: Path,
    proxies: Proxies,
) -> None:
    source_db.execute(ORDERS_DDL)
    upsert(source_db, range(1, 61), BASE_TIME, "first")
    mysql = proxies(stack["MYSQL_HOST"], stack["MYSQL_PORT"])
    config = build_config(
        stack,
        source_db,
        tmp_path,
        {"orders": HYBRID},
        target="duckdb",
        source={"port": mysql.port},
        storage={"url": str(tmp_path / "lake")},
        processing={"reader": "pymysql"},  # its query text is visible to the proxy
    )
    mysql.arm(b"order by `updated_at`, `id` limit", "stall")
    holder = subprocess.Popen(
        cli_command(tmp_path, "sync", "-p", "p", "--limit", "20"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        if not mysql.fired.wait(60):
            holder.kill()
            pytest.fail(f"the first sync never reached its data query: {holder.communicate()[0]}")

        second = subprocess.run(
            cli_command(tmp_path, "sync", "-p", "p"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode != 0
        assert "another run holds this table" in second.stdout + second.stderr
        assert "Traceback" not in second.stdout + second.stderr

        [assets] = build_table_assets(config)
        refused = dg.materialize(
            [assets.batches],
            partition_key=PARTITION,
            resources=all_resources(config),
            raise_on_error=False,
        )
        assert not refused.success
        assert "another run holds this table" in _step_errors(refused)
    finally:
        mysql.cut()  # the held read is reset; the first run retries its chunk
    output, _ = holder.communicate(timeout=180)
    assert holder.returncode == 0, output

    done = dg.materialize(
        [assets.batches, assets.warehouse],
        partition_key=PARTITION,
        resources=all_resources(config),
        raise_on_error=False,
    )
    assert done.success, _step_errors(done)
    assert_target_equals_source(config, stack, source_db)
