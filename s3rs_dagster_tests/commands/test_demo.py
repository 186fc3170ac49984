"""`s3rs demo`: the whole job on the embedded default (SQLite -> file:// Parquet -> DuckDB)."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import duckdb
from click.testing import CliRunner

from s3rs_dagster.cli import cli


def test_the_demo_syncs_twice_and_the_warehouse_equals_the_source(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--dir", str(folder), "--rows", "3000"])
    assert result.exit_code == 0, result.output
    assert "counts agree" in result.output
    assert "incremental sync: extract" in result.output

    with sqlite3.connect(folder / "source.sqlite") as source:
        expected = [
            (id_, Decimal(str(amount)).quantize(Decimal("0.01")), note, time_, updated)
            for id_, amount, note, time_, updated in source.execute(
                'SELECT id, amount, note, "190_time", updated_at FROM settle_orders ORDER BY id'
            )
        ]
    with duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True) as warehouse:
        actual = warehouse.execute(
            "SELECT id, amount, note, col_190_time, strftime(updated_at, '%Y-%m-%d %H:%M:%S.%f') "
            "FROM settlement.settle_orders ORDER BY id"
        ).fetchall()
    assert len(expected) == 3000 + 30
    assert actual == expected
    assert any(note and "🎁" in note for _, _, note, _, _ in actual), "unicode survives"


def test_the_demo_refuses_a_folder_that_is_not_its_own(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path), "--rows", "100"])
    assert result.exit_code == 2
    assert "is not empty and not a previous demo's folder" in result.output
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert "Traceback" not in result.output
