"""The `s3rs` command line: entry points, `config validate`, and exit codes for user mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3rs_dagster.cli import cli

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "pipelines.yaml"


def run_cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_config_validate_on_the_shipped_file_lists_pipelines_and_tables() -> None:
    result = run_cli("--config", str(SHIPPED), "config", "validate")
    assert result.exit_code == 0, result.output
    assert f"{SHIPPED}: valid" in result.output
    assert "pipeline local: local_mariadb -> local_postgres (postgres)" in result.output
    assert "pipeline local_ssh: local_mariadb_via_bastion via ssh -> local_duckdb" in result.output
    assert "s3rs.orders" in result.output


def test_config_from_environment_variable(tmp_path: Path) -> None:
    result = run_cli("config", "validate", env={"S3RS_CONFIG": str(SHIPPED)})
    assert result.exit_code == 0, result.output


def test_misspelt_key_exits_2_and_names_it(tmp_path: Path) -> None:
    broken = tmp_path / "pipelines.yaml"
    broken.write_text(SHIPPED.read_text().replace("cdc_id_column:", "cdc_id_colum:"))
    result = run_cli("--config", str(broken), "config", "validate")
    assert result.exit_code == 2
    assert 'pipelines.local.tables["s3rs.orders"].cdc_id_colum' in result.output
    assert "did you mean 'cdc_id_column'?" in result.output
    assert "Traceback" not in result.output


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("--config", str(tmp_path / "nope.yaml"), "config", "validate")
    assert result.exit_code == 2
    assert "no config file at" in result.output and "nope.yaml" in result.output


def test_missing_environment_variable_exits_2(tmp_path: Path) -> None:
    broken = tmp_path / "pipelines.yaml"
    broken.write_text(SHIPPED.read_text().replace("${MYSQL_PASSWORD:-}", "${S3RS_TEST_UNSET_PW}"))
    result = run_cli("--config", str(broken), "config", "validate")
    assert result.exit_code == 2
    assert "connections.sources.local_mariadb.password" in result.output
    assert "S3RS_TEST_UNSET_PW is not set" in result.output


def test_every_command_has_help_with_an_example() -> None:
    def walk(command, path):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    for path in walk(cli, []):
        result = run_cli(*path, "--help")
        assert result.exit_code == 0
        assert "Example" in result.output, f"s3rs {' '.join(path)} --help has no example"


@pytest.mark.parametrize(
    "argv",
    [[sys.executable, "-m", "s3rs_dagster"], [str(Path(sys.executable).parent / "s3rs")]],
    ids=["python -m s3rs_dagster", "s3rs console script"],
)
def test_entry_points_start_the_cli(argv: list[str]) -> None:
    result = subprocess.run(
        [*argv, "--config", str(SHIPPED), "config", "validate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_user_mistake_in_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "pipelines.yaml"
    broken.write_text("storage: {url: s3://ok-bucket}\npipelines: {}\nconection: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "s3rs_dagster", "--config", str(broken), "config", "validate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "conection: unknown key 'conection' (did you mean 'connections'?)" in result.stderr
    assert "Traceback" not in result.stderr
