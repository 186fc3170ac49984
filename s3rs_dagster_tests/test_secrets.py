"""Secrets never leave the environment: a sync and a failing sync, by CLI and by Dagster, with
known secret values, and every output scanned for them.

Scanned: CLI stdout and stderr, the run logs and JSON summaries, every object written to the
table's storage prefix (watermark, manifests, leases, batch summaries), and the Dagster events
of the runs (messages, metadata, failures).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from s3rs_dagster.adapters.storage import open_storage
from s3rs_dagster.cli import cli
from s3rs_dagster.config import Config
from s3rs_dagster.defs.assets import build_table_assets
from s3rs_dagster.defs.definitions import all_resources
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import (  # noqa: F401 (fixtures)
    MakeConfig,
    SourceDb,
    make_config,
    source_db,
)
from s3rs_dagster_tests.core.test_load import ORDERS_DDL, drop_schema, upsert

WRONG_PASSWORD = "wrong-Secret-7f3a9c1e"
SECRET_VARIABLES = ("MYSQL_PASSWORD", "POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY")


def secrets() -> list[str]:
    values = [os.environ[name] for name in SECRET_VARIABLES]
    assert all(len(value) >= 8 for value in values), "the stack's secrets are long enough to find"
    return [*values, WRONG_PASSWORD]


def assert_clean(text: str, where: str) -> None:
    for secret in secrets():
        assert secret not in text, f"a secret appears in {where}"


@pytest.fixture
def orders_config(
    source_db: SourceDb,  # noqa: F811
    make_config: MakeConfig,  # noqa: F811
    stack: Stack,
) -> Iterator[Config]:
    source_db.execute(ORDERS_DDL)
    upsert(source_db, range(1, 6), datetime(2025, 3, 2, 1), "row")
    config = make_config(
        {"orders": {"cdc_strategy": "hybrid", "start_date": "2025-01-01"}}, target="postgres"
    )
    yield config
    drop_schema(config, stack)


@pytest.mark.reliability(
    "known passwords and S3 keys in a good and a failing `s3rs sync` (wrong password)",
    "no secret in CLI output, run logs, JSON summaries or any object written to storage",
)
def test_no_secret_in_cli_output_logs_or_stored_objects(
    orders_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tmp_path / "logs"
    base = ["--config", str(orders_config.source_file), "--log-dir", str(logs)]
    runner = CliRunner()
    good = runner.invoke(cli, [*base, "-v", "sync", "-p", "p", "--json-output"])
    assert good.exit_code == 0, good.output
    assert_clean(good.output, "the output of a successful sync")

    monkeypatch.setenv("POSTGRES_PASSWORD", WRONG_PASSWORD)
    bad = runner.invoke(cli, [*base, "-v", "sync", "-p", "p"])
    assert bad.exit_code == 1, bad.output
    assert "password" in bad.output.lower() or "access" in bad.output.lower(), bad.output
    assert_clean(bad.output, "the output of a sync that failed on a wrong password")

    written = [path for path in logs.rglob("*") if path.is_file()]
    assert any(path.suffix == ".json" for path in written) and any(
        path.suffix == ".log" for path in written
    )
    for path in written:
        assert_clean(path.read_text(errors="replace"), str(path))
    storage = open_storage(orders_config.storage)
    objects = list(storage.list(""))
    assert objects, "the runs wrote state and files"
    for info in objects:
        if not info.key.endswith(".parquet"):
            assert_clean(storage.get_bytes(info.key)[0].decode(errors="replace"), info.key)


@pytest.mark.reliability(
    "known passwords and S3 keys in a good and a failing Dagster materialisation",
    "no secret in Dagster's event log, metadata or error messages",
)
def test_no_secret_in_dagster_events_and_metadata(
    orders_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    [assets] = build_table_assets(orders_config)
    instance = dg.DagsterInstance.ephemeral()
    good = dg.materialize(
        [assets.batches, assets.warehouse],
        partition_key="2025-03-02",
        resources=all_resources(orders_config),
        instance=instance,
    )
    assert good.success
    monkeypatch.setenv("MYSQL_PASSWORD", WRONG_PASSWORD)
    bad = dg.materialize(
        [assets.batches, assets.warehouse],
        partition_key="2025-03-02",
        resources=all_resources(orders_config),
        instance=instance,
        raise_on_error=False,
    )
    assert not bad.success
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.STEP_FAILURE)
    )
    assert records, "the failing run recorded its failure"
    for run in (good, bad):
        for event in run.all_events:
            assert_clean(repr(event), f"a Dagster event ({event.event_type_value})")
    for log in instance.all_logs(bad.run_id):
        assert_clean(repr(log), "the Dagster event log")
