"""`s3rs sync`: the dry run's file decisions, --limit's plain words, run logs, exit codes."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from s3rs_dagster.cli import cli
from s3rs_dagster_tests.commands.conftest import BASE_TIME, Orders, invoke


def test_dry_run_lists_the_files_it_would_load_and_why(orders: Orders) -> None:
    orders.insert(range(1, 11), BASE_TIME)
    orders.ok("sync", "-p", "p", "-t", "orders", "--limit", "5")
    orders.ok("sync", "-p", "p", "-t", "orders", "--backup-only")
    orders.insert(range(11, 14), BASE_TIME + timedelta(hours=1))
    dry = orders.ok("sync", "-p", "p", "-t", "orders", "--dry-run")
    assert "would extract 3 of 3 pending rows in 1 chunk(s)" in dry.output
    assert "dry run: would load 1 file(s), 5 rows" in dry.output
    assert "already loaded (in the ledger)" in dry.output
    assert "after the cutoff" in dry.output
    assert "the files this run would extract are not listed" in dry.output
    assert orders.target_ids() == [1, 2, 3, 4, 5], "a dry run writes nothing"


def test_limit_bounds_extraction_and_says_what_the_load_loaded(orders: Orders) -> None:
    orders.insert(range(1, 41), BASE_TIME)
    orders.ok(
        "sync", "-p", "p", "-t", "orders", "--backup-only", "--limit", "5", "--max-chunks", "8"
    )
    orders.insert(range(41, 61), BASE_TIME + timedelta(days=1))
    result = orders.ok("sync", "-p", "p", "-t", "orders", "--limit", "50000")
    assert "extracted 20 rows in 1 file(s)" in result.output
    assert (
        "--limit bounded extraction only (50,000 rows: 20 rows extracted); the load stage "
        "loaded all 9 waiting file(s), 60 rows, 8 of them written by earlier runs"
    ) in result.output
    assert orders.target_ids() == list(range(1, 61))
    orders.insert(range(61, 71), BASE_TIME + timedelta(days=2))
    capped = orders.ok("sync", "-p", "p", "-t", "orders", "--limit", "4", "--backup-only")
    assert "extracted 4 rows" in capped.output
    assert "stopped at --limit 4 rows; the rest waits for the next run" in capped.output


def test_each_run_writes_a_log_and_a_json_summary(orders: Orders, log_dir: Path) -> None:
    orders.insert(range(1, 4), BASE_TIME)
    orders.ok("sync", "-p", "p", "-t", "orders")
    summaries = sorted(log_dir.glob("sync_*.json"))
    assert len(summaries) == 1 and summaries[0].with_suffix(".log").is_file()
    summary = json.loads(summaries[0].read_text())
    assert summary["exit_code"] == 0 and summary["result"]["failed"] == []
    assert summary["result"]["tables"][0]["load"]["rows"] == 3
    log = summaries[0].with_suffix(".log").read_text()
    assert "including" in log and "warehouse SQL: INSERT INTO" in log
    elsewhere = log_dir.parent / "elsewhere"
    orders.ok("--log-dir", str(elsewhere), "sync", "-p", "p", "-t", "orders")
    assert len(list(elsewhere.glob("sync_*.log"))) == 1


def test_verbose_shows_the_sql(orders: Orders) -> None:
    orders.insert(range(1, 4), BASE_TIME)
    result = orders.ok("sync", "-p", "p", "-t", "orders", "--verbose")
    assert "warehouse SQL: INSERT INTO" in result.stderr
    assert "load p/" in result.stdout and "after the cutoff" in result.stdout


def test_a_failed_table_exits_1_and_is_named(orders: Orders, log_dir: Path) -> None:
    orders.insert(range(1, 4), BASE_TIME)
    orders.db.execute("RENAME TABLE orders TO orders_gone")
    result = orders.run("sync", "-p", "p")
    assert result.exit_code == 1, result.output
    assert f"{orders.table}: EXTRACT FAILED" in result.output
    assert f"failed: {orders.table}" in result.output
    assert "1 table(s): 0 succeeded, 1 failed" in result.output
    summary = json.loads(next(log_dir.glob("sync_*.json")).read_text())
    assert summary["exit_code"] == 1 and summary["result"]["failed"] == [orders.table]


def test_usage_errors_exit_2_without_a_traceback(orders: Orders) -> None:
    cases = [
        (["sync", "-p", "p", "--backup-only", "--redshift-only"], "exclude each other"),
        (["sync", "-p", "p", "--redshift-only", "--limit", "5"], "--redshift-only does not"),
        (["sync", "-p", "nope"], "pipeline 'nope' is not defined"),
        (["sync", "-p", "p", "-t", "nope"], "table 'nope' is not defined in pipeline 'p'"),
        (["sync", "-p", "p", "--limit", "0"], "0 is not in the range x>=1"),
        (["watermark", "get", "-t", "nope"], "no pipeline has a table 'nope'"),
        (["watermark", "set", "-t", "orders", "--timestamp", "soon"], "is not a timestamp"),
        (["s3clean", "clean", "-t", "orders", "--pattern", "../*"], "outside the table's folder"),
        (
            ["watermark-count", "set-count", "-t", "orders", "--count", "x"],
            "is not a valid integer",
        ),
        (["watermark-count", "set-count", "-t", "orders", "--count", "1", "--mode", "sum"], "sum"),
    ]
    for args, message in cases:
        result = orders.run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)


def test_several_pipelines_need_p(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "pipelines.yaml"
    result = invoke("--config", str(shipped), "watermark", "get", "-t", "orders")
    assert result.exit_code == 2
    assert "table 'orders' is in several pipelines (local, local_redshift, local_ssh)" in (
        result.output
    )


def test_every_command_and_option_has_help_with_an_example() -> None:
    def walk(command, path):
        yield command, path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    seen = []
    for command, path in walk(cli, []):
        seen.append(" ".join(path))
        result = invoke(*path, "--help")
        assert result.exit_code == 0
        assert "Example" in result.output, f"s3rs {' '.join(path)} --help has no example"
        for param in command.params:
            if param.name != "help" and hasattr(param, "help"):
                assert param.help, f"s3rs {' '.join(path)} {param.opts} has no help text"
    for expected in (
        "sync",
        "watermark get",
        "watermark set",
        "watermark reset",
        "watermark-count validate-counts",
        "watermark-count set-count",
        "s3clean list",
        "s3clean clean",
        "status",
        "config validate",
    ):
        assert expected in seen
