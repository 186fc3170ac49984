"""Dagster resources for the connections of pipelines.yaml: SSH tunnel, MySQL (or the demo's
SQLite) source, storage and warehouse.

Each resource mirrors one section of pipelines.yaml and turns back into the validated config
model the core takes (`*_config()`), so a value overridden in Dagster (the launchpad, a
deployment's resource config) goes through the same checks as the file. `resources_for` builds
them from pipelines.yaml; every secret that the file reads from a set environment variable
becomes an `EnvVar` of that variable, so Dagster shows the variable's name, never its value.

The assets, checks, sensors and IO manager ask for them by key (`source_key`, `warehouse_key`,
`STORAGE_KEY`) and run the core with `runtime_config`: pipelines.yaml with these connections
in place of its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import TypeAdapter
from sqlalchemy.engine import Engine

from s3rs_dagster.adapters.source import open_source
from s3rs_dagster.adapters.storage import Storage, open_storage
from s3rs_dagster.adapters.tunnel import TUNNELS
from s3rs_dagster.adapters.warehouse import Warehouse, open_warehouse
from s3rs_dagster.config import (
    Config,
    SourceConfig,
    SqliteSourceConfig,
    SshTunnelConfig,
    StorageConfig,
    TargetConfig,
)

STORAGE_KEY = "s3rs_storage"


def source_key(source: str) -> str:
    """The resource key of a configured source, e.g. 'source_local_mariadb'."""
    return "source_" + re.sub(r"\W", "_", source)


def warehouse_key(target: str) -> str:
    """The resource key of a configured target, e.g. 'warehouse_local_redshift'."""
    return "warehouse_" + re.sub(r"\W", "_", target)


class SSHTunnelResource(dg.ConfigurableResource):
    """An SSH bastion (key authentication). Tunnels are shared per bastion and remote endpoint
    by every asset of the process, and reopened on the same local port if the link drops."""

    host: str
    port: int = 22
    username: str
    private_key_path: str
    private_key_passphrase: str | None = None
    host_key: str | None = None
    connect_timeout_seconds: float = 15.0
    keepalive_seconds: float = 30.0

    def tunnel_config(self) -> SshTunnelConfig:
        return SshTunnelConfig.model_validate({"enabled": True, **self._settings()})

    @contextmanager
    def get_tunnel(self, remote_host: str, remote_port: int) -> Iterator[tuple[str, int]]:
        """The local (host, port) that reaches remote_host:remote_port through the bastion."""
        with TUNNELS.forward(self.tunnel_config(), remote_host, remote_port) as local:
            yield local

    def _settings(self) -> dict[str, Any]:
        return {
            key: getattr(self, key)
            for key in SshTunnelConfig.model_fields
            if key != "enabled" and getattr(self, key) is not None
        }


class MySQLSourceResource(dg.ConfigurableResource):
    """A MySQL/MariaDB source, through `ssh_tunnel` when it is set."""

    host: str
    port: int = 3306
    database: str
    username: str
    password: str = ""
    time_zone: str = "+00:00"
    charset: str = "utf8mb4"
    connect_timeout_seconds: int = 15
    read_timeout_seconds: int | None = None
    ssh_tunnel: SSHTunnelResource | None = None

    def source_config(self) -> SourceConfig:
        settings = {
            key: getattr(self, key)
            for key in SourceConfig.model_fields
            if key not in ("type", "ssh_tunnel") and getattr(self, key) is not None
        }
        if self.ssh_tunnel is not None:
            settings["ssh_tunnel"] = self.ssh_tunnel.tunnel_config()
        return SourceConfig.model_validate(settings)

    @contextmanager
    def get_engine(self) -> Iterator[Engine]:
        """A SQLAlchemy engine on the source (session time zone set), disposed on exit."""
        with open_source(self.source_config()) as engine:
            yield engine


class SQLiteSourceResource(dg.ConfigurableResource):
    """A SQLite database file (the embedded demo source)."""

    path: str
    time_zone: str = "+00:00"

    def source_config(self) -> SqliteSourceConfig:
        return SqliteSourceConfig(type="sqlite", path=Path(self.path), time_zone=self.time_zone)

    @contextmanager
    def get_engine(self) -> Iterator[Engine]:
        """A read-only SQLAlchemy engine on the file, disposed on exit."""
        with open_source(self.source_config()) as engine:
            yield engine


class StorageResource(dg.ConfigurableResource):
    """Where Parquet files and state live. For s3:// the endpoint, region and credentials are
    dagster-aws' `S3Resource` (its client also lists new files for the sensors)."""

    url: str
    s3: S3Resource
    addressing_style: Literal["auto", "path", "virtual"] = "auto"

    def storage_config(self) -> StorageConfig:
        settings: dict[str, Any] = {"url": self.url, "addressing_style": self.addressing_style}
        if self.url.startswith("s3://"):
            settings |= {
                "endpoint_url": self.s3.endpoint_url,
                "region": self.s3.region_name,
                "access_key_id": self.s3.aws_access_key_id,
                "secret_access_key": self.s3.aws_secret_access_key,
            }
        return StorageConfig.model_validate(settings)

    def get_storage(self) -> Storage:
        return open_storage(self.storage_config())


_TARGET = TypeAdapter(TargetConfig)


class WarehouseResource(dg.ConfigurableResource):
    """A warehouse: `type` redshift, postgres or duckdb, with that type's settings."""

    type: Literal["redshift", "postgres", "duckdb"] = "redshift"
    host: str | None = None
    port: int | None = None
    database: str | None = None
    username: str | None = None
    password: str = ""
    schema_name: str | None = None
    """The target schema (pipelines.yaml's `schema`)."""
    iam_role: str | None = None
    region: str | None = None
    sslmode: str | None = None
    path: str | None = None
    """The database file of a duckdb target."""
    ssh_tunnel: SSHTunnelResource | None = None

    def target_config(self) -> TargetConfig:
        settings: dict[str, Any] = {"type": self.type}
        for key in ("host", "port", "database", "username", "iam_role", "region", "sslmode"):
            if getattr(self, key) is not None:
                settings[key] = getattr(self, key)
        if self.type != "duckdb":
            settings["password"] = self.password
        if self.type == "duckdb":
            settings["path"] = self.path
        if self.schema_name is not None:
            settings["schema"] = self.schema_name
        if self.ssh_tunnel is not None:
            settings["ssh_tunnel"] = self.ssh_tunnel.tunnel_config()
        return _TARGET.validate_python(settings)

    def get_warehouse(self, name: str, storage: StorageResource) -> Warehouse:
        return open_warehouse(name, self.target_config(), storage.storage_config())


def runtime_config(
    config: Config,
    *,
    storage: StorageResource,
    sources: dict[str, MySQLSourceResource | SQLiteSourceResource] | None = None,
    warehouses: dict[str, WarehouseResource] | None = None,
) -> Config:
    """pipelines.yaml with the resources' connections (by configured name) in its place."""
    return config.with_connections(
        sources={name: r.source_config() for name, r in (sources or {}).items()},
        targets={name: r.target_config() for name, r in (warehouses or {}).items()},
        storage=storage.storage_config(),
    )


def resources_for(config: Config) -> dict[str, dg.ConfigurableResource]:
    """One resource per configured source and target, and the storage, keyed for the assets."""
    resources: dict[str, dg.ConfigurableResource] = {STORAGE_KEY: _storage(config)}
    for name, source in config.connections.sources.items():
        if isinstance(source, SqliteSourceConfig):
            resources[source_key(name)] = SQLiteSourceResource(
                path=str(source.path), time_zone=source.time_zone
            )
            continue
        path = ("connections", "sources", name)
        settings = source.model_dump(exclude={"type", "ssh_tunnel", "password"})
        resources[source_key(name)] = MySQLSourceResource(
            **settings,
            password=_secret(config, (*path, "password"), source.password),
            ssh_tunnel=_tunnel(config, (*path, "ssh_tunnel"), source.ssh_tunnel),
        )
    for name, target in config.connections.targets.items():
        path = ("connections", "targets", name)
        settings = target.model_dump(exclude={"ssh_tunnel", "password", "schema_"})
        if "path" in settings:
            settings["path"] = str(settings["path"])
        if hasattr(target, "password"):
            settings["password"] = _secret(config, (*path, "password"), target.password)
        resources[warehouse_key(name)] = WarehouseResource(
            **settings,
            schema_name=target.schema_,
            ssh_tunnel=_tunnel(config, (*path, "ssh_tunnel"), getattr(target, "ssh_tunnel", None)),
        )
    return resources


def _storage(config: Config) -> StorageResource:
    storage = config.storage
    s3 = S3Resource(
        endpoint_url=storage.endpoint_url,
        region_name=storage.region,
        aws_access_key_id=storage.access_key_id,
        aws_secret_access_key=_secret(
            config, ("storage", "secret_access_key"), storage.secret_access_key
        )
        if storage.secret_access_key is not None
        else None,
    )
    return StorageResource(url=storage.url, s3=s3, addressing_style=storage.addressing_style)


def _tunnel(
    config: Config, path: tuple[str, ...], tunnel: SshTunnelConfig | None
) -> SSHTunnelResource | None:
    if tunnel is None or not tunnel.enabled:
        return None
    settings = tunnel.model_dump(exclude={"enabled", "private_key_passphrase"})
    settings["private_key_path"] = str(settings["private_key_path"])
    passphrase = tunnel.private_key_passphrase
    return SSHTunnelResource(
        **settings,
        private_key_passphrase=_secret(config, (*path, "private_key_passphrase"), passphrase)
        if passphrase is not None
        else None,
    )


def _secret(config: Config, path: tuple[str, ...], value: Any) -> Any:
    """An EnvVar of the variable the secret came from; the value itself only when it did not
    come from a set variable (an empty default written in the file, which is no secret)."""
    variable = config.secret_variable(*path)
    if variable is not None and variable in os.environ:
        return dg.EnvVar(variable)
    return value.get_secret_value() if value is not None else ""
