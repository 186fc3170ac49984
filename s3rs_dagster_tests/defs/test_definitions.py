"""The Dagster code location loads from workspace.yaml, and a broken config stops it loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).parent / "dagster"


def validate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DAGSTER), "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **env},
    )


def test_code_location_loads_with_the_shipped_config(tmp_path: Path) -> None:
    result = validate({"S3RS_CONFIG": str(REPO / "pipelines.yaml"), "DAGSTER_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr


def test_broken_config_fails_the_location_with_the_cli_message(tmp_path: Path) -> None:
    broken = tmp_path / "pipelines.yaml"
    broken.write_text((REPO / "pipelines.yaml").read_text().replace("start_date:", "start_dat:"))
    result = validate({"S3RS_CONFIG": str(broken), "DAGSTER_HOME": str(tmp_path)})
    assert result.returncode != 0
    assert "unknown key 'start_dat' (did you mean 'start_date'?)" in result.stdout + result.stderr
