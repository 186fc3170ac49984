"""Fixtures of the reliability suite (its report's hooks are in report.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from s3rs_dagster_tests.core.conftest import make_config, source_db
from s3rs_dagster_tests.reliability.proxy import Proxies

__all__ = ["make_config", "source_db"]  # the core fixtures, for this package too


@pytest.fixture
def proxies() -> Iterator[Proxies]:
    """Fault proxies for one test, all closed after it."""
    pool = Proxies()
    yield pool
    pool.close_all()
