"""`s3rs s3clean list|clean`: counts and ages, and deletes only loaded files inside the table."""

from __future__ import annotations

from datetime import timedelta

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster_tests.commands.conftest import BASE_TIME, Orders


def test_list_counts_sizes_and_ages(orders: Orders) -> None:
    orders.insert(range(1, 11), BASE_TIME)
    orders.ok("sync", "-p", "p", "-t", "orders", "--limit", "5", "--max-chunks", "1")
    orders.ok("sync", "-p", "p", "-t", "orders", "--backup-only")
    listed = orders.ok("s3clean", "list", "-t", "orders")
    lines = listed.output.splitlines()
    kinds = sorted(line.split()[0] for line in lines if line.endswith(".parquet"))
    assert kinds == ["loaded", "waiting"]
    assert f"p/{orders.table}/: 2 file(s)" in listed.output
    assert any(line.split()[:4] == ["<", "1", "day", "2"] for line in lines), listed.output
    stamped = orders.ok("s3clean", "list", "-t", "orders", "-p", "p", "--show-timestamps")
    assert "written (UTC day)" in stamped.output
    data = orders.json("s3clean", "list", "-t", "orders")
    assert data["count"] == 2 and data["total_bytes"] == sum(f["size"] for f in data["files"])


def test_clean_deletes_only_loaded_files_unless_forced(orders: Orders) -> None:
    orders.insert(range(1, 11), BASE_TIME)
    orders.ok("sync", "-p", "p", "-t", "orders", "--limit", "5", "--max-chunks", "1")
    orders.ok("sync", "-p", "p", "-t", "orders", "--backup-only")
    files = orders.json("s3clean", "list", "-t", "orders")["files"]
    loaded = next(f["name"] for f in files if f["kind"] == "loaded")
    waiting = next(f["name"] for f in files if f["kind"] == "waiting")
    young = orders.ok("s3clean", "clean", "-t", "orders", "--older-than", "7d")
    assert "deleted 0 file(s)" in young.output, "nothing is a week old"
    preview = orders.ok("s3clean", "clean", "-t", "orders", "--older-than", "0s", "--dry-run")
    assert f"would delete {loaded}" in preview.output
    assert f"kept {waiting}: committed but not loaded yet (--force deletes it)" in preview.output
    assert len(orders.json("s3clean", "list", "-t", "orders")["files"]) == 2
    done = orders.ok("s3clean", "clean", "-t", "orders", "--older-than", "0s")
    assert f"deleted {loaded}" in done.output
    assert [f["name"] for f in orders.json("s3clean", "list", "-t", "orders")["files"]] == [waiting]
    # The waiting file still loads: nothing it needs was deleted.
    orders.ok("sync", "-p", "p", "-t", "orders", "--redshift-only")
    assert orders.target_ids() == list(range(1, 11))
    bad = orders.run("s3clean", "clean", "-t", "orders", "--older-than", "a week")
    assert bad.exit_code == 2 and "use a number and a unit: 90s, 30m, 12h, 7d" in bad.output
    neither = orders.run("s3clean", "clean", "-t", "orders")
    assert (
        neither.exit_code == 2 and "give --older-than AGE and/or --pattern GLOB" in neither.output
    )


def test_a_pattern_cannot_leave_the_table_prefix(orders: Orders) -> None:
    orders.insert(range(1, 6), BASE_TIME)
    orders.ok("sync", "-p", "p", "-t", "orders")
    storage = open_storage(orders.config.storage)
    outside = [
        f"p/{orders.table}_archive/dt=2025-03-01/keep.parquet",  # a sibling prefix
        "p/other.table/dt=2025-03-01/keep.parquet",
        "elsewhere/test_keep.parquet",
        "test_top.parquet",
    ]
    for key in outside:
        storage.put_bytes(key, b"not ours")
    storage.put_bytes(f"p/{orders.table}/dt=2025-03-01/test_stray.parquet", b"stray")
    before_state = sorted(info.key for info in storage.list("_state/"))
    for pattern in ("../*", "/", "/*", "../../elsewhere/*"):
        refused = orders.run("s3clean", "clean", "-t", "orders", "--pattern", pattern, "--force")
        assert refused.exit_code == 2, (pattern, refused.output)
        assert "outside the table's folder" in refused.output or "is empty" in refused.output
    kept = orders.ok("s3clean", "clean", "-t", "orders", "--pattern", "test_*")
    assert "kept dt=2025-03-01/test_stray.parquet: in no manifest, never loaded" in kept.output
    everything = orders.ok("s3clean", "clean", "-t", "orders", "--pattern", "**", "--force")
    assert "deleted dt=2025-03-01/test_stray.parquet" in everything.output
    assert "deleted 2 file(s)" in everything.output
    remaining = {info.key for info in storage.list()}
    assert set(outside) <= remaining, "nothing outside the table's folder was touched"
    assert sorted(info.key for info in storage.list("_state/")) == before_state
    assert not [key for key in remaining if key.startswith(f"p/{orders.table}/")]
    assert orders.target_ids() == [1, 2, 3, 4, 5], "the target keeps its rows"
    orders.insert([6], BASE_TIME + timedelta(hours=1))
    orders.ok("sync", "-p", "p", "-t", "orders")  # loaded files may go; syncing goes on
    assert orders.target_ids() == [1, 2, 3, 4, 5, 6]
