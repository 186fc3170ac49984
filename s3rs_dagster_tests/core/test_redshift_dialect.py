"""Every statement the redshift backend sends is Redshift SQL, not PostgreSQL that happens to
work on the stand-in: captured from a real load, parsed with sqlglot's Redshift dialect, and
checked for constructs Redshift lacks or treats differently."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import sqlglot
from sqlglot import expressions as exp

from s3rs_dagster.adapters.warehouse import redshift_backend
from s3rs_dagster.core.sync import sync_pipeline
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb

NOT_REDSHIFT_TYPES = {
    exp.DataType.Type.TEXT: "TEXT is VARCHAR(256) on Redshift: values would be cut",
    exp.DataType.Type.JSONB: "JSONB is PostgreSQL; Redshift has SUPER",
    exp.DataType.Type.JSON: "JSON is not a Redshift column type; use SUPER",
    exp.DataType.Type.SERIAL: "SERIAL is PostgreSQL; Redshift has IDENTITY",
}


def redshift_problems(sql: str) -> list[str]:
    """What in one statement Redshift would refuse or read differently."""
    upper = sql.upper()
    problems = []
    for word in (
        "ON CONFLICT",
        "RETURNING",
        "TRUNCATE",
        "FROM STDIN",
        "CREATE OR REPLACE TABLE",
        "BYTEA",
    ):
        if word in upper:
            problems.append(f"uses {word}")
    try:
        tree = sqlglot.parse_one(sql, read="redshift")
    except sqlglot.errors.ParseError as exc:
        return [*problems, f"does not parse as Redshift SQL: {exc}"]
    for data_type in tree.find_all(exp.DataType):
        if data_type.this in NOT_REDSHIFT_TYPES:
            problems.append(NOT_REDSHIFT_TYPES[data_type.this])
    return problems


def test_the_checker_catches_postgresql_only_sql() -> None:
    assert redshift_problems('INSERT INTO "t" ("a") VALUES (1) ON CONFLICT ("a") DO NOTHING')
    assert redshift_problems('CREATE TABLE "t" ("a" TEXT)')
    assert redshift_problems('CREATE TABLE "t" ("a" BYTEA)')
    assert redshift_problems('TRUNCATE "t"')
    assert redshift_problems("COPY t FROM STDIN (FORMAT csv)")
    assert not redshift_problems('CREATE TABLE "t" ("a" VARCHAR(10), "b" VARBYTE(4), "c" SUPER)')


def test_a_real_load_sends_only_redshift_sql(
    source_db: SourceDb, make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_db.execute(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
        "amount DECIMAL(12,2), note VARCHAR(20), blob_ VARBINARY(8), doc JSON)"
    )
    start = datetime(2025, 3, 1)
    source_db.executemany(
        "INSERT INTO orders VALUES (%s, %s, %s, %s, %s, %s)",
        [
            (i, start + timedelta(hours=i), Decimal(i), f"n{i}", b"\x00\x01", '{"a": 1}')
            for i in range(1, 9)
        ],
    )
    config = make_config({"orders": {"start_date": "2020-01-01"}}, target="redshift")
    sent: list[str] = []
    real_run = redshift_backend.RedshiftSession._run

    def record(self, cursor, sql, params):  # observes, then sends for real
        sent.append(sql)
        return real_run(self, cursor, sql, params)

    monkeypatch.setattr(redshift_backend.RedshiftSession, "_run", record)
    assert sync_pipeline(config, "p", limit=3)[0].ok
    source_db.execute("ALTER TABLE orders MODIFY note VARCHAR(50), MODIFY amount DECIMAL(16,4)")
    source_db.execute(
        "UPDATE orders SET note = REPEAT('x', 50), updated_at = %s WHERE id = 2",
        (start + timedelta(days=30),),
    )
    run = sync_pipeline(config, "p", limit=3)[0]
    assert run.ok, (run.extract.error, run.load.error)
    copies = [sql for sql in sent if sql.startswith("COPY")]
    assert copies, "the staging table is filled by COPY"
    for sql in copies:
        assert " FORMAT AS PARQUET MANIFEST" in sql and " IAM_ROLE 'arn:aws:iam::" in sql
    problems = {sql: redshift_problems(sql) for sql in sent}
    assert {sql: found for sql, found in problems.items() if found} == {}
