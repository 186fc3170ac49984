"""The Dagster code location (`workspace.yaml` points here).

It loads pipelines.yaml through the same validated model as the CLI, so a broken file makes
the location fail to load with the CLI's message. `definitions.py` builds everything from it.
"""

from s3rs_dagster.config import load_config
from s3rs_dagster.defs.definitions import build_definitions

defs = build_definitions(load_config())
