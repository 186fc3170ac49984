"""Shared fixtures. Tests that need servers use the real local stack (`scripts/stack up`).

When the stack's variables are not in the environment, they are read from
$S3RS_STACK_ENV or .stack/stack.env. A test that needs the stack and cannot find it fails
with instructions; it is never skipped.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from s3rs_dagster_tests.reliability.report import (  # noqa: F401  hooks and fixture of docs/RELIABILITY.md
    pytest_collection_modifyitems,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    reliability_note,
)

REPO = Path(__file__).resolve().parent.parent
STACK_VARIABLES = (
    "MYSQL_HOST", "MYSQL_PORT", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DATABASE",
    "S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "S3_BUCKET",
    "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DATABASE",
    "SSH_BASTION_HOST", "SSH_BASTION_PORT", "SSH_BASTION_USER", "SSH_BASTION_KEY_PATH",
    "REDSHIFT_HOST", "REDSHIFT_PORT", "REDSHIFT_USER", "REDSHIFT_PASSWORD", "REDSHIFT_DATABASE",
    "REDSHIFT_IAM_ROLE",
)  # fmt: skip


def read_stack_env(path: Path) -> dict[str, str]:
    """Parse the `export KEY='value'` lines that scripts/stack writes."""
    values = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"export (\w+)=(.*)", line.strip())
        if match:
            values[match.group(1)] = shlex.split(match.group(2))[0] if match.group(2) else ""
    return values


def _stack_env_file() -> Path:
    return Path(os.environ.get("S3RS_STACK_ENV", REPO / ".stack" / "stack.env"))


def pytest_configure(config: pytest.Config) -> None:
    if all(name in os.environ for name in STACK_VARIABLES):
        return
    env_file = _stack_env_file()
    if env_file.is_file():
        for key, value in read_stack_env(env_file).items():
            os.environ.setdefault(key, value)


@dataclass(frozen=True)
class Stack:
    """Connection facts of the running local stack."""

    env: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.env[key]

    def postgres(self, database: str | None = None, **options: Any) -> psycopg.Connection[Any]:
        """A connection to the stack's PostgreSQL (its own database unless `database`)."""
        return psycopg.connect(
            host=self["POSTGRES_HOST"],
            port=int(self["POSTGRES_PORT"]),
            user=self["POSTGRES_USER"],
            password=self["POSTGRES_PASSWORD"],
            dbname=database or self["POSTGRES_DATABASE"],
            **options,
        )


@pytest.fixture(scope="session")
def stack() -> Stack:
    missing = [name for name in STACK_VARIABLES if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"the local stack is not running or its variables are missing ({', '.join(missing)}); "
            f"start it with `scripts/stack up` (it writes {_stack_env_file()}), or run scripts/test"
        )
    return Stack({name: os.environ[name] for name in STACK_VARIABLES})


@pytest.fixture(autouse=True)
def _run_logs_in_tmp(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLI runs write their log and JSON summary under the test's temporary folder, not ~."""
    monkeypatch.setenv("S3RS_LOG_DIR", str(tmp_path_factory.mktemp("s3rs-logs")))
