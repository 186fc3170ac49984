"""The source database: SQLAlchemy engines, and the raw connection bulk reads go through.

MySQL/MariaDB (PyMySQL, through an SSH tunnel when configured) is the production source. Every
connection sets the session time zone from the source's config, so DATETIME and TIMESTAMP values
mean the same thing whatever the server's default is. SQLite is the embedded demo source: a
local file whose DATETIME columns hold ISO text in the configured zone.

The core writes its SQL once, in MySQL's form (backtick-quoted identifiers, `%s` parameters);
`SourceConnection` runs it on either: SQLite reads backticks too, and gets `?` parameters.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pyarrow as pa
import pymysql
import pymysql.converters
import pymysql.cursors
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError

from s3rs_dagster.adapters.arrow_reader import LINK_LOST, ArrowReader, ArrowReaderError
from s3rs_dagster.adapters.tunnel import TUNNELS, TunnelError, TunnelRegistry
from s3rs_dagster.config import AnySourceConfig, SourceConfig, SqliteSourceConfig

logger = logging.getLogger(__name__)

# PyMySQL error codes a user can act on, with what to check.
_ACCESS_DENIED = {1044, 1045}
_UNREACHABLE = {2003, 2005, 2013}
_UNKNOWN_DATABASE = 1049
_CONNECTION_LOST = {2006, 2013, 2055}


RAW_TEXT_CONVERSIONS = {
    key: value for key, value in pymysql.converters.conversions.items() if not isinstance(key, int)
}
"""PyMySQL `conv` that keeps the parameter encoders and drops every result decoder: values
arrive as the server's text (str) or bytes (binary columns), for vectorised casting in Arrow."""


class SourceError(Exception):
    """The source cannot be reached or used; the message says what to check."""


class DatesUnreadable(SourceError):
    """connectorx refused a zero or invalid date ('0000-00-00', '2025-00-10') in a DATETIME
    or DATE column read as a date rather than as its text; read those columns as text."""


class ConnectionLost(Exception):
    """The source connection (or its tunnel) dropped; the work since the last commit may be
    retried on a new connection."""


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
    source: AnySourceConfig, *, tunnels: TunnelRegistry = TUNNELS, raw_text: bool = False
) -> Iterator[Engine]:
    """An Engine for the source, through its SSH tunnel when enabled; disposed on exit.

    With raw_text=True, MySQL result values are not decoded into Python types (see
    RAW_TEXT_CONVERSIONS); use it for bulk reads only, not for SQLAlchemy reflection.
    """
    if isinstance(source, SqliteSourceConfig):
        engine = _sqlite_engine(source)
    elif source.ssh_tunnel.enabled:
        with tunnels.forward(source.ssh_tunnel, source.host, source.port) as (host, port):
            engine = _engine(source, host, port, raw_text)
            try:
                yield engine
            finally:
                engine.dispose()
        return
    else:
        engine = _engine(source, source.host, source.port, raw_text)
    try:
        yield engine
    finally:
        engine.dispose()


def _sqlite_engine(source: SqliteSourceConfig) -> Engine:
    if not source.path.is_file():
        raise SourceError(
            f"the SQLite source {source.path} does not exist; check its `path` "
            "(relative paths are relative to the config file)"
        )
    # Read-only: a source is never written to.
    return sa.create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(f"{source.path.as_uri()}?mode=ro", uri=True)
    )


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


def check_source(source: AnySourceConfig, *, name: str = "source") -> str:
    """Connect, run a trivial query and return the server version, or raise SourceError."""
    version = "sqlite_version()" if isinstance(source, SqliteSourceConfig) else "VERSION()"
    try:
        with open_source(source) as engine, engine.connect() as connection:
            return str(connection.execute(sa.text(f"SELECT {version}")).scalar_one())
    except DBAPIError as exc:
        raise explain_source_error(exc, source, name) from None


def explain_source_error(exc: DBAPIError, source: AnySourceConfig, name: str) -> SourceError:
    """Turn a driver error into a message naming the connection and what to check."""
    original = exc.orig
    prefix = f"source '{name}' ({source.describe()})"
    if isinstance(source, SqliteSourceConfig):
        return SourceError(f"{prefix}: {original or exc}")
    code = original.args[0] if original is not None and original.args else None
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


_ARROW_DATE_REFUSED = "Couldn't convert the value `Date("
"""How connectorx's MySQL client (mysql_common) words a date it cannot make a date of."""
_ARROW_CONNECTION_LOST = (
    LINK_LOST,
    "Connection refused",
    "Connection reset",
    "Broken pipe",
    "Lost connection",
    "gone away",
    "timed out waiting for connection",
    "ended unexpectedly",
)

_QUOTED_OR_PARAMETER = re.compile(r"`(?:[^`]|``)*`|'(?:[^']|'')*'|%s")


def _qmark(sql: str) -> str:
    """`%s` parameters as SQLite's `?`, leaving quoted identifiers and strings alone."""
    return _QUOTED_OR_PARAMETER.sub(lambda m: "?" if m.group(0) == "%s" else m.group(0), sql)


class SourceConnection:
    """One DBAPI connection for bulk reads: values as text (or bytes for binary columns), in
    autocommit, timestamps in UTC. Queries are written in MySQL's form (see the module)."""

    def __init__(self, engine: Engine, source: AnySourceConfig, name: str) -> None:
        self.engine = engine
        self.source = source
        self.name = name
        self.is_sqlite = isinstance(source, SqliteSourceConfig)
        self._connection: Any = None
        self._arrow_reader: ArrowReader | None = None
        self._open()

    @property
    def utc_now_sql(self) -> str:
        """A query for the database clock in UTC, with microseconds where it has them."""
        if self.is_sqlite:
            return "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"
        return "SELECT UTC_TIMESTAMP(6)"

    def _open(self) -> None:
        try:
            if self.source.ssh_tunnel.enabled:
                assert isinstance(self.source, SourceConfig)
                TUNNELS.revive(self.source.ssh_tunnel, self.source.host, self.source.port)
            self._connection = self.engine.raw_connection()
            if not self.is_sqlite:
                with self._connection.cursor() as cursor:
                    # Every chunk is its own statement: no snapshot is held open between
                    # chunks, and TIMESTAMP values print in UTC, unambiguous across DST changes.
                    cursor.execute("SET SESSION time_zone = '+00:00'")
                    cursor.execute("SET SESSION autocommit = 1")
        except DBAPIError as exc:
            raise explain_source_error(exc, self.source, self.name) from None

    def reconnect(self) -> None:
        """Drop the connection and open a new one (through a revived tunnel if need be)."""
        self.close()
        self.engine.dispose()
        try:
            self._open()
        except (SourceError, TunnelError, pymysql.err.OperationalError) as exc:
            # A pool reconnecting after dispose() may raise the driver's own error, unwrapped.
            raise ConnectionLost(str(exc)) from None

    def close(self) -> None:
        if self._arrow_reader is not None:
            self._arrow_reader.close()
            self._arrow_reader = None
        if self._connection is not None:
            with suppress(Exception):  # closing a dead connection may fail any way
                self._connection.close()
            self._connection = None

    def scalar(self, sql: str, params: list[object]) -> Any:
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None

    def rows(self, sql: str, params: list[object]) -> list[tuple[Any, ...]]:
        cursor = self._connection.cursor()
        try:
            self._execute(cursor, sql, params)
            return self._as_text(cursor.fetchall())
        finally:
            cursor.close()

    def stream(self, sql: str, params: list[object], size: int) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of a query, `size` at a time, from a server-side (unbuffered) cursor."""
        cursor = (
            self._connection.cursor()
            if self.is_sqlite
            else self._connection.cursor(pymysql.cursors.SSCursor)
        )
        try:
            self._execute(cursor, sql, params)
            while True:
                try:
                    rows = cursor.fetchmany(size)
                except pymysql.err.OperationalError as exc:
                    raise ConnectionLost(str(exc)) from None
                if not rows:
                    return
                yield self._as_text(rows)
        finally:
            with suppress(Exception):  # the connection may be gone already
                cursor.close()

    @property
    def arrow_reader_available(self) -> bool:
        """Whether `stream_arrow` can run here: a MySQL source and connectorx installed."""
        return not self.is_sqlite and importlib.util.find_spec("connectorx") is not None

    def start_arrow_reader(self) -> None:
        """Start `stream_arrow`'s reader process ahead of the first query."""
        if self._arrow_reader is None:
            self._arrow_reader = ArrowReader()
        self._arrow_reader.start()

    def stream_arrow(self, sql: str, params: list[object], size: int) -> Iterator[pa.RecordBatch]:
        """A query's rows as Arrow record batches of up to `size` rows, read by connectorx (a
        native MySQL client that fills Arrow arrays directly, several times PyMySQL's speed)
        in a child process (see adapters.arrow_reader).

        It opens its own connection to the same endpoint (the tunnel's local port when
        tunnelled), in the server's default time zone: callers use it only for queries whose
        result and conditions do not depend on the session zone (see core.extract).
        """
        assert isinstance(self.source, SourceConfig)
        literal = [pymysql.converters.escape_item(p, self.source.charset) for p in params]
        query = sql % tuple(literal) if literal else sql
        logger.debug("source SQL (arrow): %s", query)
        url = self.engine.url.set(drivername="mysql", query={})
        if self._arrow_reader is None:
            self._arrow_reader = ArrowReader()
        try:
            yield from self._arrow_reader.stream(
                url.render_as_string(hide_password=False), query, size, self._link_alive
            )
        except ArrowReaderError as exc:
            message = str(exc)
            if any(text in message for text in _ARROW_CONNECTION_LOST):
                raise ConnectionLost(message) from None
            if _ARROW_DATE_REFUSED in message:
                raise DatesUnreadable(message) from None
            raise SourceError(f"query on the source failed: {message}") from None

    def _link_alive(self) -> bool:
        """False once the source's SSH tunnel has lost its link to the bastion."""
        if not self.source.ssh_tunnel.enabled:
            return True
        assert isinstance(self.source, SourceConfig)
        return TUNNELS.is_alive(self.source.ssh_tunnel, self.source.host, self.source.port)

    def _as_text(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """SQLite returns typed values; give them as text, as MySQL's raw protocol does."""
        if not self.is_sqlite:
            return list(rows)
        return [
            tuple(v if v is None or isinstance(v, bytes | str) else str(v) for v in row)
            for row in rows
        ]

    def _execute(self, cursor: Any, sql: str, params: list[object]) -> None:
        logger.debug("source SQL: %s %s", sql, params)
        try:
            if self.is_sqlite:
                cursor.execute(_qmark(sql), params)
            else:
                cursor.execute(sql, params)
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] in _CONNECTION_LOST:
                raise ConnectionLost(str(exc)) from None
            raise SourceError(f"query on the source failed: {exc}") from None
        except (pymysql.err.MySQLError, sqlite3.Error) as exc:
            raise SourceError(f"query on the source failed: {exc}") from None
