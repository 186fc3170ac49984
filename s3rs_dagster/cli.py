"""`s3rs`: the command line. A thin shell over the core; user mistakes exit 2, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from s3rs_dagster import __version__
from s3rs_dagster.config import CONFIG_ENV_VAR, Config, ConfigError, load_config

EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.secho(f"Error: {message}", fg="red", err=True)
    sys.exit(code)


def user_errors(func: F) -> F:
    """Turn the errors a user can fix into a message and exit code 2, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            _fail(str(exc))

    return wrapper  # type: ignore[return-value]


class Context:
    """What every command shares: the --config option, loaded on first use."""

    def __init__(self, config_path: str | None, verbose: bool) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help=f"pipelines.yaml to use (default: ${CONFIG_ENV_VAR}, else ./pipelines.yaml).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show SQL and every decision.")
@click.version_option(__version__, prog_name="s3rs")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """Back up MySQL tables to S3 as Parquet and load them into Redshift, exactly once.

    \b
    Example:
      s3rs --config pipelines.yaml config validate
    """
    ctx.obj = Context(config_path, verbose)


@cli.group()
def config() -> None:
    """Check and inspect pipelines.yaml.

    \b
    Example:
      s3rs config validate
    """


@config.command("validate")
@click.pass_obj
@user_errors
def config_validate(obj: Context) -> None:
    """Validate the config file and list its pipelines and tables.

    Exits 0 when the file is valid, 2 (with every problem and its key path) when not.

    \b
    Example:
      s3rs --config pipelines.yaml config validate
    """
    cfg = obj.config
    click.echo(f"{cfg.source_file}: valid")
    click.echo(f"storage: {cfg.storage.url}")
    for name, pipeline in sorted(cfg.pipelines.items()):
        target = cfg.connections.targets[pipeline.target]
        source = cfg.connections.sources[pipeline.source]
        via = " via ssh" if source.ssh_tunnel.enabled else ""
        click.echo(
            f"pipeline {name}: {pipeline.source}{via} -> {pipeline.target} ({target.type}), "
            f"{len(pipeline.tables)} table(s), {pipeline.processing.strategy}"
        )
        width = max(len(table) for table in pipeline.tables)
        for table_name, table in sorted(pipeline.tables.items()):
            cursor = table.cdc_timestamp_column or table.cdc_id_column or "-"
            click.echo(
                f"  {table_name:<{width}}  {table.cdc_strategy:<14} cursor={cursor:<12} "
                f"partitioning={table.partitioning}"
            )


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="s3rs")
