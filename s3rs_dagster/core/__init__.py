"""The engine: extract, load, state, schema, clean. Plain Python; no Dagster or click import."""
