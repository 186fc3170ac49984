"""The fault matrix: links cut, servers gone, storage full, processes killed; on the real stack.

Each fault is real: a FaultProxy (see proxy.py) sits between s3rs and the real server and
resets, refuses or stalls the connection, or lets a request through and loses its answer.
Shared servers are never stopped: a "restarted MariaDB" or a "stopped S3" is the proxy
refusing connections for a while, which is exactly what the client sees of a restart.
After every fault, the next run leaves the target equal to the source, no key twice and no
file in the ledger twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.config import Config
from s3rs_dagster.core.extract import Progress, extract_table
from s3rs_dagster.core.load import load_table
from s3rs_dagster.core.state import WatermarkStore
from s3rs_dagster.core.sync import sync_pipeline
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import SourceDb
from s3rs_dagster_tests.reliability.helpers import (
    BASE_TIME,
    HYBRID,
    ORDERS_DDL,
    assert_target_equals_source,
    build_config,
    cli_command,
    drop_target_schema,
    upsert,
)
from s3rs_dagster_tests.reliability.proxy import FaultProxy, Proxies

LEDGER_INSERT = b'"s3rs_loaded_files" (pipeline'
reliability = pytest.mark.reliability


@pytest.fixture
def orders(source_db: SourceDb) -> SourceDb:
    source_db.execute(ORDERS_DDL)
    upsert(source_db, range(1, 41), BASE_TIME, "first")
    return source_db


@pytest.fixture
def cleanup(stack: Stack, proxies: Proxies) -> Iterator[list[Config]]:
    """Drops the targets' schemas after the test, once its proxies are closed: a connection a
    proxy still black-holes keeps its server session, and its locks, alive."""
    configs: list[Config] = []
    yield configs
    proxies.close_all()
    for config in configs:
        drop_target_schema(config, stack)


def _after_files(count: int, action: Callable[[], Any]) -> Callable[[Progress], None]:
    def progress(update: Progress) -> None:
        if update.files == count:
            action()

    return progress


# ---------------------------------------------------------------------- the warehouse link

_LOAD_FAULTS = (
    ("copy-cut", "connection reset while COPY is sent", b"COPY ", "cut", None),
    (
        "copy-reply-lost",
        "COPY carried out, its reply lost, connection reset",
        b"COPY ",
        "lose_reply",
        None,
    ),
    ("merge-cut", "connection reset at the merge (DELETE ... USING)", b"DELETE FROM", "cut", None),
    (
        "commit-reply-lost",
        "COMMIT carried out, its reply lost, connection reset: did it commit?",
        b"COMMIT",
        "lose_reply",
        LEDGER_INSERT,
    ),
)
WAREHOUSE_FAULTS = [
    pytest.param(
        target,
        pattern,
        action,
        after,
        marks=reliability(
            f"{target}: {what}",
            "the load reconnects (bounded retries, 1-2-4 s), reads the ledger first, and "
            "commits once: target equals source, no file twice",
        ),
        id=f"{target}-{name}",
    )
    for target in ("postgres", "redshift")
    for name, what, pattern, action, after in _LOAD_FAULTS
]


@pytest.mark.parametrize(("target", "pattern", "action", "after"), WAREHOUSE_FAULTS)
def test_warehouse_connection_cut_during_the_load(
    orders: SourceDb,
    stack: Stack,
    tmp_path: Path,
    proxies: Proxies,
    cleanup: list[Config],
    target: str,
    pattern: bytes,
    action: str,
    after: bytes | None,
) -> None:
    prefix = "POSTGRES" if target == "postgres" else "REDSHIFT"
    proxy = proxies(stack[f"{prefix}_HOST"], stack[f"{prefix}_PORT"])
    config = build_config(
        stack, orders, tmp_path, {"orders": HYBRID}, target=target, warehouse={"port": proxy.port}
    )
    cleanup.append(config)
    assert sync_pipeline(config, "p")[0].ok
    upsert(orders, range(30, 61), BASE_TIME.replace(hour=13), "second")
    proxy.arm(pattern, action, after=after)
    run = sync_pipeline(config, "p")[0]
    assert proxy.fired.is_set(), "the fault struck"
    assert run.load is not None and run.ok, run.load and run.load.error
    assert any("lost the connection" in w for w in run.load.warnings), run.load.warnings
    if after is not None and target == "postgres":
        # PostgreSQL carries out a COMMIT it received; only the ledger tells the client so.
        # (The Redshift stand-in aborts when its client is gone; then the retry commits.)
        assert any("the ledger holds them" in w for w in run.load.warnings), run.load.warnings
    assert (run.load.files, run.load.rows) == (1, 31)
    assert_target_equals_source(config, stack, orders)
    again = sync_pipeline(config, "p")[0].load
    assert again is not None and again.status == "nothing_to_do"


@reliability(
    "postgres: the warehouse goes away mid-COPY and stays away",
    "the load fails naming the target and the refused connection; once it is back, the next "
    "run loads every file once",
)
def test_warehouse_gone_fails_clearly_then_recovers(
    orders: SourceDb, stack: Stack, tmp_path: Path, proxies: Proxies, cleanup: list[Config]
) -> None:
    proxy = proxies(stack["POSTGRES_HOST"], stack["POSTGRES_PORT"])
    config = build_config(
        stack, orders, tmp_path, {"orders": HYBRID}, warehouse={"port": proxy.port}
    )
    cleanup.append(config)
    proxy.arm(b"COPY ", "cut", outage=3600)
    run = sync_pipeline(config, "p")[0]
    assert run.extract is not None and run.extract.ok
    assert run.load is not None and not run.load.ok
    assert f"cannot connect to postgres target 'wh' (s3rs@127.0.0.1:{proxy.port}" in str(
        run.load.error
    ), run.load.error
    proxy.up()
    assert sync_pipeline(config, "p")[0].ok
    assert_target_equals_source(config, stack, orders)


# ---------------------------------------------------------------------- the SSH tunnel


def _tunnel(stack: Stack, port: int) -> dict[str, Any]:
    return {
        "enabled": True,
        "host": stack["SSH_BASTION_HOST"],
        "port": port,
        "username": stack["SSH_BASTION_USER"],
        "private_key_path": stack["SSH_BASTION_KEY_PATH"],
        "keepalive_seconds": 1,
    }


@reliability(
    "redshift via SSH tunnel: the tunnel's TCP link is cut while the COMMIT's reply is in flight",
    "the client sees the link die, reconnects through a reopened tunnel, and the ledger (not a "
    "guess) says the COMMIT landed: loaded once, reported as loaded",
)
def test_tunnel_dropped_while_the_commit_reply_is_in_flight(
    orders: SourceDb, stack: Stack, tmp_path: Path, proxies: Proxies, cleanup: list[Config]
) -> None:
    bastion = proxies(stack["SSH_BASTION_HOST"], stack["SSH_BASTION_PORT"])
    warehouse = proxies(stack["REDSHIFT_HOST"], stack["REDSHIFT_PORT"], reply_wait=0.3)
    config = build_config(
        stack,
        orders,
        tmp_path,
        {"orders": HYBRID},
        target="redshift",
        warehouse={"port": warehouse.port, "ssh_tunnel": _tunnel(stack, bastion.port)},
    )
    cleanup.append(config)
    warehouse.arm(b"COMMIT", "lose_reply", after=LEDGER_INSERT, on_fire=bastion.cut)
    run = sync_pipeline(config, "p")[0]
    assert warehouse.fired.is_set()
    assert run.load is not None and run.ok, run.load and run.load.error
    assert any("lost the connection" in w for w in run.load.warnings), run.load.warnings
    assert run.load.rows == 40, "committed once: by the lost attempt (ledger) or the retry"
    assert bastion.connections >= 2, "the tunnel was opened again"
    assert_target_equals_source(config, stack, orders)


@reliability(
    "redshift via SSH tunnel: the COMMIT's reply is black-holed (the link goes silent, no reset)",
    "statement_timeout_seconds bounds the wait (client timeout = statement timeout + grace), "
    "not TCP's minutes; then the ledger decides: loaded once",
)
def test_silent_link_is_bounded_by_the_statement_timeout(
    orders: SourceDb, stack: Stack, tmp_path: Path, proxies: Proxies, cleanup: list[Config]
) -> None:
    bastion = proxies(stack["SSH_BASTION_HOST"], stack["SSH_BASTION_PORT"])
    warehouse = proxies(stack["REDSHIFT_HOST"], stack["REDSHIFT_PORT"])
    config = build_config(
        stack,
        orders,
        tmp_path,
        {"orders": HYBRID},
        target="redshift",
        warehouse={
            "port": warehouse.port,
            "ssh_tunnel": _tunnel(stack, bastion.port),
            "statement_timeout_seconds": 1,
        },
    )
    cleanup.append(config)
    warehouse.arm(b"COMMIT", "stall", after=LEDGER_INSERT)
    started = time.monotonic()
    run = sync_pipeline(config, "p")[0]
    assert warehouse.fired.is_set()
    assert run.load is not None and run.ok, run.load and run.load.error
    assert time.monotonic() - started < 40, "the client timeout, not TCP's, ended the wait"
    assert any("lost the connection" in w for w in run.load.warnings), run.load.warnings
    assert_target_equals_source(config, stack, orders)


@reliability(
    "source via SSH tunnel: the bastion link is reset mid-extraction (twice)",
    "each chunk is retried from the last commit through a reopened tunnel; every row once",
)
def test_source_tunnel_dropped_mid_extraction(
    orders: SourceDb, stack: Stack, tmp_path: Path, proxies: Proxies, cleanup: list[Config]
) -> None:
    bastion = proxies(stack["SSH_BASTION_HOST"], stack["SSH_BASTION_PORT"])
    config = build_config(
        stack,
        orders,
        tmp_path,
        {"orders": HYBRID},
        source={"ssh_tunnel": _tunnel(stack, bastion.port)},
    )
    cleanup.append(config)

    def drop(update: Progress) -> None:
        if update.files in (1, 3):
            bastion.cut()

    report = extract_table(config, "p", "orders", limit=7, progress=drop)
    assert report.ok, report.error
    assert bastion.connections >= 3
    assert load_table(config, "p", "orders").ok
    assert_target_equals_source(config, stack, orders)


# ---------------------------------------------------------------------- the source


@reliability(
    "MariaDB restarts during extraction (connections reset, refused for 2 s)",
    "the chunk is retried (1-2-4 s) from the last commit; the run succeeds; every row once",
)
def test_source_restart_during_extraction_is_retried(
    orders: SourceDb, stack: Stack, tmp_path: Path, proxies: Proxies, cleanup: list[Config]
) -> None:
    mysql = proxies(stack["MYSQL_HOST"], stack["MYSQL_PORT"])
    config = build_config(stack, orders, tmp_path, {"orders": HYBRID}, source={"port": mysql.port})
    cleanup.append(config)

    def restart() -> None:
        mysql.down()
        mysql.after(2.0, mysql.up)

    report = extract_table(config, "p", "orders", limit=7, progress=_after_files(2, restart))
    assert report.ok, report.error
    assert load_table(config, "p", "orders").ok
    assert_target_equals_source(config, stack, orders)


@reliability(
    "MariaDB goes away during extraction and stays away",
    "after 4 attempts the run fails naming the endpoint; committed files stay; the next run "
    "resumes and the target equals the source",
)
def test_source_gone_fails_clearly_and_resumes(
    orders: SourceDb, stack: Stack, tmp_path: Path, proxies: Proxies, cleanup: list[Config]
) -> None:
    mysql = proxies(stack["MYSQL_HOST"], stack["MYSQL_PORT"])
    config = build_config(
        stack,
        orders,
        tmp_path,
        {"orders": HYBRID},
        source={"port": mysql.port, "connect_timeout_seconds": 2},
    )
    cleanup.append(config)
    report = extract_table(config, "p", "orders", limit=7, progress=_after_files(2, mysql.down))
    assert not report.ok
    assert f"127.0.0.1:{mysql.port}" in str(report.error), report.error
    assert report.files >= 2
    mysql.up()
    assert sync_pipeline(config, "p")[0].ok
    assert_target_equals_source(config, stack, orders)


# ---------------------------------------------------------------------- the storage


def _s3_via(stack: Stack, proxy: FaultProxy, tmp_path: Path) -> dict[str, Any]:
    return {
        "url": f"s3://{stack['S3_BUCKET']}/reliability/{tmp_path.name}",
        "endpoint_url": f"http://127.0.0.1:{proxy.port}",
        "region": stack["AWS_REGION"],
    }


@reliability(
    "S3 resets a Parquet upload and refuses connections for 0.3 s",
    "the S3 client's bounded retries carry the upload; the run succeeds",
)
def test_s3_blip_during_upload_is_retried(
    orders: SourceDb, stack: Stack, tmp_path: Path, proxies: Proxies, cleanup: list[Config]
) -> None:
    s3 = proxies("127.0.0.1", stack["S3_ENDPOINT_URL"].rsplit(":", 1)[1])
    config = build_config(
        stack, orders, tmp_path, {"orders": HYBRID}, storage=_s3_via(stack, s3, tmp_path)
    )
    cleanup.append(config)
    s3.arm(b".parquet HTTP/1.1", "cut", outage=0.3)
    run = sync_pipeline(config, "p", limit=10)[0]
    assert s3.fired.is_set()
    assert run.ok, (run.extract and run.extract.error, run.load and run.load.error)
    assert_target_equals_source(config, stack, orders)


@reliability(
    "S3 stopped during a Parquet upload, started again later",
    "the run fails naming the endpoint and what to check; the next run (the dead run's lease "
    "taken over at once) resumes; every row once",
)
def test_s3_stopped_during_upload_fails_clearly_then_resumes(
    orders: SourceDb, stack: Stack, tmp_path: Path, proxies: Proxies, cleanup: list[Config]
) -> None:
    s3 = proxies("127.0.0.1", stack["S3_ENDPOINT_URL"].rsplit(":", 1)[1])
    config = build_config(
        stack, orders, tmp_path, {"orders": HYBRID}, storage=_s3_via(stack, s3, tmp_path)
    )
    cleanup.append(config)
    s3.arm(b".parquet HTTP/1.1", "cut", after=b".parquet HTTP/1.1", outage=3600)
    run = sync_pipeline(config, "p", limit=10)[0]
    assert run.extract is not None and not run.extract.ok
    assert f"cannot reach the S3 endpoint http://127.0.0.1:{s3.port}" in str(run.extract.error)
    s3.up()
    run = sync_pipeline(config, "p", limit=10)[0]
    assert run.ok, (run.extract and run.extract.error, run.load and run.load.error)
    assert_target_equals_source(config, stack, orders)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 160 KiB of its own (the suite runs as root on the CI machine)."""
    folder = tmp_path / "lake"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@reliability(
    "file:// storage fills up mid-extraction (ENOSPC), then turns read-only (EROFS)",
    "each run fails naming the file and the OS's reason; once there is room, the next run "
    "completes and the target equals the source",
)
def test_storage_full_then_read_only(
    orders: SourceDb, stack: Stack, tmp_path: Path, small_disk: Path
) -> None:
    orders.executemany(
        "INSERT INTO orders (id, updated_at, amount, note) VALUES (%s, %s, %s, %s)",
        [(i, BASE_TIME, i, os.urandom(24).hex()) for i in range(100, 6100)],
    )
    config = build_config(
        stack,
        orders,
        tmp_path,
        {"orders": HYBRID},
        target="duckdb",
        storage={"url": str(small_disk)},
    )
    full = extract_table(config, "p", "orders", limit=500)
    assert not full.ok
    assert "No space left on device" in str(full.error), full.error
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    refused = extract_table(config, "p", "orders", limit=500)
    assert not refused.ok and "Read-only file system" in str(refused.error), refused.error
    subprocess.run(["mount", "-o", "remount,rw,size=64m", str(small_disk)], check=True)
    run = sync_pipeline(config, "p", limit=500)[0]
    assert run.ok, (run.extract and run.extract.error, run.load and run.load.error)
    assert_target_equals_source(config, stack, orders)


# ---------------------------------------------------------------------- kill -9


@pytest.mark.slow
@reliability(
    "kill -9 of `s3rs sync` (extract and load) at random moments, 12 runs, source changing",
    "each rerun resumes; finally the target equals the source, no key twice, no file loaded "
    "twice, and the watermark's count equals COUNT(*)",
)
def test_kill_9_of_the_whole_sync_at_random_points(
    orders: SourceDb,
    stack: Stack,
    tmp_path: Path,
    cleanup: list[Config],
    reliability_note: Callable[[str], None],
) -> None:
    config = build_config(stack, orders, tmp_path, {"orders": HYBRID})
    cleanup.append(config)
    upsert(orders, range(41, 400), BASE_TIME, "bulk")
    # Two rows per chunk: every run has many commit points, so most kills land mid-run.
    command = cli_command(tmp_path, "sync", "-p", "p", "--limit", "2", "--max-chunks", "1000")
    rng = random.Random(20261126)
    kills = 0
    for run in range(12):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 3.0))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait()
        upsert(orders, rng.sample(range(1, 400), 25), BASE_TIME.replace(hour=14, minute=run), "u")
    final = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert final.returncode == 0, final.stdout + final.stderr
    reliability_note(f"{kills} of 12 runs killed mid-run (seed 20261126)")
    assert kills >= 6
    assert_target_equals_source(config, stack, orders)
    store = WatermarkStore(open_storage(config.storage), "p", f"{orders.name}.orders", "wh")
    watermark, _ = store.load()
    count = orders.execute("SELECT COUNT(*) FROM orders")[0][0]
    assert watermark.redshift_state.total_rows == count
