"""`watermark import` on the real stack: the existing tool's v2 watermark carried over, so the
next sync continues after its cursor and never loads the files it already loaded."""

from __future__ import annotations

import io
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from s3rs_dagster.adapters.storage import S3Storage, open_storage
from s3rs_dagster.cli import cli
from s3rs_dagster.config import Config
from s3rs_dagster.core.counts import count_table
from s3rs_dagster.core.extract import extract_table
from s3rs_dagster.core.ledger import loaded_files
from s3rs_dagster.core.legacy_import import (
    LEGACY_RUN_ID,
    LegacyDocumentError,
    LegacyImportError,
    import_legacy_watermark,
    parse_legacy_document,
    read_legacy_document,
)
from s3rs_dagster.core.load import load_table
from s3rs_dagster.core.watermark_admin import read_watermark
from s3rs_dagster_tests.conftest import Stack
from s3rs_dagster_tests.core.conftest import MakeConfig, SourceDb, committed_files
from s3rs_dagster_tests.core.test_load import drop_schema, target_rows

ORDERS_DDL = """
CREATE TABLE orders (
  id BIGINT PRIMARY KEY,
  updated_at DATETIME(6) NOT NULL,
  note VARCHAR(40) NULL,
  KEY by_updated (updated_at, id)
)
"""
CUTOFF = datetime(2025, 8, 25, 6, 30, 8)
PLUS_TWO = timezone(timedelta(hours=2))
# id: updated_at. The old tool extracted and loaded 1-5; its cursor is (CUTOFF, 5).
ROWS = {
    1: CUTOFF - timedelta(hours=1),
    2: CUTOFF - timedelta(minutes=30),
    3: CUTOFF - timedelta(seconds=1),
    4: CUTOFF,
    5: CUTOFF,
    6: CUTOFF,  # same timestamp, larger id: after the cursor
    7: CUTOFF + timedelta(seconds=1),
    8: CUTOFF + timedelta(days=1),
}


def v2_document(files: list[str], **changes: Any) -> dict[str, Any]:
    """A v2 watermark as the existing tool's Q&A shows it (naive last_timestamp)."""
    document: dict[str, Any] = {
        "mysql_state": {
            "last_timestamp": "2025-08-25T06:30:08",
            "last_id": 5,
            "total_rows": 5,
            "status": "success",
            "last_session_id": "a1b2",
        },
        "redshift_state": {"total_rows": 5, "status": "success"},
        "processed_files": files,
        "version": "2.0",
    }
    for path, value in changes.items():
        section, _, name = path.partition("__")
        if name:
            document[section][name] = value
        else:
            document[section] = value
    return document


def old_tool_file(ids: list[int]) -> bytes:
    """A Parquet file as the existing tool wrote it: plain columns, no s3rs metadata."""
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "updated_at": pa.array([ROWS[i] for i in ids], pa.timestamp("us")),
            "note": pa.array([f"old {i}" for i in ids]),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


class Legacy:
    """The existing tool's leftovers for one table: two loaded files and its v2 watermark.

    One file lies in its own folder of the bucket (outside s3rs's storage root), the other
    under the table's prefix in s3rs's storage, where s3rs would otherwise call it a stray.
    """

    def __init__(self, config: Config, table: str) -> None:
        storage = open_storage(config.storage)
        assert isinstance(storage, S3Storage)
        self.storage = storage
        self.client = storage.get_client()
        self.bucket = storage.bucket
        folder = f"legacy-{uuid.uuid4().hex[:8]}/incremental/year=2025/month=08/day=25"
        self.outside_key = (
            f"{folder}/us_dw_s3rs_orders_20250825_063008_batch_chunk_1_batch_1.parquet"
        )
        self.client.put_object(
            Bucket=self.bucket, Key=self.outside_key, Body=old_tool_file([1, 2, 3])
        )
        self.outside_uri = f"s3://{self.bucket}/{self.outside_key}"
        self.inside_key = f"p/{table}/legacy/us_dw_s3rs_orders_20250825_063010_batch_1.parquet"
        storage.put_bytes(self.inside_key, old_tool_file([4, 5]))
        self.inside_uri = storage.uri(self.inside_key)
        self.document_uri = f"s3://{self.bucket}/{folder}/watermark.json"

    def publish(self, document: dict[str, Any]) -> bytes:
        body = json.dumps(document).encode()
        self.client.put_object(
            Bucket=self.bucket, Key=self.document_uri[6 + len(self.bucket) :], Body=body
        )
        return body


@pytest.fixture
def orders(source_db: SourceDb) -> str:
    source_db.execute(ORDERS_DDL)
    source_db.executemany(
        "INSERT INTO orders (id, updated_at, note) VALUES (%s, %s, %s)",
        [(i, when, f"row {i}") for i, when in ROWS.items()],
    )
    return f"{source_db.name}.orders"


def make(make_config: MakeConfig, target: str = "duckdb") -> Config:
    return make_config(
        {"orders": {"cdc_strategy": "hybrid", "start_date": "2020-01-01"}},
        source_extra={"time_zone": "+02:00"},
        target=target,
    )


def test_after_import_nothing_is_reloaded_and_extraction_continues_after_the_cursor(
    make_config: MakeConfig, orders: str, stack: Stack
) -> None:
    config = make(make_config, "postgres")
    try:
        legacy = Legacy(config, orders)
        # Inconsistent URI forms, as the Q&A warns: a duplicate, an s3a:// spelling.
        files = [legacy.outside_uri, legacy.inside_uri, "s3a" + legacy.outside_uri[2:]]
        legacy.publish(v2_document(files))
        document = read_legacy_document(legacy.document_uri, config=config)

        report = import_legacy_watermark(
            config, "p", "orders", document, source_uri=legacy.document_uri
        )

        assert report.done and report.file_rows == 5 and report.files_recorded == 2
        assert report.warnings == []
        assert any("1 duplicate" in note for note in report.notes)
        assert any("mysql_state.last_session_id" in note for note in report.notes)
        view = read_watermark(config, "p", "orders")
        state = view.watermark.mysql_state
        assert state.last_timestamp == CUTOFF.replace(tzinfo=PLUS_TWO)
        assert state.last_timestamp.isoformat() == "2025-08-25T06:30:08+02:00"
        assert (state.last_id, state.total_rows, state.status) == (5, 5, "success")
        assert view.watermark.redshift_state.total_rows == 5
        assert loaded_files(config, "p", orders) == {
            legacy.outside_uri: 3,  # outside the storage root: its full URI
            legacy.inside_key: 2,  # under it: its key, as s3rs records its own files
        }

        idle = load_table(config, "p", "orders", adopt_strays=True)
        assert idle.ok and idle.files == 0, idle.error
        assert idle.strays == [], "a file the ledger holds is not a stray"

        extracted = extract_table(config, "p", "orders")
        assert extracted.ok, extracted.error
        new_ids = sorted(
            row["id"]
            for entry in committed_files(open_storage(config.storage), "p", orders)
            for row in pq.read_table(
                io.BytesIO(open_storage(config.storage).get_bytes(entry["key"])[0])
            ).to_pylist()
        )
        assert new_ids == [6, 7, 8], "rows after (06:30:08, 5) only; none at or before it"

        loaded = load_table(config, "p", "orders")
        assert loaded.ok and loaded.rows == 3, loaded.error
        assert {d.key for d in loaded.decisions}.isdisjoint({legacy.inside_key, legacy.outside_uri})
        assert [row["id"] for row in target_rows(config, stack)] == [6, 7, 8]
        again = load_table(config, "p", "orders")
        assert again.status == "nothing_to_do" and again.rows == 0
    finally:
        drop_schema(config, stack)


def test_dry_run_shows_the_conversion_and_writes_nothing(
    make_config: MakeConfig, orders: str
) -> None:
    config = make(make_config)
    legacy = Legacy(config, orders)
    # An aware timestamp (the same instant in UTC) and an inflated count (the old tool's
    # double-counting bug).
    document = v2_document(
        [legacy.outside_uri],
        mysql_state__last_timestamp="2025-08-25T04:30:08Z",
        mysql_state__total_rows=3_000_000,
    )
    report = import_legacy_watermark(
        config, "p", "orders", json.dumps(document).encode(), source_uri="v2.json", dry_run=True
    )
    assert not report.done and report.before is None
    assert report.after["last_timestamp"] == "2025-08-25T06:30:08+02:00"
    assert report.after["total_rows"] == 3_000_000
    assert any("set-count" in w and "--count 3 " in w for w in report.warnings)
    assert "  dry run: nothing was written" in report.lines()
    assert not read_watermark(config, "p", "orders").exists
    assert not Path(config.connections.targets["wh"].path).exists()


def test_an_existing_watermark_is_kept_unless_forced_and_a_rerun_records_each_file_once(
    make_config: MakeConfig, orders: str
) -> None:
    config = make(make_config)
    legacy = Legacy(config, orders)
    document = json.dumps(v2_document([legacy.outside_uri, legacy.inside_uri])).encode()
    first = import_legacy_watermark(config, "p", "orders", document, source_uri="v2.json")
    assert first.done

    with pytest.raises(LegacyImportError, match="already holds a cursor, 5 extracted rows"):
        import_legacy_watermark(config, "p", "orders", document, source_uri="v2.json")
    forced = import_legacy_watermark(
        config, "p", "orders", document, source_uri="v2.json", force=True
    )
    assert forced.done and forced.files_recorded == 0
    target = config.connections.targets["wh"]
    with duckdb.connect(str(target.path)) as connection:
        rows = connection.sql(
            f'SELECT file_key, COUNT(*), MIN(run_id) FROM "{target.schema_}".s3rs_loaded_files '
            "GROUP BY file_key ORDER BY 1"
        ).fetchall()
    assert rows == sorted(
        [(legacy.inside_key, 1, LEGACY_RUN_ID), (legacy.outside_uri, 1, LEGACY_RUN_ID)]
    )


def test_unfinished_old_runs_and_unusable_cursors_are_refused_and_nothing_is_written(
    make_config: MakeConfig, orders: str
) -> None:
    config = make(make_config)
    legacy = Legacy(config, orders)
    failed = v2_document([legacy.outside_uri], redshift_state__status="failed")
    with pytest.raises(LegacyImportError, match=r"redshift_state.status is failed.*--force"):
        import_legacy_watermark(
            config, "p", "orders", json.dumps(failed).encode(), source_uri="v2.json"
        )
    wrong_id = v2_document([], mysql_state__last_id="abc")
    with pytest.raises(LegacyDocumentError, match="last_id"):
        import_legacy_watermark(
            config, "p", "orders", json.dumps(wrong_id).encode(), source_uri="v2.json"
        )
    assert not read_watermark(config, "p", "orders").exists
    assert not Path(config.connections.targets["wh"].path).exists()


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b"{not json", "is not valid JSON"),
        (b"[]", "the document must be a JSON object"),
        (b'{"last_mysql_extraction_time": "2025-08-25"}', "mysql_state is missing"),
        (b'{"format": "s3rs-watermark/1", "mysql_state": {}}', "already an s3rs watermark"),
        (
            json.dumps(v2_document([], mysql_state__last_timestamp="yesterday")).encode(),
            "mysql_state.last_timestamp must be an ISO 8601 timestamp",
        ),
        (
            json.dumps(v2_document([], mysql_state__total_rows=-1)).encode(),
            "mysql_state.total_rows must be a whole number, 0 or more, found -1",
        ),
        (
            json.dumps(v2_document([], redshift_state__total_rows="5")).encode(),
            "redshift_state.total_rows must be a whole number",
        ),
        (
            json.dumps(v2_document([], mysql_state__status="done-ish")).encode(),
            "mysql_state.status must be one of success",
        ),
        (
            json.dumps(v2_document([], redshift_state=None)).encode(),
            "redshift_state is missing",
        ),
        (
            json.dumps(v2_document("s3://b/f.parquet")).encode(),  # type: ignore[arg-type]
            "processed_files must be a list of S3 URIs",
        ),
        (
            json.dumps(v2_document(["s3://b/ok.parquet", 42])).encode(),
            "processed_files[1] must be an S3 URI",
        ),
        (
            json.dumps(v2_document(["https://example.com/f.parquet"])).encode(),
            "processed_files[0] must be an S3 URI",
        ),
    ],
)
def test_invalid_documents_are_refused_naming_the_field(document: bytes, expected: str) -> None:
    with pytest.raises(LegacyDocumentError) as caught:
        parse_legacy_document(document, "old/watermark.json")
    message = str(caught.value)
    assert expected in message and message.startswith("old/watermark.json")
    assert "Traceback" not in message


def test_the_variations_the_qa_shows_are_accepted() -> None:
    document = v2_document(
        ["s3://bucket/a.parquet", "bucket-relative/b.parquet", "s3://bucket/a.parquet"],
        mysql_state__last_timestamp="2025-08-25T06:30:08.123456+00:00",
        mysql_state__last_id="80453182",
        mysql_state__status="pending",
    )
    parsed = parse_legacy_document(json.dumps(document).encode())
    assert parsed.last_id == 80453182 and parsed.mysql_status == "pending"
    assert parsed.processed_files == ["s3://bucket/a.parquet", "bucket-relative/b.parquet"]
    assert parsed.duplicates == 1
    assert parsed.ignored_fields == ["mysql_state.last_session_id", "version"]


def test_the_document_is_read_from_a_local_path_or_file_uri(tmp_path: Path) -> None:
    path = tmp_path / "watermark.json"
    path.write_bytes(b'{"mysql_state": {}}')
    assert read_legacy_document(str(path)) == path.read_bytes()
    assert read_legacy_document(path.as_uri()) == path.read_bytes()
    with pytest.raises(LegacyImportError, match="cannot read"):
        read_legacy_document(str(tmp_path / "absent.json"))
    with pytest.raises(LegacyImportError, match="expected s3://bucket/key"):
        read_legacy_document("ftp://host/watermark.json")


def test_the_cli_imports_then_watermark_get_shows_it_and_sync_reloads_nothing(
    make_config: MakeConfig, orders: str, stack: Stack
) -> None:
    config = make(make_config, "postgres")
    try:
        legacy = Legacy(config, orders)
        legacy.publish(v2_document([legacy.outside_uri, legacy.inside_uri]))
        base = ["--config", str(config.source_file)]
        table = ["-p", "p", "-t", "orders"]
        runner = CliRunner()
        imported = runner.invoke(
            cli, [*base, "watermark", "import", *table, "--from", legacy.document_uri]
        )
        assert imported.exit_code == 0, imported.output
        assert "imported" in imported.output
        shown = runner.invoke(cli, [*base, "watermark", "get", *table, "--json-output"])
        assert shown.exit_code == 0, shown.output
        state = json.loads(shown.output)
        text = json.dumps(state)
        assert "2025-08-25T06:30:08+02:00" in text and '"last_id": 5' in text
        synced = runner.invoke(cli, [*base, "sync", *table, "--redshift-only", "--json-output"])
        assert synced.exit_code == 0, synced.output
        [run] = json.loads(synced.output)
        assert run["load"]["files"] == 0 and run["load"]["rows"] == 0
        again = runner.invoke(
            cli, [*base, "watermark", "import", *table, "--from", legacy.document_uri]
        )
        assert again.exit_code == 1 and "--force" in again.output
    finally:
        drop_schema(config, stack)


def test_validate_counts_agrees_after_an_import(
    make_config: MakeConfig, orders: str, stack: Stack
) -> None:
    config = make(make_config, "postgres")
    try:
        legacy = Legacy(config, orders)
        document = json.dumps(v2_document([legacy.outside_uri, legacy.inside_uri])).encode()
        import_legacy_watermark(config, "p", "orders", document, source_uri="v2.json")
        report = count_table(config, "p", "orders")
        assert report.imported_rows == 5
        assert not any("inflated" in problem for problem in report.problems), report.problems
    finally:
        drop_schema(config, stack)
