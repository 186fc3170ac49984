"""The Redshift stand-in (scripts/redshift_standin.py), driven by the real redshift-connector.

Every test talks to the `redshift` service of the running local stack, writes its Parquet files
to the stack's S3 under a unique prefix, and uses unique table names that it drops.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redshift_connector

from s3rs_dagster_tests.conftest import REPO, Stack

STANDIN = REPO / "scripts" / "redshift_standin.py"
LOAD_FAILED = "Load into table '{}' failed. Check 'sys_load_error_detail' system table for details."


def load_standin_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("redshift_standin", STANDIN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["redshift_standin"] = module
    spec.loader.exec_module(module)
    return module


def connect(stack: Stack, **options: Any) -> redshift_connector.Connection:
    options.setdefault("ssl", False)
    return redshift_connector.connect(
        host=stack["REDSHIFT_HOST"],
        port=int(stack["REDSHIFT_PORT"]),
        database=stack["REDSHIFT_DATABASE"],
        user=stack["REDSHIFT_USER"],
        password=stack["REDSHIFT_PASSWORD"],
        **options,
    )


class Bucket:
    """Parquet files and manifests under one unique prefix of the stack's bucket."""

    def __init__(self, stack: Stack) -> None:
        self.name = stack["S3_BUCKET"]
        self.prefix = f"standin-tests/{uuid.uuid4().hex}/"
        self.client = boto3.client(
            "s3",
            endpoint_url=stack["S3_ENDPOINT_URL"],
            aws_access_key_id=stack["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=stack["AWS_SECRET_ACCESS_KEY"],
            region_name=stack["AWS_REGION"],
        )

    def url(self, name: str) -> str:
        return f"s3://{self.name}/{self.prefix}{name}"

    def parquet(self, name: str, table: pa.Table) -> tuple[str, int]:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        self.client.put_object(Bucket=self.name, Key=self.prefix + name, Body=buffer.getvalue())
        return self.url(name), len(buffer.getvalue())

    def manifest(self, name: str, entries: list[dict[str, Any]]) -> str:
        body = json.dumps({"entries": entries}).encode()
        self.client.put_object(Bucket=self.name, Key=self.prefix + name, Body=body)
        return self.url(name)

    def manifest_of(self, name: str, files: list[tuple[str, int]]) -> str:
        return self.manifest(
            name,
            [
                {"url": url, "mandatory": True, "meta": {"content_length": size}}
                for url, size in files
            ],
        )

    def clear(self) -> None:
        listed = self.client.list_objects_v2(Bucket=self.name, Prefix=self.prefix)
        for item in listed.get("Contents", []):
            self.client.delete_object(Bucket=self.name, Key=item["Key"])


@pytest.fixture
def bucket(stack: Stack) -> Iterator[Bucket]:
    files = Bucket(stack)
    yield files
    files.clear()


@pytest.fixture
def conn(stack: Stack) -> Iterator[redshift_connector.Connection]:
    connection = connect(stack)
    yield connection
    connection.close()


@pytest.fixture
def table(conn) -> Iterator[str]:
    """A unique table name, dropped afterwards (by the test's connection, whose open
    transaction would otherwise block the DROP)."""
    name = f"standin_{uuid.uuid4().hex[:12]}"
    yield name
    conn.rollback()
    conn.cursor().execute(f"DROP TABLE IF EXISTS {name}")
    conn.commit()


def copy_sql(table: str, url: str, auth: str, *, manifest: bool = True) -> str:
    return f"COPY {table} FROM '{url}' {auth} FORMAT AS PARQUET{' MANIFEST' if manifest else ''}"


def role(stack: Stack) -> str:
    return f"IAM_ROLE '{stack['REDSHIFT_IAM_ROLE']}'"


def rows(connection: redshift_connector.Connection, sql: str) -> list[list[Any]]:
    cursor = connection.cursor()
    cursor.execute(sql)
    return [list(row) for row in cursor.fetchall()]


def load_errors(connection: redshift_connector.Connection) -> tuple[list[Any], list[Any]]:
    """This session's newest row in sys_load_error_detail and in stl_load_errors."""
    detail = rows(
        connection,
        "SELECT trim(file_name), line_number, trim(column_name), trim(column_type), "
        "trim(column_length), position, error_code, trim(error_message), session_id, query_id "
        "FROM sys_load_error_detail WHERE session_id = pg_backend_pid() "
        "ORDER BY start_time DESC, query_id DESC LIMIT 5",
    )
    stl = rows(
        connection,
        "SELECT trim(filename), line_number, trim(colname), trim(raw_field_value), err_code, "
        "trim(err_reason), session, query FROM stl_load_errors WHERE session = pg_backend_pid() "
        "ORDER BY starttime DESC, query DESC LIMIT 5",
    )
    assert detail and stl, "the load error was recorded"
    return detail[0], stl[0]


# --------------------------------------------------------------------------- connection


def test_connects_and_round_trips_queries(stack: Stack, conn, table: str) -> None:
    statuses = dict(conn.parameter_statuses)
    assert statuses[b"server_version"] == b"8.0.2", "reported as Redshift reports it"
    assert rows(conn, "SELECT current_database(), current_user, 6 * 7") == [
        [stack["REDSHIFT_DATABASE"], stack["REDSHIFT_USER"], 42]
    ]
    cursor = conn.cursor()
    cursor.execute(f"CREATE TABLE {table} (id INTEGER, note VARCHAR(20))")
    cursor.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "one"))
    cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s)", [(2, "two"), (3, None)])
    conn.commit()
    cursor.execute(f"INSERT INTO {table} VALUES (4, 'rolled back')")
    conn.rollback()
    with connect(stack) as other:
        assert rows(other, f"SELECT id, note FROM {table} ORDER BY id") == [
            [1, "one"],
            [2, "two"],
            [3, None],
        ]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # redshift-connector's SSLContext()
def test_default_ssl_connects_when_the_stand_in_ca_is_trusted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = os.environ.get("REDSHIFT_SSL_ROOT_CERT")
    assert ca, "scripts/stack makes a test CA with openssl; is openssl installed?"
    with pytest.raises(redshift_connector.InterfaceError):
        connect(stack, ssl=True)  # the CA is not trusted yet: verification fails, as it should
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    for options in ({"ssl": True}, {"ssl": True, "sslmode": "verify-full"}):
        with connect(stack, **options) as connection:  # the driver refuses a server without TLS
            assert rows(connection, "SELECT 1") == [[1]]


def test_wrong_password_is_refused(stack: Stack) -> None:
    with pytest.raises(redshift_connector.ProgrammingError, match="password authentication"):
        redshift_connector.connect(
            host=stack["REDSHIFT_HOST"],
            port=int(stack["REDSHIFT_PORT"]),
            database=stack["REDSHIFT_DATABASE"],
            user=stack["REDSHIFT_USER"],
            password="wrong",
            ssl=False,
        )


# --------------------------------------------------------------------------- COPY


TYPES_DDL = (
    "(id INTEGER, big BIGINT, amount DECIMAL(38,10), ratio DOUBLE PRECISION, flag BOOLEAN, "
    "day DATE, at TIMESTAMP, at_utc TIMESTAMPTZ, note VARCHAR(64), payload VARBYTE(32))"
)
UTC = dt.UTC


def typed_files() -> tuple[pa.Table, pa.Table, list[list[Any]]]:
    """Two Parquet tables covering the types, and the rows the warehouse must hold."""
    schema = pa.schema(
        [
            ("id", pa.int32()),
            ("big", pa.int64()),
            ("amount", pa.decimal128(38, 10)),
            ("ratio", pa.float64()),
            ("flag", pa.bool_()),
            ("day", pa.date32()),
            ("at", pa.timestamp("us")),
            ("at_utc", pa.timestamp("us", tz="UTC")),
            ("note", pa.string()),
            ("payload", pa.binary()),
        ]
    )
    first = [
        [1, 2, 3],
        [9_223_372_036_854_775_807, -1, None],
        [Decimal("1234567890123456789012345678.0123456789"), Decimal("-0.0000000001"), None],
        [0.1, -1.5e308, None],
        [True, False, None],
        [dt.date(2025, 1, 31), dt.date(1970, 1, 1), None],
        [dt.datetime(2025, 1, 31, 23, 59, 59, 999999), dt.datetime(2000, 2, 29, 12), None],
        [
            dt.datetime(2025, 6, 1, 1, 2, 3, 456789, tzinfo=UTC),
            dt.datetime(1999, 12, 31, 23, 0, tzinfo=UTC),
            None,
        ],
        ["emoji 😀 four bytes", "", None],
        [b"\x00\x01\xfe\xff", b"", None],
    ]
    second = [
        [4],
        [4],
        [Decimal("4.5")],
        [4.25],
        [True],
        [None],
        [None],
        [None],
        ['quote " ,'],
        [b"A"],
    ]

    def to_table(columns: list[list[Any]]) -> pa.Table:
        arrays = [pa.array(values, f.type) for values, f in zip(columns, schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=schema)

    expected = [list(row) for row in zip(*first, strict=True)] + [
        list(row) for row in zip(*second, strict=True)
    ]
    for row in expected:
        row[9] = (
            None if row[9] is None else row[9].hex()
        )  # VARBYTE reads back as hex, as on Redshift
    return to_table(first), to_table(second), expected


@pytest.mark.parametrize("kind", ["temp", "real"])
def test_copy_from_a_manifest_loads_two_files_exactly(
    stack: Stack, conn, bucket: Bucket, table: str, kind: str
) -> None:
    first, second, expected = typed_files()
    manifest = bucket.manifest_of(
        "load.manifest", [bucket.parquet("a.parquet", first), bucket.parquet("b.parquet", second)]
    )
    cursor = conn.cursor()
    if kind == "temp":  # created in the same, uncommitted transaction as the COPY
        cursor.execute(f"CREATE TEMP TABLE {table} {TYPES_DDL}")
    else:
        cursor.execute(f"CREATE TABLE {table} {TYPES_DDL}")
        conn.commit()
    cursor.execute(copy_sql(table, manifest, role(stack)))
    assert cursor.rowcount == -1, "redshift-connector reads no COPY count from Redshift 8.0.2"
    assert rows(conn, "SELECT pg_last_copy_count()") == [[4]]
    got = rows(conn, f"SELECT * FROM {table} ORDER BY id")
    assert got == expected
    assert str(got[0][2]) == "1234567890123456789012345678.0123456789"
    conn.commit()
    if kind == "real":
        with connect(stack) as other:
            assert rows(other, f"SELECT count(*) FROM {table}") == [[4]]


def test_copy_runs_inside_the_client_transaction(
    stack: Stack, conn, bucket: Bucket, table: str
) -> None:
    url, size = bucket.parquet("only.parquet", pa.table({"id": pa.array([1, 2, 3], pa.int64())}))
    manifest = bucket.manifest_of("load.manifest", [(url, size)])
    cursor = conn.cursor()
    cursor.execute(f"CREATE TABLE {table} (id BIGINT)")
    conn.commit()
    cursor.execute(copy_sql(table, manifest, role(stack)))
    assert rows(conn, f"SELECT count(*) FROM {table}") == [[3]]
    with connect(stack) as other:
        assert rows(other, f"SELECT count(*) FROM {table}") == [[0]], "not committed yet"
    conn.rollback()
    assert rows(conn, f"SELECT count(*) FROM {table}") == [[0]]
    cursor.execute(copy_sql(table, manifest, role(stack)))
    cursor.execute(f"INSERT INTO {table} VALUES (4)")
    conn.commit()
    with connect(stack) as other:
        assert rows(other, f"SELECT sum(id), count(*) FROM {table}") == [[10, 4]]


def test_copy_of_a_prefix_with_access_keys(stack: Stack, conn, bucket: Bucket, table: str) -> None:
    bucket.parquet("part/1.parquet", pa.table({"id": [1, 2], "name": ["a", "b"]}))
    bucket.parquet("part/2.parquet", pa.table({"id": [3], "name": ["c"]}))
    bucket.parquet("other.parquet", pa.table({"id": [99], "name": ["not under the prefix"]}))
    keys = (
        f"ACCESS_KEY_ID '{stack['AWS_ACCESS_KEY_ID']}' "
        f"SECRET_ACCESS_KEY '{stack['AWS_SECRET_ACCESS_KEY']}' SESSION_TOKEN 'ignored'"
    )
    cursor = conn.cursor()
    cursor.execute(f"CREATE TEMP TABLE {table} (id BIGINT, name VARCHAR(10))")
    cursor.execute(copy_sql(table, bucket.url("part/"), keys, manifest=False))
    assert rows(conn, f"SELECT id, name FROM {table} ORDER BY id") == [[1, "a"], [2, "b"], [3, "c"]]
    wrong = keys.replace(stack["AWS_SECRET_ACCESS_KEY"], "not-the-secret")
    with pytest.raises(redshift_connector.ProgrammingError, match="SignatureDoesNotMatch"):
        cursor.execute(copy_sql(table, bucket.url("part/"), wrong, manifest=False))
    conn.rollback()


def test_a_wrong_iam_role_is_refused_and_aborts_the_transaction(
    stack: Stack, conn, bucket: Bucket, table: str
) -> None:
    manifest = bucket.manifest_of("m", [bucket.parquet("f.parquet", pa.table({"id": [1]}))])
    cursor = conn.cursor()
    cursor.execute(f"CREATE TEMP TABLE {table} (id BIGINT)")
    other_role = "IAM_ROLE 'arn:aws:iam::123456789012:role/somebody-else'"
    with pytest.raises(redshift_connector.ProgrammingError) as caught:
        cursor.execute(copy_sql(table, manifest, other_role))
    error = caught.value.args[0]
    assert error["C"] == "XX000"
    assert error["M"].startswith("User arn:aws:redshift:")
    assert (
        "is not authorized to assume IAM Role arn:aws:iam::123456789012:role/somebody-else"
        in (error["M"])
    )
    with pytest.raises(redshift_connector.ProgrammingError, match="current transaction is aborted"):
        cursor.execute("SELECT 1")
    conn.rollback()


def test_manifest_entries_must_exist_and_carry_their_length(
    stack: Stack, conn, bucket: Bucket, table: str
) -> None:
    present = bucket.parquet("present.parquet", pa.table({"id": [1, 2]}))
    missing = bucket.url("missing.parquet")
    cursor = conn.cursor()
    cursor.execute(f"CREATE TABLE {table} (id BIGINT)")
    conn.commit()
    refused = bucket.manifest(
        "mandatory.manifest",
        [
            {"url": present[0], "mandatory": True, "meta": {"content_length": present[1]}},
            {"url": missing, "mandatory": True, "meta": {"content_length": 10}},
        ],
    )
    with pytest.raises(redshift_connector.ProgrammingError, match="mandatory file") as caught:
        cursor.execute(copy_sql(table, refused, role(stack)))
    assert missing in caught.value.args[0]["M"]
    conn.rollback()
    no_length = bucket.manifest("no-length.manifest", [{"url": present[0], "mandatory": True}])
    with pytest.raises(redshift_connector.ProgrammingError, match="content_length"):
        cursor.execute(copy_sql(table, no_length, role(stack)))
    conn.rollback()
    optional = bucket.manifest(
        "optional.manifest",
        [
            {"url": missing, "mandatory": False, "meta": {"content_length": 10}},
            {"url": present[0], "meta": {"content_length": present[1]}},
        ],
    )
    cursor.execute(copy_sql(table, optional, role(stack)))
    assert rows(conn, f"SELECT count(*) FROM {table}") == [[2]], (
        "a missing optional entry is skipped"
    )
    conn.rollback()


def test_a_value_too_long_in_bytes_fails_like_redshift(
    stack: Stack, conn, bucket: Bucket, table: str
) -> None:
    good = bucket.parquet("1.parquet", pa.table({"id": [1, 2], "code": ["abcdefgh", "€€"]}))
    bad = bucket.parquet("2.parquet", pa.table({"id": [3, 4], "code": ["fine", "😀😀😀"]}))
    manifest = bucket.manifest_of("load.manifest", [good, bad])
    cursor = conn.cursor()
    cursor.execute(f"CREATE TABLE {table} (id INTEGER, code VARCHAR(8))")
    conn.commit()
    with pytest.raises(redshift_connector.ProgrammingError) as caught:
        cursor.execute(copy_sql(table, manifest, role(stack)))
    error = caught.value.args[0]
    assert (error["C"], error["M"]) == ("XX000", LOAD_FAILED.format(table))
    with pytest.raises(redshift_connector.ProgrammingError, match="current transaction is aborted"):
        cursor.execute(f"SELECT count(*) FROM {table}")
    conn.rollback()
    assert rows(conn, f"SELECT count(*) FROM {table}") == [[0]], "nothing of the COPY remains"
    detail, stl = load_errors(conn)
    pid = rows(conn, "SELECT pg_backend_pid()")[0][0]
    assert detail[:8] == [
        bad[0], 2, "code", "varchar", "8", 0, 1204, "String length exceeds DDL length"
    ]  # fmt: skip
    assert detail[8] == pid
    assert stl[:6] == [bad[0], 2, "code", "😀😀😀", 1204, "String length exceeds DDL length"]
    assert (stl[6], stl[7]) == (pid, detail[9])


def test_a_nul_character_fails_like_redshift(
    stack: Stack, conn, bucket: Bucket, table: str
) -> None:
    url, size = bucket.parquet("nul.parquet", pa.table({"id": [1], "note": ["ab\x00cd"]}))
    cursor = conn.cursor()
    cursor.execute(f"CREATE TEMP TABLE {table} (id INTEGER, note VARCHAR(100))")
    with pytest.raises(redshift_connector.ProgrammingError) as caught:
        cursor.execute(copy_sql(table, bucket.manifest_of("m", [(url, size)]), role(stack)))
    assert caught.value.args[0]["M"] == LOAD_FAILED.format(table)
    conn.rollback()
    detail, stl = load_errors(conn)
    assert detail[:7] == [url, 1, "note", "varchar", "100", 3, 1220]
    assert stl[:5] == [url, 1, "note", "ab\\0cd", 1220]


def test_postgres_load_errors_are_located_in_their_file(
    stack: Stack, conn, bucket: Bucket, table: str
) -> None:
    first = bucket.parquet("1.parquet", pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]}))
    second = bucket.parquet("2.parquet", pa.table({"id": [4, 5], "name": ["d", None]}))
    cursor = conn.cursor()
    cursor.execute(f"CREATE TEMP TABLE {table} (id INTEGER, name VARCHAR(10) NOT NULL)")
    with pytest.raises(redshift_connector.ProgrammingError) as caught:
        cursor.execute(copy_sql(table, bucket.manifest_of("m", [first, second]), role(stack)))
    assert caught.value.args[0]["M"] == LOAD_FAILED.format(table)
    conn.rollback()
    detail, stl = load_errors(conn)
    assert (detail[0], detail[1], detail[2], detail[6]) == (second[0], 2, "name", 1213)
    assert stl[2] == "name"


def test_a_column_count_mismatch_is_a_load_error(
    stack: Stack, conn, bucket: Bucket, table: str
) -> None:
    url, size = bucket.parquet("narrow.parquet", pa.table({"id": [1]}))
    cursor = conn.cursor()
    cursor.execute(f"CREATE TEMP TABLE {table} (id INTEGER, name VARCHAR(10))")
    with pytest.raises(redshift_connector.ProgrammingError) as caught:
        cursor.execute(copy_sql(table, bucket.manifest_of("m", [(url, size)]), role(stack)))
    assert caught.value.args[0]["M"] == LOAD_FAILED.format(table)
    conn.rollback()
    detail, _ = load_errors(conn)
    assert (detail[0], detail[6]) == (url, 1203)
    cursor.execute(f"CREATE TEMP TABLE {table}_listed (id INTEGER, name VARCHAR(10))")
    cursor.execute(
        f"COPY {table}_listed (id) FROM '{bucket.manifest_of('m2', [(url, size)])}' "
        f"FORMAT PARQUET MANIFEST {role(stack)}"  # options in another order, a column list
    )
    assert rows(conn, f"SELECT id, name FROM {table}_listed") == [[1, None]]
    conn.rollback()


def test_unsupported_copy_forms_fail_loudly(stack: Stack, conn, bucket: Bucket, table: str) -> None:
    cursor = conn.cursor()
    cursor.execute(f"CREATE TEMP TABLE {table} (id INTEGER)")
    conn.commit()
    with pytest.raises(
        redshift_connector.ProgrammingError, match="only FORMAT AS PARQUET"
    ) as caught:
        cursor.execute(f"COPY {table} FROM '{bucket.url('x.csv')}' {role(stack)} CSV")
    assert caught.value.args[0]["C"] == "0A000"
    conn.rollback()


# --------------------------------------------------------------------------- SQL


def test_varbyte_super_and_redshift_ddl(stack: Stack, conn, table: str) -> None:
    cursor = conn.cursor()
    cursor.execute(
        f"CREATE TABLE {table} (id BIGINT PRIMARY KEY ENCODE az64, payload VARBYTE(16), "
        "doc SUPER, note VARCHAR(MAX), other BINARY VARYING(4), UNIQUE (note)) "
        "DISTSTYLE KEY DISTKEY (id) COMPOUND SORTKEY (id, note)"
    )
    cursor.execute(
        f"INSERT INTO {table} VALUES (1, decode('00ff', 'hex'), '{{\"a\": 1}}', 'x', NULL), "
        f"(1, NULL, NULL, 'x', NULL)"  # keys and UNIQUE are informational, as on Redshift
    )
    assert rows(conn, f"SELECT id, payload, doc, note FROM {table} ORDER BY payload") == [
        [1, "00ff", '{"a": 1}', "x"],
        [1, None, None, "x"],
    ]
    assert rows(conn, "SELECT 'VARBYTE(3) and SUPER stay'") == [["VARBYTE(3) and SUPER stay"]]
    types = rows(
        conn,
        "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns "
        f"WHERE table_name = '{table}' ORDER BY ordinal_position",
    )
    assert [t[1] for t in types] == ["bigint", "bytea", "text", "character varying", "bytea"]
    assert types[3][2] == 65535
    with pytest.raises(redshift_connector.ProgrammingError, match="null value"):
        cursor.execute(f"INSERT INTO {table} (id) VALUES (NULL)")  # a key column stays NOT NULL
    conn.rollback()


def test_sql_rewriting_leaves_literals_alone() -> None:
    standin = load_standin_module()
    sql, jobs = standin.rewrite_sql(
        "CREATE TABLE t (b VARBYTE, s SUPER); SELECT 'super VARBYTE', $$SUPER$$, \"super\", "
        "super /* SUPER */ FROM x -- VARBYTE\n; COPY t FROM STDIN"
    )
    assert sql == (
        "CREATE TABLE t (b BYTEA, s TEXT); SELECT 'super VARBYTE', $$SUPER$$, \"super\", "
        "super /* SUPER */ FROM x -- VARBYTE\n; COPY t FROM STDIN"
    )
    assert jobs == []
    sql, jobs = standin.rewrite_sql(
        "copy s.\"T\" (a, \"B\") from 's3://b/k' credentials 'aws_iam_role=arn:x' "
        "format parquet; select 1"
    )
    assert sql == 'COPY s."T" (a, "B") FROM STDIN WITH (FORMAT csv, ENCODING \'UTF8\'); select 1'
    assert (jobs[0].table_parts, jobs[0].column_names, jobs[0].problems) == (
        ["s", "T"],
        ["a", "B"],
        [],
    )


# --------------------------------------------------------------------------- other clients


def test_simple_query_protocol_copy(stack: Stack, bucket: Bucket, table: str) -> None:
    url, size = bucket.parquet("f.parquet", pa.table({"id": [1, 2, 3]}))
    manifest = bucket.manifest_of("m", [(url, size)])
    with psycopg.connect(
        host=stack["REDSHIFT_HOST"],
        port=int(stack["REDSHIFT_PORT"]),
        dbname=stack["REDSHIFT_DATABASE"],
        user=stack["REDSHIFT_USER"],
        password=stack["REDSHIFT_PASSWORD"],
        sslmode="disable",
        cursor_factory=psycopg.ClientCursor,  # the simple Query protocol
    ) as connection:
        cursor = connection.cursor()
        cursor.execute(f"CREATE TABLE {table} (id BIGINT)")
        cursor.execute(copy_sql(table, manifest, role(stack)))
        assert cursor.rowcount == 3, "PostgreSQL's COPY 3 reaches the client"
        cursor.execute(f"{copy_sql(table, manifest, role(stack))}; SELECT count(*) FROM {table}")
        assert cursor.nextset()
        assert cursor.fetchall() == [(6,)]
        connection.rollback()


def test_many_sessions_at_once(stack: Stack, bucket: Bucket) -> None:
    url, size = bucket.parquet("f.parquet", pa.table({"id": list(range(1000))}))
    manifest = bucket.manifest_of("m", [(url, size)])
    results: list[Any] = []

    def session(number: int) -> None:
        try:
            with connect(stack) as connection:
                cursor = connection.cursor()
                cursor.execute(f"CREATE TEMP TABLE t{number} (id BIGINT)")
                cursor.execute(copy_sql(f"t{number}", manifest, role(stack)))
                results.append(rows(connection, f"SELECT count(*), sum(id) FROM t{number}")[0])
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=session, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == [[1000, 499500]] * 16


# --------------------------------------------------------------------------- process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_stops_it_cleanly_and_it_logs_no_secrets(
    stack: Stack, bucket: Bucket, tmp_path: Path
) -> None:
    port = free_port()
    log_path = tmp_path / "standin.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(stack.env)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(STANDIN), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = redshift_connector.connect(
                    host="127.0.0.1",
                    port=port,
                    database=stack["REDSHIFT_DATABASE"],
                    user=stack["REDSHIFT_USER"],
                    password=stack["REDSHIFT_PASSWORD"],
                    ssl=False,
                )
                break
            except redshift_connector.InterfaceError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        url, size = bucket.parquet("f.parquet", pa.table({"id": [1]}))
        keys = (
            f"ACCESS_KEY_ID '{stack['AWS_ACCESS_KEY_ID']}' "
            f"SECRET_ACCESS_KEY '{stack['AWS_SECRET_ACCESS_KEY']}'"
        )
        cursor = connection.cursor()
        cursor.execute("CREATE TEMP TABLE t (id BIGINT)")
        cursor.execute(copy_sql("t", bucket.manifest_of("m", [(url, size)]), keys))
        with pytest.raises(redshift_connector.ProgrammingError):
            cursor.execute(copy_sql("t", bucket.url("m"), keys.replace("ACCESS_KEY_ID '", "x'")))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        connection.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text()
    assert "-> 1 rows" in text and "stopped" in text
    stack_log = Path(os.environ.get("S3RS_STACK_DIR", REPO / ".stack")) / "redshift/redshift.log"
    for secret in ("REDSHIFT_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        assert stack[secret] not in text
        assert stack[secret] not in stack_log.read_text()
