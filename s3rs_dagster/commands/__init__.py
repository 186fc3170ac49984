"""The `s3rs` commands, one module per command group; `s3rs_dagster.cli` assembles them."""
