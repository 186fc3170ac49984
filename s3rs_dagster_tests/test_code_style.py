"""ruff lint and format hold for the whole repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(args: list[str]) -> None:
    result = subprocess.run(
        [
            str(RUFF),
            *args,
            "s3rs_dagster",
            "s3rs_dagster_tests",
            "scripts/stack",
            "scripts/redshift_standin.py",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
