"""`s3rs`: the command line. A thin shell over the core; user mistakes exit 2, no traceback.

The commands live in `s3rs_dagster.commands`; this module holds the group, its shared options
and `config validate`.
"""

from __future__ import annotations

from pathlib import Path

import click

from s3rs_dagster import __version__
from s3rs_dagster.commands.common import LOG_DIR_ENV_VAR, Context, handled
from s3rs_dagster.commands.demo import demo
from s3rs_dagster.commands.s3clean import s3clean
from s3rs_dagster.commands.status import status
from s3rs_dagster.commands.sync import sync
from s3rs_dagster.commands.watermark import watermark, watermark_count
from s3rs_dagster.config import CONFIG_ENV_VAR
from s3rs_dagster.core.target import check_target_names


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help=f"pipelines.yaml to use (default: ${CONFIG_ENV_VAR}, else ./pipelines.yaml).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show SQL and every decision.")
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=LOG_DIR_ENV_VAR,
    help=f"Folder for each run's log and JSON summary (default: ${LOG_DIR_ENV_VAR}, else "
    "$XDG_STATE_HOME/s3rs/logs, else ~/.local/state/s3rs/logs).",
)
@click.version_option(__version__, prog_name="s3rs")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool, log_dir: Path | None) -> None:
    """Back up MySQL tables to S3 as Parquet and load them into Redshift, exactly once.

    \b
    Examples:
      s3rs --config pipelines.yaml config validate
      s3rs sync -p us_dw -t settle_orders
      s3rs status
    """
    ctx.obj = Context(config_path, verbose, log_dir)


@cli.group()
def config() -> None:
    """Check and inspect pipelines.yaml.

    \b
    Example:
      s3rs config validate
    """


@config.command("validate")
@click.pass_obj
@handled
def config_validate(obj: Context) -> None:
    """Validate the config file and list its pipelines and tables.

    Exits 0 when the file is valid, 2 (with every problem and its key path) when not.

    \b
    Example:
      s3rs --config pipelines.yaml config validate
    """
    cfg = obj.config
    check_target_names(cfg)
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


for command in (sync, watermark, watermark_count, s3clean, status, demo):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="s3rs")
