"""Fixtures for CLI tests: an `orders` table on the stack's MariaDB, a pipelines.yaml for it,
and a runner that invokes `s3rs` in-process and refuses tracebacks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from s3rs_dagster.cli import cli
from s3rs_dagster.config import Config
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core import conftest as core_fixtures
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb
from s3rs_dagster_tests.core.test_load import drop_schema, target_rows

source_db = core_fixtures.source_db
make_config = core_fixtures.make_config

ORDERS_DDL = """
CREATE TABLE orders (
  id BIGINT PRIMARY KEY,
  updated_at DATETIME(6) NOT NULL,
  amount DECIMAL(12,2),
  note VARCHAR(40) NULL,
  KEY by_updated (updated_at, id)
)
"""
HYBRID = {"cdc_strategy": "hybrid", "start_date": "2020-01-01"}
BASE_TIME = datetime(2025, 3, 1, 12, 0, 0)


@pytest.fixture(autouse=True)
def log_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every run's log and summary go to the test's folder."""
    folder = tmp_path / "logs"
    monkeypatch.setenv("S3RS_LOG_DIR", str(folder))
    return folder


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run `s3rs ARGS`; an exception other than a clean exit fails the test (no tracebacks)."""
    result = CliRunner().invoke(cli, list(args), input=input, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"s3rs {' '.join(args)} raised:\n{result.output}") from (
            result.exception
        )
    assert "Traceback" not in result.output
    return result


@dataclass
class Orders:
    """The orders table of one test, its config, and helpers to run the CLI on it."""

    db: SourceDb
    config: Config
    path: Path
    stack: Stack

    @property
    def table(self) -> str:
        return f"{self.db.name}.orders"

    def run(self, *args: str, input: str | None = None, config: Path | None = None) -> Result:
        return invoke("--config", str(config or self.path), *args, input=input)

    def ok(self, *args: str, input: str | None = None, config: Path | None = None) -> Result:
        result = self.run(*args, input=input, config=config)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json-output")
        assert result.exit_code in (0, 1), result.output
        return json.loads(result.stdout)

    def insert(self, ids: range | list[int], when: datetime, step: timedelta | None = None) -> None:
        """Insert (or update) rows stamped `when`, `when + step`, ..."""
        step = step if step is not None else timedelta(seconds=1)
        self.db.executemany(
            "INSERT INTO orders (id, updated_at, amount, note) VALUES (%s, %s, %s, %s) "
            "ON DUPLICATE KEY UPDATE updated_at = VALUES(updated_at), note = VALUES(note)",
            [(i, when + step * n, Decimal(i) / 4, f"note {i}") for n, i in enumerate(ids)],
        )

    def target_ids(self, config: Config | None = None) -> list[int]:
        """The ids in the target table, read with the warehouse's own driver."""
        return sorted(row["id"] for row in target_rows(config or self.config, self.stack))

    def source_ids(self, where: str = "1 = 1", params: Any = None) -> list[int]:
        rows = self.db.execute(f"SELECT id FROM orders WHERE {where}", params)
        return sorted(int(row[0]) for row in rows)

    def edit_config(self, change: Callable[[dict[str, Any]], None], name: str) -> Path:
        """A copy of pipelines.yaml changed by `change(document)`, next to it."""
        document = yaml.safe_load(self.path.read_text())
        change(document)
        copy = self.path.with_name(name)
        copy.write_text(yaml.safe_dump(document, sort_keys=False))
        return copy


def make_orders(
    source_db: SourceDb, make_config: MakeConfig, stack: Stack, tmp_path: Path, **options: Any
) -> Orders:
    source_db.execute(ORDERS_DDL)
    table_options = options.pop("table", HYBRID)
    # Cursor-order chunks, whose files and counts these tests print and check (the initial
    # snapshot is tested in core/test_initial_snapshot.py, through the CLI too).
    options.setdefault("processing", {"initial_snapshot": "off"})
    config = make_config({"orders": table_options}, **options)
    return Orders(source_db, config, tmp_path / "pipelines.yaml", stack)


@pytest.fixture
def orders(source_db: SourceDb, make_config: MakeConfig, stack: Stack, tmp_path: Path) -> Orders:
    """orders on DuckDB with local file storage: the quickest whole pipeline."""
    return make_orders(source_db, make_config, stack, tmp_path, local_storage=True)


@pytest.fixture
def orders_pg(
    source_db: SourceDb, make_config: MakeConfig, stack: Stack, tmp_path: Path
) -> Iterator[Orders]:
    """orders on PostgreSQL with S3 (SeaweedFS) storage; its schema is dropped after."""
    made = make_orders(source_db, make_config, stack, tmp_path, target="postgres")
    yield made
    drop_schema(made.config, stack)
