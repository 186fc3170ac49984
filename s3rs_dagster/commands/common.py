"""What every command shares: the context (config, verbosity, log folder), error handling,
pipeline resolution, the run log, and output helpers (aligned tables, sizes, JSON)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import click

from s3rs_dagster.adapters.warehouse import WarehouseError
from s3rs_dagster.config import Config, ConfigError, load_config
from s3rs_dagster.core.clean import CleanError
from s3rs_dagster.core.extract import EXPECTED_ERRORS
from s3rs_dagster.core.watermark_admin import AdminError

EXIT_FAILED = 1
EXIT_USAGE = 2
LOG_DIR_ENV_VAR = "S3RS_LOG_DIR"
PIPELINE_ENV_VAR = "S3RS_PIPELINE"
PACKAGE_LOGGER = "s3rs_dagster"

USAGE_ERRORS = (ConfigError, AdminError, CleanError)
"""Mistakes in the command line or the config: exit 2."""
RUN_ERRORS = (*EXPECTED_ERRORS, WarehouseError)
"""Things that went wrong while doing the work (a server down, a lease held): exit 1."""

F = TypeVar("F", bound=Callable[..., Any])


def default_log_dir() -> Path:
    """$S3RS_LOG_DIR, else $XDG_STATE_HOME/s3rs/logs, else ~/.local/state/s3rs/logs."""
    if os.environ.get(LOG_DIR_ENV_VAR):
        return Path(os.environ[LOG_DIR_ENV_VAR]).expanduser()
    state_home = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state_home) / "s3rs" / "logs"


def fail(message: str, code: int = EXIT_USAGE) -> None:
    click.secho(f"Error: {message}", fg="red", err=True)
    sys.exit(code)


def handled(func: F) -> F:
    """Turn expected errors into a message and an exit code, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USAGE_ERRORS as exc:
            fail(str(exc), EXIT_USAGE)
        except RUN_ERRORS as exc:
            fail(str(exc), EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


class Context:
    """The group's options, and the config loaded on first use."""

    def __init__(self, config_path: str | None, verbose: bool, log_dir: Path | None) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self.log_dir = log_dir
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def run_log(self, command: str, *, verbose: bool = False) -> RunLog:
        return RunLog(self.log_dir or default_log_dir(), command, self.verbose or verbose)


class RunLog:
    """A run's log file (everything s3rs logs, DEBUG and up) and its JSON summary.

    `with obj.run_log("sync") as log: ...; log.result = {...}`. The summary records the
    command line, start and end, the exit code and the result. A folder that cannot be written
    is reported once on stderr and the run goes on without a log. With verbose, DEBUG records
    (the SQL) are also shown on stderr.
    """

    def __init__(self, folder: Path, command: str, verbose: bool) -> None:
        self.folder = folder
        self.command = command
        self.verbose = verbose
        self.result: Any = None
        self.started = datetime.now(UTC)
        stamp = self.started.strftime("%Y%m%d_%H%M%S")
        base = f"{command.replace(' ', '_')}_{stamp}_{os.getpid()}"
        self.log_path: Path | None = folder / f"{base}.log"
        self.summary_path: Path | None = folder / f"{base}.json"
        self._handlers: list[logging.Handler] = []
        self._level = logging.NOTSET

    def __enter__(self) -> RunLog:
        logger = logging.getLogger(PACKAGE_LOGGER)
        self._level = logger.level
        logger.setLevel(logging.DEBUG)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            assert self.log_path is not None
            handler: logging.Handler = logging.FileHandler(self.log_path, encoding="utf-8")
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            self._handlers.append(handler)
        except OSError as exc:
            click.secho(
                f"warning: cannot write the run log in {self.folder} ({exc.strerror}); "
                f"set --log-dir or ${LOG_DIR_ENV_VAR}",
                fg="yellow",
                err=True,
            )
            self.log_path = self.summary_path = None
        if self.verbose:
            console = logging.StreamHandler(sys.stderr)
            console.addFilter(lambda record: record.levelno == logging.DEBUG)
            console.setFormatter(logging.Formatter("  %(message)s"))
            self._handlers.append(console)
        for handler in self._handlers:
            logger.addHandler(handler)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        logger = logging.getLogger(PACKAGE_LOGGER)
        code: int | str | None = 0
        if isinstance(exc, SystemExit):
            code = exc.code
        elif exc is not None:
            code = EXIT_FAILED
            logger.error("%s: %s", type(exc).__name__, exc)
        for handler in self._handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(self._level)
        if self.summary_path is None:
            return
        summary = {
            "command": self.command,
            "argv": sys.argv[1:],
            "started_at": self.started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "exit_code": code,
            "error": None if exc is None or isinstance(exc, SystemExit) else str(exc),
            "result": jsonable(self.result),
        }
        try:
            self.summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        except OSError as error:
            click.secho(f"warning: cannot write {self.summary_path}: {error}", err=True)


# --------------------------------------------------------------------------- options


def pipeline_option(func: F) -> F:
    return click.option(
        "-p",
        "--pipeline",
        envvar=PIPELINE_ENV_VAR,
        metavar="PIPELINE",
        help=(
            "Pipeline from pipelines.yaml (default: $S3RS_PIPELINE, else the only pipeline "
            "that has the table)."
        ),
    )(func)


def json_option(func: F) -> F:
    return click.option(
        "--json-output", is_flag=True, help="Print the result as JSON (for scripts)."
    )(func)


def resolve_pipeline(config: Config, pipeline: str | None, table: str | None = None) -> str:
    """The pipeline named, else the only one that has `table` (or the only one at all)."""
    if pipeline:
        config.pipeline(pipeline)
        return pipeline
    names = sorted(config.pipelines)
    if table is not None:
        having = []
        for name in names:
            try:
                config.table(name, table)
            except ConfigError:
                continue
            having.append(name)
        if len(having) == 1:
            return having[0]
        if not having:
            fail(f"no pipeline has a table '{table}'; pipelines: {', '.join(names)}")
        fail(f"table '{table}' is in several pipelines ({', '.join(having)}); choose one with -p")
    if len(names) == 1:
        return names[0]
    fail(f"several pipelines are defined ({', '.join(names)}); choose one with -p")
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- output


def size_text(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{count} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned; numbers right-aligned with thousands separators; None as '-'."""
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [
        any(isinstance(row[i], int | float) for row in rows)
        and all(isinstance(row[i], int | float) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]
    widths = [
        max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value


def echo_json(value: Any) -> None:
    click.echo(json.dumps(jsonable(value), indent=2, default=str))
