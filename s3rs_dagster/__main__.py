"""`python -m s3rs_dagster` runs the same CLI as the `s3rs` console script."""

from s3rs_dagster.cli import main

if __name__ == "__main__":
    main()
