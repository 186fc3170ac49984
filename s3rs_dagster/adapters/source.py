"""The MySQL/MariaDB source: SQLAlchemy engines over PyMySQL, through a tunnel when configured.

Every connection sets the session time zone from the source's config, so DATETIME and
TIMESTAMP values mean the same thing whatever the server's default is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pymysql
import pymysql.converters
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError

from s3rs_dagster.adapters.tunnel import TUNNELS, TunnelRegistry
from s3rs_dagster.config import SourceConfig

# PyMySQL error codes a user can act on, with what to check.
_ACCESS_DENIED = {1044, 1045}
_UNREACHABLE = {2003, 2005, 2013}
_UNKNOWN_DATABASE = 1049


RAW_TEXT_CONVERSIONS = {
    key: value for key, value in pymysql.converters.conversions.items() if not isinstance(key, int)
}
"""PyMySQL `conv` that keeps the parameter encoders and drops every result decoder: values
arrive as the server's text (str) or bytes (binary columns), for vectorised casting in Arrow."""


class SourceError(Exception):
    """The source cannot be reached or used; the message says what to check."""


def source_url(source: SourceConfig, host: str, port: int) -> URL:
    return URL.create(
        "mysql+pymysql",
        username=source.username,
        password=source.password.get_secret_value() or None,
        host=host,
        port=port,
        database=source.database,
        query={"charset": source.charset},
    )


@contextmanager
def open_source(
    source: SourceConfig, *, tunnels: TunnelRegistry = TUNNELS, raw_text: bool = False
) -> Iterator[Engine]:
    """An Engine for the source, through its SSH tunnel when enabled; disposed on exit.

    With raw_text=True, result values are not decoded into Python types (see
    RAW_TEXT_CONVERSIONS); use it for bulk reads only, not for SQLAlchemy reflection.
    """
    if source.ssh_tunnel.enabled:
        with tunnels.forward(source.ssh_tunnel, source.host, source.port) as (host, port):
            engine = _engine(source, host, port, raw_text)
            try:
                yield engine
            finally:
                engine.dispose()
    else:
        engine = _engine(source, source.host, source.port, raw_text)
        try:
            yield engine
        finally:
            engine.dispose()


def _engine(source: SourceConfig, host: str, port: int, raw_text: bool) -> Engine:
    connect_args: dict[str, object] = {"connect_timeout": source.connect_timeout_seconds}
    if raw_text:
        connect_args["conv"] = RAW_TEXT_CONVERSIONS
    if source.read_timeout_seconds:
        connect_args["read_timeout"] = source.read_timeout_seconds
    engine = sa.create_engine(
        source_url(source, host, port),
        connect_args=connect_args,
        pool_pre_ping=True,
        pool_recycle=3600,
    )
    time_zone = source.time_zone

    @event.listens_for(engine, "connect")
    def _set_session(dbapi_connection: pymysql.connections.Connection, _record: object) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET time_zone = %s", (time_zone,))

    return engine


def check_source(source: SourceConfig, *, name: str = "source") -> str:
    """Connect, run a trivial query and return the server version, or raise SourceError."""
    try:
        with open_source(source) as engine, engine.connect() as connection:
            return str(connection.execute(sa.text("SELECT VERSION()")).scalar_one())
    except DBAPIError as exc:
        raise explain_source_error(exc, source, name) from None


def explain_source_error(exc: DBAPIError, source: SourceConfig, name: str) -> SourceError:
    """Turn a driver error into a message naming the connection and what to check."""
    original = exc.orig
    code = original.args[0] if original is not None and original.args else None
    where = f"{source.username}@{source.host}:{source.port}/{source.database}"
    prefix = f"source '{name}' ({where})"
    if code in _ACCESS_DENIED:
        return SourceError(
            f"{prefix}: access denied; check connections.sources.{name}.username and password"
        )
    if code == _UNKNOWN_DATABASE:
        return SourceError(
            f"{prefix}: database '{source.database}' does not exist; "
            f"check connections.sources.{name}.database"
        )
    if code in _UNREACHABLE:
        return SourceError(f"{prefix}: cannot connect ({original.args[1] if original else exc})")
    return SourceError(f"{prefix}: {original or exc}")
