"""Fixtures of the hostile-input suite: the core's private database and config per test, and a
CLI runner that refuses tracebacks.

Every test carries `@pytest.mark.hostile` and a docstring whose first line is
"input -> outcome"; the reliability report lists them from that line.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result

from s3rs_dagster.cli import cli
from s3rs_dagster_tests.core.conftest import make_config, source_db

__all__ = ["make_config", "source_db"]  # the core fixtures, for this package too


def case_line(function: object) -> str:
    """The first line of a test's docstring: "input -> outcome", as the report shows it."""
    doc = (getattr(function, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


@pytest.fixture(autouse=True)
def _states_its_case(request: pytest.FixtureRequest) -> None:
    """Every hostile test says what it tries and what must happen, for the report."""
    if "->" not in case_line(request.function):
        pytest.fail(f"{request.node.nodeid}: the docstring's first line must be 'input -> outcome'")


def invoke(*args: str, input: str | None = None) -> Result:
    """Run `s3rs ARGS` in-process; any exception other than a clean exit fails the test."""
    result = CliRunner().invoke(cli, list(args), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"s3rs {' '.join(args)} raised:\n{result.output}") from (
            result.exception
        )
    assert "Traceback" not in result.output, result.output
    return result
