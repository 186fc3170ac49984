"""pipelines.yaml -> typed, validated models.

One file holds connections, storage and pipelines. Loading it is a pipeline of its own:

    find the file -> parse YAML (duplicate keys refused) -> check that secrets are ${ENV}
    references -> interpolate ${VAR} / ${VAR:-default} -> validate with pydantic
    -> cross-check names (a pipeline's source and target exist)

Every problem found on the way becomes a `ConfigProblem` naming the key path, and all of
them are raised together as one `ConfigError` naming the file. Nothing here raises a bare
pydantic or YAML exception to the caller.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

CONFIG_ENV_VAR = "S3RS_CONFIG"
DEFAULT_CONFIG_NAME = "pipelines.yaml"

SECRET_KEYS = frozenset({"password", "secret_access_key", "private_key_passphrase"})
"""Keys whose values must come from the environment and are never echoed back."""

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
NAME_RULE = "letters, digits, '_' and '-', starting with a letter or '_', at most 63 characters"


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration, at one key path."""

    key_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.key_path}: {self.message}" if self.key_path else self.message


class ConfigError(Exception):
    """The configuration cannot be used; `str()` is the message for the user."""

    def __init__(self, file: Path | str | None, problems: list[ConfigProblem]) -> None:
        self.file = Path(file) if file is not None else None
        self.problems = problems
        super().__init__(self._render())

    def _render(self) -> str:
        where = str(self.file) if self.file is not None else "configuration"
        if len(self.problems) == 1:
            return f"{where}: {self.problems[0]}"
        lines = [f"{where}: {len(self.problems)} problems"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def did_you_mean(word: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or '' when none is close."""
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def format_key_path(parts: tuple[Any, ...] | list[Any]) -> str:
    """`pipelines.sales.tables["shop.orders"].cdc_strategy`: dotted, bracketing odd keys."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f'["{part}"]'
    return out


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML reads yes/no/on/off/true/false as booleans, and pydantic would take them as
        1 and 0: a number written as `yes` is a mistake, not a 1."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            members = typing.get_args(annotation) or (annotation,)
            if bool not in members and any(m in (int, float) for m in members):
                raise ValueError(
                    f"YAML read this as the boolean {str(value).lower()}; give a number"
                )
        return value


class SshTunnelConfig(_Model):
    """An SSH bastion in front of a database. Key authentication only."""

    enabled: bool = False
    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    username: str | None = None
    private_key_path: Path | None = None
    private_key_passphrase: SecretStr | None = None
    host_key: str | None = Field(
        default=None,
        description="The bastion's public host key ('ssh-ed25519 AAAA...'); verified when set.",
    )
    connect_timeout_seconds: float = Field(default=15.0, gt=0)
    keepalive_seconds: float = Field(default=30.0, ge=0)

    @field_validator("host_key")
    @classmethod
    def _host_key_is_openssh_line(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"(ssh|ecdsa)-[\w-]+ [A-Za-z0-9+/=]+( .*)?", value
        ):
            raise ValueError(
                "expected an OpenSSH public key line like 'ssh-ed25519 AAAAC3Nza...' "
                "(ssh-keyscan -t ed25519 BASTION prints it)"
            )
        return value

    @model_validator(mode="after")
    def _enabled_needs_endpoint(self) -> SshTunnelConfig:
        if self.enabled:
            missing = [
                key for key in ("host", "username", "private_key_path") if not getattr(self, key)
            ]
            if missing:
                raise ValueError(
                    f"an enabled ssh_tunnel needs {', '.join(missing)} "
                    "(or set enabled: false to connect directly)"
                )
        return self


class _TimeZoned(_Model):
    time_zone: str = Field(
        default="+00:00",
        description="Zone of DATETIME values: an offset like '+00:00' or an IANA name like 'UTC'.",
    )

    @field_validator("time_zone", mode="before")
    @classmethod
    def _time_zone_is_text(cls, value: Any) -> Any:
        if isinstance(value, int):
            raise ValueError(
                f'YAML read this as the number {value}; quote it, e.g. time_zone: "+08:00"'
            )
        return value

    @field_validator("time_zone")
    @classmethod
    def _time_zone_is_known(cls, value: str) -> str:
        if re.fullmatch(r"[+-](0\d|1[0-4]):[0-5]\d", value):
            return value
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"'{value}' is neither an offset like '+00:00' nor an IANA zone like 'UTC'"
            ) from None
        return value


class SourceConfig(_TimeZoned):
    """A MySQL/MariaDB server the pipelines read from."""

    type: Literal["mysql"] = "mysql"
    host: str
    port: int = Field(default=3306, ge=1, le=65535)
    database: str
    username: str
    password: SecretStr = SecretStr("")
    charset: str = "utf8mb4"
    connect_timeout_seconds: int = Field(default=15, ge=1)
    read_timeout_seconds: int | None = Field(default=None, ge=1)
    ssh_tunnel: SshTunnelConfig = SshTunnelConfig()

    def describe(self) -> str:
        """Where the source is, for messages (never the password)."""
        return f"{self.username}@{self.host}:{self.port}/{self.database}"


class SqliteSourceConfig(_TimeZoned):
    """A SQLite database file (the embedded demo source; relative to the config file).

    DATETIME columns hold ISO text ('YYYY-MM-DD HH:MM:SS[.ffffff]') in `time_zone`.
    """

    type: Literal["sqlite"]
    path: Path

    @property
    def ssh_tunnel(self) -> SshTunnelConfig:
        """Never tunnelled: the file is local."""
        return SshTunnelConfig()

    @property
    def database(self) -> str:
        return self.path.stem

    def describe(self) -> str:
        return f"sqlite:{self.path}"


SOURCE_TYPES = ("mysql", "sqlite")


def _source_tag(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return value.get("type", "mysql")
    return getattr(value, "type", None)


AnySourceConfig = SourceConfig | SqliteSourceConfig
SourceConfigUnion = Annotated[
    Annotated[SourceConfig, Tag("mysql")] | Annotated[SqliteSourceConfig, Tag("sqlite")],
    Discriminator(_source_tag),
]


class _WarehouseBase(_Model):
    schema_: str = Field(default="public", alias="schema")
    ssh_tunnel: SshTunnelConfig = SshTunnelConfig()
    statement_timeout_seconds: int = Field(
        default=3600,
        ge=1,
        le=7 * 24 * 3600,
        description=(
            "The warehouse cancels a statement running longer (statement_timeout), and the "
            "client stops waiting for an answer a little after it, so a link that went silent "
            "(a black-holed tunnel) fails the load instead of hanging it."
        ),
    )
    keepalive_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="TCP keepalive idle time and probe interval on the warehouse connection.",
    )

    @property
    def client_timeout_seconds(self) -> int:
        """How long the client waits for any answer: the statement timeout and some grace."""
        return self.statement_timeout_seconds + max(5, self.statement_timeout_seconds // 10)


class RedshiftTargetConfig(_WarehouseBase):
    """Amazon Redshift (or anything speaking its protocol)."""

    type: Literal["redshift"] = "redshift"
    host: str
    port: int = Field(default=5439, ge=1, le=65535)
    database: str
    username: str
    password: SecretStr = SecretStr("")
    iam_role: str | None = Field(
        default=None,
        description="Role ARN for COPY; without it COPY uses credentials from the environment.",
    )
    region: str | None = None
    sslmode: Literal["disable", "require", "verify-ca", "verify-full"] = "verify-ca"

    @field_validator("iam_role")
    @classmethod
    def _iam_role_is_arn(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"arn:aws[\w-]*:iam::\d{12}:role/[\w+=,.@/-]+", value
        ):
            raise ValueError(
                f"'{value}' is not an IAM role ARN like arn:aws:iam::123456789012:role/RedshiftCopy"
            )
        return value


class PostgresTargetConfig(_WarehouseBase):
    """PostgreSQL."""

    type: Literal["postgres"]
    host: str
    port: int = Field(default=5432, ge=1, le=65535)
    database: str
    username: str
    password: SecretStr = SecretStr("")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"


class DuckdbTargetConfig(_Model):
    """An embedded DuckDB file (relative paths are relative to the config file)."""

    type: Literal["duckdb"]
    path: Path
    schema_: str = Field(default="main", alias="schema")
    memory_limit: str = Field(
        default="256MB",
        description="DuckDB's memory_limit during a load (e.g. 256MB, 2GB): beyond it DuckDB "
        "spills to disk, so a load's memory does not grow with the number of rows.",
    )


TARGET_TYPES = ("redshift", "postgres", "duckdb")


def _target_tag(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return value.get("type", "redshift")
    return getattr(value, "type", None)


TargetConfig = Annotated[
    Annotated[RedshiftTargetConfig, Tag("redshift")]
    | Annotated[PostgresTargetConfig, Tag("postgres")]
    | Annotated[DuckdbTargetConfig, Tag("duckdb")],
    Discriminator(_target_tag),
]


class ConnectionsConfig(_Model):
    sources: dict[str, SourceConfigUnion] = {}
    targets: dict[str, TargetConfig] = {}


class StorageConfig(_Model):
    """Where Parquet files and state live: s3://bucket/prefix, file:///abs/path, or a path."""

    url: str
    endpoint_url: str | None = Field(
        default=None, description="For S3-compatible stores (SeaweedFS, MinIO, ...)."
    )
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    access_key_id: str | None = Field(
        default=None, description="Without it, the standard AWS credential chain is used."
    )
    secret_access_key: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _url_is_supported(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme == "s3":
            bucket = parsed.netloc
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ValueError(
                    f"'{bucket}' is not a valid S3 bucket name "
                    "(3-63 characters: lowercase letters, digits, '.' and '-')"
                )
        elif parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
                raise ValueError("a file:// URL needs an absolute path: file:///abs/path")
        elif parsed.scheme and len(parsed.scheme) > 1:
            raise ValueError(
                f"scheme '{parsed.scheme}://' is not supported; use s3://bucket/prefix, "
                "file:///abs/path or a plain path"
            )
        return value

    @model_validator(mode="after")
    def _keys_come_in_pairs(self) -> StorageConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access_key_id and secret_access_key, or neither")
        return self

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    @property
    def bucket(self) -> str | None:
        return urlparse(self.url).netloc if self.is_s3 else None

    @property
    def prefix(self) -> str:
        """The key prefix inside the bucket (s3) or '' (local); never with slashes around."""
        return urlparse(self.url).path.strip("/") if self.is_s3 else ""

    @property
    def local_root(self) -> Path | None:
        """The folder of a local store (file:// or a plain path), else None."""
        if self.is_s3:
            return None
        parsed = urlparse(self.url)
        return Path(parsed.path) if parsed.scheme == "file" else Path(self.url)


class ProcessingConfig(_Model):
    strategy: Literal["sequential", "parallel"] = "sequential"
    max_parallel_tables: int = Field(default=1, ge=1, le=64)
    batch_size: int = Field(
        default=50_000, ge=1, le=10_000_000, description="Rows per chunk (the default --limit)."
    )
    reader: Literal["auto", "pymysql"] = Field(
        default="auto",
        description=(
            "How rows are read from MySQL: 'auto' uses connectorx (Arrow, much faster) where "
            "the result is identical, else PyMySQL; 'pymysql' always uses PyMySQL."
        ),
    )

    initial_snapshot: Literal["auto", "off"] = Field(
        default="auto",
        description=(
            "How a hybrid table with no watermark yet (first sync, or after `watermark reset`) "
            "is read: 'auto' reads it once in primary-key order (a sequential scan, about twice "
            "as fast as the cursor index) when its key is one integer column, then continues "
            "incrementally; 'off' always reads in cursor order."
        ),
    )
    snapshot_checkpoint_rows: int = Field(
        default=1_000_000,
        ge=1,
        le=100_000_000,
        description=(
            "Initial snapshot: at most this many rows read between two commits (a killed "
            "run resumes from the last one); fewer when they would exceed ~32 MB in memory."
        ),
    )

    @model_validator(mode="after")
    def _parallelism_matches_strategy(self) -> ProcessingConfig:
        if self.strategy == "sequential" and self.max_parallel_tables > 1:
            raise ValueError(
                f"max_parallel_tables: {self.max_parallel_tables} needs strategy: parallel "
                "(sequential runs one table at a time)"
            )
        return self


CdcStrategy = Literal["hybrid", "timestamp_only", "id_only", "full_sync"]
Partitioning = Literal["daily", "hourly", "monthly", "none"]
WriteMode = Literal["merge", "append", "replace"]
TimestampUnit = Literal["seconds", "milliseconds", "microseconds"]
TIMESTAMP_STRATEGIES = ("hybrid", "timestamp_only")
DEFAULT_CRON = "0 * * * *"
"""The extraction cron of daily and hourly partitioned tables unless `cron` is set."""


class TableDefaults(_Model):
    """Keys shared by every table of a pipeline; a table's own keys win."""

    cdc_strategy: CdcStrategy | None = None
    cdc_timestamp_column: str | None = None
    cdc_id_column: str | None = None
    cdc_lag_seconds: int | None = None
    cdc_timestamp_unit: TimestampUnit | None = None
    partitioning: Partitioning | None = None
    start_date: date | None = None
    write_mode: WriteMode | None = None
    cron: str | None = None


class TableConfig(_Model):
    """One source table. Omitted keys are resolved from the source when it is reflected."""

    cdc_strategy: CdcStrategy = "hybrid"
    cdc_timestamp_column: str | None = None
    cdc_id_column: str | None = None
    cdc_lag_seconds: int = Field(
        default=0,
        ge=0,
        le=86_400,
        description="Leave rows newer than this many seconds for the next run (late commits).",
    )
    cdc_timestamp_unit: TimestampUnit = Field(
        default="seconds", description="Unit of an integer epoch cursor column."
    )
    primary_key: list[str] | None = Field(default=None, min_length=1)
    target_name: str | None = None
    partitioning: Partitioning | None = None
    start_date: date | None = None
    write_mode: WriteMode | None = None
    cron: str | None = Field(
        default=None,
        description=(
            "When Dagster's automation extracts the table (its latest window), as a UTC cron "
            f"like '0 * * * *'; 'none' turns it off. Default: '{DEFAULT_CRON}' for daily and "
            "hourly partitioned tables, 'none' for the others."
        ),
    )

    @field_validator("cron")
    @classmethod
    def _cron_has_five_fields(cls, value: str | None) -> str | None:
        if value is None or value == "none":
            return value
        fields = value.split()
        if len(fields) != 5 or not all(re.fullmatch(r"[0-9A-Za-z*/,?-]+", f) for f in fields):
            raise ValueError(
                f"'{value}' is not a cron of five fields (minute hour day month weekday), "
                "e.g. '0 * * * *' hourly or '30 2 * * *' daily at 02:30 UTC; or 'none'"
            )
        return value

    @field_validator("start_date", mode="before")
    @classmethod
    def _start_date_is_a_day(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            raise ValueError(f"use a date like {value.date().isoformat()}, not a timestamp")
        return value

    @model_validator(mode="after")
    def _resolve_defaults(self) -> TableConfig:
        updates: dict[str, Any] = {}
        timestamp_based = self.cdc_strategy in TIMESTAMP_STRATEGIES
        if timestamp_based and self.cdc_timestamp_column is None:
            updates["cdc_timestamp_column"] = "updated_at"
        if self.cdc_strategy in ("hybrid", "id_only") and self.cdc_id_column is None:
            updates["cdc_id_column"] = "id"
        partitioning = self.partitioning or ("daily" if timestamp_based else "none")
        updates["partitioning"] = partitioning
        if not timestamp_based and partitioning != "none":
            raise ValueError(
                f"partitioning: {partitioning} needs a timestamp cursor; "
                f"cdc_strategy: {self.cdc_strategy} tables use partitioning: none"
            )
        if partitioning != "none" and self.start_date is None:
            raise ValueError(
                f"start_date is required with partitioning: {partitioning} "
                "(the first partition), e.g. start_date: 2025-01-01"
            )
        if self.cdc_strategy == "full_sync" and self.write_mode not in (None, "replace"):
            raise ValueError(
                f"cdc_strategy: full_sync replaces the target; write_mode: {self.write_mode} "
                "cannot apply (drop write_mode or set it to replace)"
            )
        if self.cdc_strategy == "full_sync":
            updates["write_mode"] = "replace"
        if self.cron is None:
            updates["cron"] = DEFAULT_CRON if partitioning in ("daily", "hourly") else "none"
        return self.model_copy(update=updates)


class PipelineConfig(_Model):
    source: str
    target: str
    description: str | None = None
    processing: ProcessingConfig = ProcessingConfig()
    table_defaults: TableDefaults = TableDefaults()
    tables: dict[str, TableConfig] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_table_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        defaults = data.get("table_defaults")
        tables = data.get("tables")
        if not isinstance(defaults, Mapping) or not isinstance(tables, Mapping):
            return data
        merged = {
            name: {**defaults, **table} if isinstance(table, Mapping) else table
            for name, table in tables.items()
        }
        return {**data, "tables": merged}

    @field_validator("tables")
    @classmethod
    def _table_keys_are_qualified(cls, tables: dict[str, TableConfig]) -> dict[str, TableConfig]:
        for key in tables:
            schema, dot, table = key.partition(".")
            if not (dot and schema and table):
                raise ValueError(
                    f"table key '{key}' must be <schema>.<table>, e.g. settlement.settle_orders"
                )
        return tables

    def table(self, name: str, *, pipeline_name: str, file: Path | None) -> tuple[str, TableConfig]:
        """Find a table by `schema.table`, or by bare table name when that is unambiguous."""
        if name in self.tables:
            return name, self.tables[name]
        by_bare_name = [key for key in self.tables if key.partition(".")[2] == name]
        if len(by_bare_name) == 1:
            return by_bare_name[0], self.tables[by_bare_name[0]]
        defined = ", ".join(sorted(self.tables))
        if by_bare_name:
            message = (
                f"table '{name}' is ambiguous in pipeline '{pipeline_name}': "
                f"name it as one of {', '.join(sorted(by_bare_name))}"
            )
        else:
            bare = {key.partition(".")[2] for key in self.tables}
            message = (
                f"table '{name}' is not defined in pipeline '{pipeline_name}'"
                f"{did_you_mean(name, set(self.tables) | bare)}; defined: {defined}"
            )
        raise ConfigError(
            file, [ConfigProblem(format_key_path(("pipelines", pipeline_name, "tables")), message)]
        )


class Config(_Model):
    """The whole validated pipelines.yaml."""

    connections: ConnectionsConfig = ConnectionsConfig()
    storage: StorageConfig
    pipelines: dict[str, PipelineConfig] = Field(min_length=1)
    _source_file: Path | None = PrivateAttr(default=None)
    _secret_variables: dict[tuple[str, ...], str] = PrivateAttr(default_factory=dict)

    @property
    def source_file(self) -> Path | None:
        """The file this config was read from (None when parsed from text alone)."""
        return self._source_file

    def secret_variable(self, *path: str) -> str | None:
        """The environment variable a secret at `path` was read from, e.g.
        ('connections', 'sources', 'db', 'password') -> 'MYSQL_PASSWORD'; None if not set."""
        return self._secret_variables.get(path)

    def with_connections(
        self,
        *,
        sources: Mapping[str, AnySourceConfig] | None = None,
        targets: Mapping[str, RedshiftTargetConfig | PostgresTargetConfig | DuckdbTargetConfig]
        | None = None,
        storage: StorageConfig | None = None,
    ) -> Config:
        """This config with the named connections (and the storage) replaced.

        Dagster's resources use it: their settings win over the file's for the run.
        """
        connections = self.connections.model_copy(
            update={
                "sources": {**self.connections.sources, **(sources or {})},
                "targets": {**self.connections.targets, **(targets or {})},
            }
        )
        update: dict[str, Any] = {"connections": connections}
        if storage is not None:
            update["storage"] = storage
        return self.model_copy(update=update)

    def pipeline(self, name: str) -> PipelineConfig:
        """The named pipeline, or a ConfigError that lists the defined ones."""
        if name in self.pipelines:
            return self.pipelines[name]
        message = (
            f"pipeline '{name}' is not defined{did_you_mean(name, set(self.pipelines))}; "
            f"defined: {', '.join(sorted(self.pipelines))}"
        )
        raise ConfigError(self.source_file, [ConfigProblem("pipelines", message)])

    def table(self, pipeline: str, table: str) -> tuple[str, TableConfig]:
        """(`schema.table`, its config) for a table of a pipeline, found by full or bare name."""
        return self.pipeline(pipeline).table(table, pipeline_name=pipeline, file=self.source_file)

    def source_for(self, pipeline: str) -> AnySourceConfig:
        return self.connections.sources[self.pipeline(pipeline).source]

    def target_for(
        self, pipeline: str
    ) -> RedshiftTargetConfig | PostgresTargetConfig | DuckdbTargetConfig:
        return self.connections.targets[self.pipeline(pipeline).target]


# --------------------------------------------------------------------------- loading


def resolve_config_path(
    explicit: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """--config PATH, else $S3RS_CONFIG, else ./pipelines.yaml; a missing file is a ConfigError."""
    env = os.environ if env is None else env
    if explicit:
        path, how = Path(explicit), "--config"
    elif env.get(CONFIG_ENV_VAR):
        path, how = Path(env[CONFIG_ENV_VAR]), f"${CONFIG_ENV_VAR}"
    else:
        path, how = Path(DEFAULT_CONFIG_NAME), "the default"
    path = path.expanduser()
    if not path.is_file():
        hint = (
            f"pass --config PATH or set ${CONFIG_ENV_VAR}"
            if how == "the default"
            else "check the path"
        )
        problem = ConfigProblem("", f"no config file at {path.absolute()} (from {how}); {hint}")
        raise ConfigError(path, [problem])
    return path


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Find, parse, interpolate and validate pipelines.yaml; one ConfigError for all faults."""
    env = os.environ if env is None else env
    file = resolve_config_path(path, env)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        problem = (
            f"the file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); "
            "save it as UTF-8"
        )
        raise ConfigError(file, [ConfigProblem("", problem)]) from None
    except OSError as exc:
        raise ConfigError(file, [ConfigProblem("", f"cannot read the file: {exc}")]) from None
    return parse_config(text, file=file, env=env)


def parse_config(
    text: str, *, file: Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Validate config text; relative paths in it are relative to `file`'s folder."""
    env = os.environ if env is None else env
    if len(text) > MAX_CONFIG_CHARACTERS:
        lines = text.splitlines() or [text]
        longest = max(range(len(lines)), key=lambda index: len(lines[index]))
        problem = (
            f"the file holds {len(text):,} characters; a pipelines.yaml is at most "
            f"{MAX_CONFIG_CHARACTERS:,} (line {longest + 1} alone has "
            f"{len(lines[longest]):,}: a value pasted by mistake?)"
        )
        raise ConfigError(file, [ConfigProblem("", problem)])
    raw = _parse_yaml(text, file)
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(
            file,
            [
                ConfigProblem(
                    "",
                    f"the file is {kind}; expected a mapping with "
                    "connections, storage and pipelines",
                )
            ],
        )
    problems = list(_check_text_lengths(raw, ()))
    if problems:
        raise ConfigError(file, problems)
    problems = list(_check_keys_are_text(raw, ()))
    problems += _check_secrets_are_references(raw, ())
    if problems:
        raise ConfigError(file, problems)
    interpolated, problems = _interpolate(raw, (), env)
    if problems:
        raise ConfigError(file, problems)
    base = file.parent if file is not None else Path.cwd()
    interpolated = _resolve_relative_paths(interpolated, base)
    try:
        config = Config.model_validate(interpolated)
    except ValidationError as exc:
        raise ConfigError(file, _problems_from_validation(exc, interpolated)) from None
    config._source_file = file
    config._secret_variables = dict(_secret_variables(raw, ()))
    problems = _check_references(config)
    if problems:
        raise ConfigError(file, problems)
    return config


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_merge_sources(loader: _StrictLoader, value_node: yaml.Node) -> None:
    """`<<: [*a, *b]` with a key in both: YAML says the first wins, PyYAML the last; refuse
    rather than pick one silently."""
    if not isinstance(value_node, yaml.SequenceNode):
        return
    origin: dict[Any, int] = {}
    for index, source in enumerate(value_node.value):
        if not isinstance(source, yaml.MappingNode):
            continue
        for key_node, _ in source.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = loader.construct_object(key_node)
            if isinstance(key, str) and origin.setdefault(key, index) != index:
                raise yaml.constructor.ConstructorError(
                    "while merging mappings",
                    value_node.start_mark,
                    f"key '{key}' comes from two merged mappings; YAML libraries disagree on "
                    "which one wins, so set it in the mapping itself",
                    value_node.start_mark,
                )


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """Keys written twice in one mapping are refused; keys brought in by a merge (`<<: *x`)
    may be overridden by the mapping's own keys, as YAML's merge keys intend."""
    seen: set[Any] = set()
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            _check_merge_sources(loader, value_node)
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            raise _unhashable_key(node, key_node) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found duplicate key '{key}'",
                key_node.start_mark,
            )
    loader.flatten_mapping(node)  # merged keys first, the mapping's own keys after them
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            mapping[key] = loader.construct_object(value_node, deep=deep)
        except TypeError:
            raise _unhashable_key(node, key_node) from None
    return mapping


def _unhashable_key(
    node: yaml.MappingNode, key_node: yaml.Node
) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(
        "while reading a mapping", node.start_mark, "found an unhashable key", key_node.start_mark
    )


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


MAX_CONFIG_CHARACTERS = 1_000_000
"""A pipelines.yaml with a thousand tables is about 100,000 characters; parsing (pure-Python
YAML) takes seconds per megabyte, so a larger file is refused before it is parsed."""
MAX_EXPANDED_VALUES = 100_000
"""Values the file may hold once its aliases are expanded (a large pipelines.yaml has a few
thousand); more is an alias bomb ("billion laughs"), refused before anything expands it."""
MAX_TEXT_LENGTH = 10_000
"""Characters in any one key or value (an SSH host key line is under 1,000)."""


MAX_FLOW_DEPTH = 100
"""`[` and `{` nested deeper than this are refused before parsing: PyYAML scans a flow
collection's whole opening run before it emits a token, in time quadratic in its depth."""


_FLOW_SYNTAX = re.compile(r"[\[\]{}'\"#\n]")


def _check_flow_depth(text: str, file: Path | None) -> None:
    depth = 0
    quote = ""
    line = 1
    skip_to_eol = False
    for match in _FLOW_SYNTAX.finditer(text):
        char = match.group()
        previous = text[match.start() - 1] if match.start() else "\n"
        if char == "\n":
            line += 1
            skip_to_eol = False
        elif skip_to_eol:
            continue
        elif quote:
            if char == quote and previous != "\\":
                quote = ""
        elif char in "'\"" and previous in " \t[{,:\n":
            quote = char
        elif char == "#" and previous in " \t\n":
            skip_to_eol = True
        elif char in "[{":
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                problem = (
                    f"invalid YAML at line {line}: '[' and '{{' nested more than "
                    f"{MAX_FLOW_DEPTH} levels deep"
                )
                raise ConfigError(file, [ConfigProblem("", problem)])
        elif char in "]}":
            depth = max(0, depth - 1)


def _parse_yaml(text: str, file: Path | None) -> Any:
    _check_flow_depth(text, file)
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, file)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        what = exc.problem or "invalid YAML"
        if "\t" in what or "'\\t'" in what:
            what += " (YAML indents with spaces, never tabs)"
        raise ConfigError(file, [ConfigProblem("", f"invalid YAML at {where}: {what}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, [ConfigProblem("", f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise ConfigError(
            file, [ConfigProblem("", "invalid YAML: nested too deeply (hundreds of levels)")]
        ) from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, file: Path | None) -> None:
    """Refuse an alias that contains itself, and a document whose aliases expand to more
    than MAX_EXPANDED_VALUES values, by counting over the node graph (each node once)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_EXPANDED_VALUES:
                mark = node.start_mark
                raise ConfigError(
                    file,
                    [
                        ConfigProblem(
                            "",
                            f"the YAML at line {mark.line + 1} expands to more than "
                            f"{MAX_EXPANDED_VALUES:,} values through its aliases (an alias "
                            "bomb?); write shared keys once under table_defaults, or alias "
                            "fewer levels deep",
                        )
                    ],
                )
            continue
        if id(node) in open_nodes:
            mark = node.start_mark
            raise ConfigError(
                file,
                [
                    ConfigProblem(
                        "",
                        f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: "
                        "an alias refers to the value that contains it (endless recursion)",
                    )
                ],
            )
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) not in sizes:
                if id(child) in open_nodes:
                    mark = child.start_mark
                    raise ConfigError(
                        file,
                        [
                            ConfigProblem(
                                "",
                                f"invalid YAML at line {mark.line + 1}, column "
                                f"{mark.column + 1}: an alias refers to the value that "
                                "contains it (endless recursion)",
                            )
                        ],
                    )
                stack.append((child, False))


def _check_text_lengths(node: Any, path: tuple[Any, ...]) -> Iterator[ConfigProblem]:
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and len(key) > MAX_TEXT_LENGTH:
                yield ConfigProblem(
                    format_key_path(path),
                    f"a key of {len(key):,} characters (starting {key[:20]!r}); keys and "
                    f"values are at most {MAX_TEXT_LENGTH:,} characters",
                )
            else:
                yield from _check_text_lengths(value, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _check_text_lengths(item, (*path, index))
    elif isinstance(node, str) and len(node) > MAX_TEXT_LENGTH:
        yield ConfigProblem(
            format_key_path(path),
            f"a value of {len(node):,} characters; values are at most "
            f"{MAX_TEXT_LENGTH:,} characters",
        )


def _check_keys_are_text(node: Any, path: tuple[Any, ...]) -> Iterator[ConfigProblem]:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                yield ConfigProblem(
                    format_key_path(path),
                    f'key {key!r} is read by YAML as {type(key).__name__}; quote it: "{key}"',
                )
            else:
                yield from _check_keys_are_text(value, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _check_keys_are_text(item, (*path, index))


_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_WHOLE_REFERENCE = re.compile(r"\s*\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}\s*")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


def _check_secrets_are_references(node: Any, path: tuple[Any, ...]) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SECRET_KEYS and value not in (None, ""):
                if not (isinstance(value, str) and _WHOLE_REFERENCE.fullmatch(value)):
                    problems.append(
                        ConfigProblem(
                            format_key_path((*path, key)),
                            "secrets are read from the environment only: write "
                            f"{key}: ${{SOME_ENV_VAR}} and export SOME_ENV_VAR",
                        )
                    )
            else:
                problems += _check_secrets_are_references(value, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            problems += _check_secrets_are_references(item, (*path, index))
    return problems


def _secret_variables(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    """(key path, variable name) of every secret given as a ${VAR} reference."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SECRET_KEYS and isinstance(value, str):
                match = _VARIABLE.fullmatch(value.strip()[2:-1]) if value.strip() else None
                if match and _WHOLE_REFERENCE.fullmatch(value):
                    yield (*path, str(key)), match.group(1)
            else:
                yield from _secret_variables(value, (*path, str(key)))


def _interpolate(
    node: Any, path: tuple[Any, ...], env: Mapping[str, str]
) -> tuple[Any, list[ConfigProblem]]:
    """Replace ${VAR} and ${VAR:-default} in every string; '$$' is a literal '$'."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        problems: list[ConfigProblem] = []
        for key, value in node.items():
            out[key], found = _interpolate(value, (*path, key), env)
            problems += found
        return out, problems
    if isinstance(node, list):
        items, problems = [], []
        for index, item in enumerate(node):
            value, found = _interpolate(item, (*path, index), env)
            items.append(value)
            problems += found
        return items, problems
    if not isinstance(node, str) or "$" not in node:
        return node, []
    return _interpolate_text(node, path, env)


def _interpolate_text(
    text: str, path: tuple[Any, ...], env: Mapping[str, str]
) -> tuple[str, list[ConfigProblem]]:
    problems: list[ConfigProblem] = []
    out: list[str] = []
    position = 0
    while position < len(text):
        if text.startswith("$$", position):
            out.append("$")
            position += 2
            continue
        if text.startswith("${", position):
            match = _REFERENCE.match(text, position)
            variable = _VARIABLE.fullmatch(match.group(1)) if match else None
            if match is None or variable is None:
                problems.append(
                    ConfigProblem(
                        format_key_path(path),
                        "malformed environment reference; write ${VAR} or ${VAR:-default} "
                        "(and $$ for a literal $)",
                    )
                )
                return text, problems
            name, default = variable.group(1), variable.group(2)
            if name in env:
                out.append(env[name])
            elif default is not None:
                out.append(default)
            else:
                problems.append(
                    ConfigProblem(
                        format_key_path(path),
                        f"environment variable {name} is not set; export it, "
                        f"or give a default: ${{{name}:-value}}",
                    )
                )
            position = match.end()
            continue
        out.append(text[position])
        position += 1
    return "".join(out), problems


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make storage.url, duckdb paths and key paths relative to the config file, not the cwd."""

    def absolute(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    def tunnel(section: Any) -> Any:
        if isinstance(section, dict) and isinstance(section.get("ssh_tunnel"), dict):
            ssh = dict(section["ssh_tunnel"])
            if "private_key_path" in ssh:
                ssh["private_key_path"] = absolute(ssh["private_key_path"])
            return {**section, "ssh_tunnel": ssh}
        return section

    out = dict(raw)
    storage = out.get("storage")
    if isinstance(storage, dict) and isinstance(storage.get("url"), str):
        url = storage["url"]
        if "://" not in url and url:
            out["storage"] = {**storage, "url": absolute(url)}
    connections = out.get("connections")
    if isinstance(connections, dict):
        connections = dict(connections)
        for group in ("sources", "targets"):
            members = connections.get(group)
            if isinstance(members, dict):
                resolved = {}
                for name, member in members.items():
                    member = tunnel(member)
                    if isinstance(member, dict) and "path" in member:
                        member = {**member, "path": absolute(member["path"])}
                    resolved[name] = member
                connections[group] = resolved
        out["connections"] = connections
    return out


def _check_references(config: Config) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    groups = {"sources": config.connections.sources, "targets": config.connections.targets}
    for group, members in groups.items():
        for name in members:
            if not re.fullmatch(NAME_PATTERN, name):
                problems.append(
                    ConfigProblem(
                        format_key_path(("connections", group, name)),
                        f"name '{name}' is not allowed; use {NAME_RULE}",
                    )
                )
    for pipeline_name, pipeline in config.pipelines.items():
        problems += _check_table_keys_fit_storage(config, pipeline_name, pipeline)
        if not re.fullmatch(NAME_PATTERN, pipeline_name):
            problems.append(
                ConfigProblem(
                    format_key_path(("pipelines", pipeline_name)),
                    f"pipeline name '{pipeline_name}' is not allowed; use {NAME_RULE}",
                )
            )
        for field, group in (("source", "sources"), ("target", "targets")):
            wanted = getattr(pipeline, field)
            members = groups[group]
            if wanted not in members:
                defined = ", ".join(sorted(members)) or "none"
                problems.append(
                    ConfigProblem(
                        format_key_path(("pipelines", pipeline_name, field)),
                        f"'{wanted}' is not defined under connections.{group}"
                        f"{did_you_mean(wanted, set(members))}; defined: {defined}",
                    )
                )
    return problems


MYSQL_NAME_LENGTH = 64
"""MySQL's limit on a schema or table name, in characters."""
MAX_STORAGE_KEY_BYTES = 1024
"""S3's limit on a key, in bytes of UTF-8."""
_LONGEST_FILE_KEY_TAIL = (
    len("/dt=2025-01-01-00:00/") + len("_20250101_000000_") + 12 + len("_00001.parquet")
)


def _check_table_keys_fit_storage(
    config: Config, pipeline_name: str, pipeline: PipelineConfig
) -> list[ConfigProblem]:
    """A table's files live under `{pipeline}/{schema.table}/` (see core/naming.py): a name
    that would add folders (`/`), that S3 or a file system mangles (`\\`, control
    characters), or that makes a key longer than S3 allows cannot get a folder of its own."""
    problems = []
    for key in pipeline.tables:
        where = format_key_path(("pipelines", pipeline_name, "tables", key))
        bad = sorted({char for char in key if char in "/\\" or ord(char) < 32 or ord(char) == 127})
        if bad:
            shown = ", ".join(repr(char) for char in bad)
            problems.append(
                ConfigProblem(
                    where,
                    f"table {key!r} contains {shown}, which cannot be part of a storage key: "
                    "its files would not get a folder of their own ('/' would nest it inside "
                    "another table's folder). Rename the table in the source "
                    "(RENAME TABLE) to sync it; see docs/decisions.md, 'Identifiers'",
                )
            )
            continue
        schema, _, table = key.partition(".")
        if max(len(schema), len(table)) > MYSQL_NAME_LENGTH:
            problems.append(
                ConfigProblem(
                    where,
                    f"table key {key[:40]!r}... names a schema or table longer than "
                    f"{MYSQL_NAME_LENGTH} characters, which MySQL does not allow; check the name",
                )
            )
            continue
        longest = (
            len(config.storage.prefix.encode())
            + 2 * len(pipeline_name.encode())
            + len(key.encode())
            + len(f"{schema}_{table}".encode())
            + 2
            + _LONGEST_FILE_KEY_TAIL
        )
        if longest > MAX_STORAGE_KEY_BYTES:
            problems.append(
                ConfigProblem(
                    where,
                    f"table {key!r} makes storage keys of up to {longest} bytes, more than "
                    f"the {MAX_STORAGE_KEY_BYTES} S3 allows; use a shorter pipeline name or "
                    "storage prefix, or rename the table in the source",
                )
            )
    return problems


# --------------------------------------------------------------------------- pydantic errors


def _problems_from_validation(exc: ValidationError, raw: dict[str, Any]) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        location = _user_location(error["loc"], raw)
        problems.append(ConfigProblem(format_key_path(location), _describe(error, location, raw)))
    return problems


def _user_location(loc: tuple[Any, ...], raw: Any) -> tuple[Any, ...]:
    """Drop pydantic's union-tag components, which are not keys of the user's file."""
    out: list[Any] = []
    node = raw
    for part in loc:
        default_type = "mysql" if out[:2] == ["connections", "sources"] else "redshift"
        if isinstance(node, dict) and part not in node and node.get("type", default_type) == part:
            continue
        if isinstance(node, dict) and part == "schema_" and "schema" in node:
            part = "schema"
        out.append(part)
        node = node.get(part) if isinstance(node, dict) else None
    return tuple(out)


def _raw_at(raw: Any, location: tuple[Any, ...]) -> Any:
    node = raw
    for part in location:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return None
    return node


def _describe(error: Any, location: tuple[Any, ...], raw: Any) -> str:
    kind = error["type"]
    key = location[-1] if location else ""
    value = _raw_at(raw, location)
    shown = "" if key in SECRET_KEYS else f" (got {_short_repr(value)})"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(location[:-1], raw)
        hint = did_you_mean(str(key), allowed) if allowed else ""
        listing = f"; allowed here: {', '.join(sorted(allowed))}" if allowed else ""
        return f"unknown key '{key}'{hint}{listing}"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        node = _raw_at(raw, location)
        types_ = SOURCE_TYPES if "sources" in location else TARGET_TYPES
        tag = (_source_tag if "sources" in location else _target_tag)(node)
        hint = did_you_mean(str(tag), types_)
        return f"type '{tag}' is not supported{hint}; use one of: {', '.join(types_)}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        choices = re.findall(r"'([^']*)'", expected)
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else ""
        return f"{value!r} is not allowed{hint}; use one of: {', '.join(choices)}"
    message = error["msg"]
    if kind in ("value_error", "assertion_error"):
        message = re.sub(r"^(Value|Assertion) error, ", "", message)
        return message
    return f"{message[0].lower()}{message[1:]}{shown}"


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]}"


def _allowed_keys(location: tuple[Any, ...], raw: Any) -> list[str]:
    """The keys a model accepts at `location` (used for 'unknown key' messages)."""
    annotation: Any = Config
    node = raw
    for part in location:
        annotation = _unwrap(annotation, node)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = _field_by_key(annotation, part)
            if field is None:
                return []
            annotation = field.annotation
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return []
        node = node.get(part) if isinstance(node, dict) else None
    annotation = _unwrap(annotation, node)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [field.alias or name for name, field in annotation.model_fields.items()]
    return []


def _field_by_key(model: type[BaseModel], key: Any) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def _unwrap(annotation: Any, node: Any) -> Any:
    """Strip Annotated/Optional layers; pick a union member by the node's `type` tag."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            tag = _target_tag(node) if isinstance(node, Mapping) else None
            chosen = members[0]
            for member in members:
                inner = _unwrap(member, None)
                fields = getattr(inner, "model_fields", {})
                if "type" in fields and fields["type"].default == tag:
                    chosen = member
                    break
            annotation = chosen
        else:
            return annotation
