"""The core tests' fixtures (a private MySQL database, a config over it), for the defs tests."""

from s3rs_dagster_tests.core.conftest import make_config, source_db

__all__ = ["make_config", "source_db"]
