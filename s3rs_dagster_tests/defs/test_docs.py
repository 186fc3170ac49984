"""The production dagster.yaml of docs/dagster.md loads into a Dagster instance.

Its `storage:` section needs dagster-postgres, which is not installed here, so it is left out;
the run coordinator, run launcher and concurrency settings are checked as written.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.run_coordinator import QueuedRunCoordinator

DOC = Path(__file__).resolve().parents[2] / "docs" / "dagster.md"


def production_yaml() -> dict:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    [block] = [b for b in blocks if b.startswith("# $DAGSTER_HOME/dagster.yaml")]
    return yaml.safe_load(block)


def test_the_production_dagster_yaml_loads_without_its_postgres_storage(tmp_path: Path) -> None:
    settings = production_yaml()
    assert set(settings["storage"]["postgres"]["postgres_db"]) == {
        "hostname",
        "port",
        "db_name",
        "username",
        "password",
    }
    del settings["storage"]
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(settings))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        run_queue = instance.get_concurrency_config().run_queue_config
        assert run_queue is not None and run_queue.max_concurrent_runs == 10
        assert instance.global_op_concurrency_default_limit == 1
