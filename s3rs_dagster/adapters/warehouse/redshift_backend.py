"""Amazon Redshift: staging is filled by one COPY of an S3 manifest of Parquet files.

Redshift reads the files itself, so the storage must be S3 and the cluster must be allowed to
read it (IAM_ROLE, or access keys from the storage config or the environment). When Redshift
rejects the data, its load-error views (SYS_LOAD_ERROR_DETAIL, then STL_LOAD_ERRORS) are read
for the file, row, column, value and reason.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import boto3
import redshift_connector

from s3rs_dagster.adapters.storage import Storage, StorageError
from s3rs_dagster.adapters.tunnel import TUNNELS
from s3rs_dagster.adapters.warehouse.base import (
    ConnectionLost,
    LoadError,
    Session,
    StagedFile,
    Warehouse,
    WarehouseError,
    qualified,
    quote,
)
from s3rs_dagster.adapters.warehouse.postgres_backend import columns_of
from s3rs_dagster.adapters.warehouse.types import WarehouseType
from s3rs_dagster.config import RedshiftTargetConfig, StorageConfig

LOAD_MANIFESTS = "_state/_loads/"
_DRIVER_ERRORS = (redshift_connector.Error, OSError, struct.error)
"""What a statement can raise: the server's errors, and (unwrapped by the driver) a socket
that timed out, was reset, or ended mid-message."""


class RedshiftSession(Session):
    def __init__(
        self,
        connection: redshift_connector.Connection,
        warehouse: RedshiftWarehouse,
    ) -> None:
        self.connection = connection
        self.warehouse = warehouse
        self._secrets: list[str] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._cursor() as cursor:
            self._run(cursor, sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._cursor() as cursor:
            self._run(cursor, sql, params)
            return [tuple(row) for row in cursor.fetchall()]

    def begin(self) -> None:
        """redshift-connector opens the transaction with the first statement."""

    def commit(self) -> None:
        try:
            self.connection.commit()
        except _DRIVER_ERRORS as exc:
            raise self._error("did not confirm the commit", exc) from None

    def rollback(self) -> None:
        # On a broken link the driver fails in odd ways (BrokenPipe, KeyError from its
        # statement cache); there is nothing to roll back then: the server aborted it.
        with suppress(*_DRIVER_ERRORS, KeyError):
            self.connection.rollback()

    def ddl(self, sql: str) -> None:
        """Some ALTERs (ALTER COLUMN TYPE) refuse to run inside a transaction block."""
        self.commit()
        self.connection.autocommit = True
        try:
            self.execute(sql)
        finally:
            self.connection.autocommit = False

    def widen(self, schema: str, table: str, column: str, new: WarehouseType) -> None:
        if new.name == "VARCHAR":
            super().widen(schema, table, column, new)
            return
        # Redshift alters only VARCHAR lengths in place; other types move to a new column.
        target = qualified(schema, table)
        temporary = quote(f"{column}__s3rs_widen")
        self.execute(f"ALTER TABLE {target} ADD COLUMN {temporary} {self.type_sql(new)}")
        self.execute(f"UPDATE {target} SET {temporary} = {quote(column)}")
        self.execute(f"ALTER TABLE {target} DROP COLUMN {quote(column)}")
        self.execute(f"ALTER TABLE {target} RENAME COLUMN {temporary} TO {quote(column)}")
        self.commit()

    def type_sql(self, kind: WarehouseType) -> str:
        return str(kind)

    def columns(self, schema: str, table: str) -> dict[str, WarehouseType] | None:
        return columns_of(self, schema, table)

    def fill(
        self,
        table: str,
        fields: Sequence[tuple[str, WarehouseType]],
        files: Sequence[StagedFile],
        storage: Storage,
    ) -> int:
        manifest_key = f"{LOAD_MANIFESTS}{uuid.uuid4().hex}.manifest"
        manifest = {
            "entries": [
                {"url": file.uri, "mandatory": True, "meta": {"content_length": file.size}}
                for file in files
            ]
        }
        try:
            storage.put_bytes(manifest_key, json.dumps(manifest).encode())
        except StorageError as exc:
            raise LoadError(f"cannot write the COPY manifest: {exc}") from None
        try:
            sql = (
                f"COPY {table} FROM '{storage.uri(manifest_key)}' "
                f"{self.warehouse.copy_authorization(self._secrets)} FORMAT AS PARQUET MANIFEST"
            )
            try:
                self.execute(sql)
            except ConnectionLost:
                raise
            except WarehouseError as exc:
                self.rollback()
                raise LoadError(self._diagnose(files, exc)) from None
            # redshift-connector reports no row count for COPY (Redshift says it is 8.0.2).
            return int(self.query("SELECT pg_last_copy_count()")[0][0])
        finally:
            with suppress(StorageError):
                storage.delete([manifest_key])

    def _diagnose(self, files: Sequence[StagedFile], exc: Exception) -> str:
        """The rejected file, row, column, value and reason from Redshift's error views."""
        detail = self._first_row(
            "SELECT TRIM(file_name), line_number, TRIM(column_name), TRIM(column_type), "
            "TRIM(error_message) FROM sys_load_error_detail WHERE session_id = pg_backend_pid() "
            "ORDER BY start_time DESC LIMIT 1"
        )
        raw = self._first_row(
            "SELECT TRIM(filename), line_number, TRIM(colname), TRIM(type), TRIM(err_reason), "
            "TRIM(raw_field_value) FROM stl_load_errors WHERE session = pg_backend_pid() "
            "ORDER BY starttime DESC LIMIT 1"
        )
        if detail is None and raw is None:
            names = ", ".join(file.uri for file in files[:3])
            return f"Redshift refused the COPY of {names}: {self._scrub(str(exc))}"
        file_name, line, column, column_type, reason = (detail or raw)[:5]
        value = raw[5] if raw is not None else None
        shown = f"; value {value!r}" if value is not None else ""
        return (
            f"Redshift rejected {file_name} at row {line}, column {column} ({column_type}): "
            f"{reason}{shown}"
        )

    def _first_row(self, sql: str) -> tuple[Any, ...] | None:
        try:
            rows = self.query(sql)
        except WarehouseError:
            self.rollback()
            return None
        return rows[0] if rows else None

    @contextmanager
    def _cursor(self) -> Iterator[redshift_connector.Cursor]:
        cursor = self.connection.cursor()
        try:
            yield cursor
        finally:
            with suppress(redshift_connector.Error):
                cursor.close()

    def _run(self, cursor: redshift_connector.Cursor, sql: str, params: Sequence[Any]) -> None:
        try:
            cursor.execute(sql, tuple(params) if params else None)
        except _DRIVER_ERRORS as exc:
            raise self._error("refused a statement", exc) from None

    def _error(self, what: str, exc: Exception) -> WarehouseError:
        """ConnectionLost when the link broke or went silent past the client timeout (the
        statement's fate is unknown); else the server's refusal (a ProgrammingError)."""
        if not isinstance(exc, redshift_connector.Error) or isinstance(
            exc, redshift_connector.InterfaceError | redshift_connector.OperationalError
        ):
            return ConnectionLost(
                f"lost the connection to {self.warehouse.description} ({what}): "
                f"{self._scrub(str(exc))}"
            )
        return WarehouseError(f"{self.warehouse.description} {what}: {self._scrub(str(exc))}")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class RedshiftWarehouse(Warehouse):
    kind = "redshift"

    def __init__(self, name: str, config: RedshiftTargetConfig, storage: StorageConfig) -> None:
        super().__init__(name, config.schema_)
        self.config = config
        self.storage_config = storage

    @property
    def description(self) -> str:
        c = self.config
        return f"redshift target '{self.name}' ({c.username}@{c.host}:{c.port}/{c.database})"

    def copy_authorization(self, secrets: list[str]) -> str:
        """IAM_ROLE when configured, else access keys (the storage's, or the environment's)."""
        if self.config.iam_role:
            return f"IAM_ROLE '{self.config.iam_role}'"
        storage = self.storage_config
        if storage.access_key_id and storage.secret_access_key:
            key, secret, token = (
                storage.access_key_id,
                storage.secret_access_key.get_secret_value(),
                None,
            )
        else:
            credentials = boto3.Session().get_credentials()
            if credentials is None:
                raise WarehouseError(
                    f"{self.description} has no iam_role and no AWS credentials were found for "
                    "COPY: set connections.targets.<name>.iam_role, or provide credentials"
                )
            frozen = credentials.get_frozen_credentials()
            key, secret, token = frozen.access_key, frozen.secret_key, frozen.token
        secrets.extend(value for value in (secret, token) if value)
        clause = f"ACCESS_KEY_ID '{key}' SECRET_ACCESS_KEY '{secret}'"
        return clause + (f" SESSION_TOKEN '{token}'" if token else "")

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[RedshiftSession]:
        c = self.config
        if not self.storage_config.url.startswith("s3://"):
            raise WarehouseError(
                f"{self.description} loads with COPY from S3, but storage.url is "
                f"{self.storage_config.url}; use an s3:// storage for a redshift target"
            )
        with ExitStack() as stack:
            host, port = c.host, c.port
            if c.ssh_tunnel.enabled:
                host, port = stack.enter_context(TUNNELS.forward(c.ssh_tunnel, c.host, c.port))
            try:
                connection = redshift_connector.connect(
                    host=host,
                    port=port,
                    database=c.database,
                    user=c.username,
                    password=c.password.get_secret_value(),
                    ssl=c.sslmode != "disable",
                    sslmode=c.sslmode if c.sslmode != "disable" else "verify-ca",
                    # The socket timeout bounds every wait for an answer: the statement
                    # timeout plus grace (it was a fixed 30 s, which failed any longer COPY).
                    timeout=c.client_timeout_seconds,
                    tcp_keepalive=True,
                    tcp_keepalive_idle=c.keepalive_seconds,
                    tcp_keepalive_interval=c.keepalive_seconds,
                    tcp_keepalive_count=3,
                    application_name="s3rs",
                )
            except redshift_connector.Error as exc:
                raise WarehouseError(f"cannot connect to {self.description}: {exc}") from None
            stack.callback(_close_quietly, connection)
            session = RedshiftSession(connection, self)
            session.execute(f"SET statement_timeout TO {c.statement_timeout_seconds * 1000}")
            session.commit()
            try:
                yield session
            finally:
                session.rollback()


def _close_quietly(connection: redshift_connector.Connection) -> None:
    """Close; a connection whose link already broke cannot say goodbye, and need not."""
    with suppress(*_DRIVER_ERRORS, KeyError):
        connection.close()
