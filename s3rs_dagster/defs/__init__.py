"""The Dagster code location (`workspace.yaml` points here).

It loads pipelines.yaml through the same validated model as the CLI, so a broken file makes
the location fail to load with the CLI's message. Per-table assets, resources, sensors and
checks are built on this in the code-location issue.
"""

from dagster import Definitions

from s3rs_dagster.config import load_config

config = load_config()

defs = Definitions()
