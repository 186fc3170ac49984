"""s3rs_dagster: MySQL -> S3 Parquet -> Redshift, incrementally and exactly once, with Dagster."""

__version__ = "0.1.0"
