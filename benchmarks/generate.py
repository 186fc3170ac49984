"""Generate the benchmark's `orders` table server-side, from MariaDB's SEQUENCE engine.

    orders(id BIGINT PK, updated_at DATETIME(6) indexed, customer_id INT,
           amount DECIMAL(12,2), status VARCHAR(32), note VARCHAR(255) NULL)

Rows are spread over one year (2025-01-01 .. 2025-12-31): ids 1..N in creation order, three
consecutive ids share one `updated_at` (timestamp ties, as batch inserts make), and one row in
ten was updated later (up to 30 days, with microseconds), so `updated_at` order is not id
order. About 30% of notes are set. Values are deterministic (CRC32 of the id), so two runs of
the generator build the same table. Nothing crosses the wire but SQL text.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pymysql

from benchmarks.stack import database_name

CHUNK_ROWS = 1_000_000
START = "2025-01-01 00:00:00"
SPAN_SECONDS = 365 * 86_400
LATE_UPDATE_SECONDS = 30 * 86_400

_CREATE = """
CREATE TABLE orders (
  id BIGINT NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  customer_id INT NOT NULL,
  amount DECIMAL(12,2) NOT NULL,
  status VARCHAR(32) NOT NULL,
  note VARCHAR(255) NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""

_INSERT = """
INSERT INTO orders (id, updated_at, customer_id, amount, status, note)
SELECT
  seq,
  TIMESTAMP('{start}')
    + INTERVAL (FLOOR((seq - 1) / 3) * {step_us}
                + IF(seq % 10 = 7, (CRC32(seq * 17 + 3) % {late_s}) * 1000000
                                  + CRC32(seq * 19 + 11) % 1000000, 0)) MICROSECOND,
  1 + CRC32(seq) % 250000,
  (CRC32(seq * 7 + 1) % 2500000) / 100 + 0.99,
  ELT(1 + CRC32(seq * 13 + 5) % 10, 'delivered', 'delivered', 'delivered', 'shipped',
      'shipped', 'paid', 'pending', 'cancelled', 'refunded', 'returned'),
  IF(CRC32(seq * 31 + 7) % 10 < 7, NULL,
     CONCAT(ELT(1 + seq % 5, 'leave at the door', 'call on arrival, gate code ',
                'gift wrap please; card: happy birthday ',
                'customer asked for an invoice copy, ref ',
                'fragile - handle with care, order '), seq))
FROM seq_{first}_to_{last}
"""


def connect(env: dict[str, str], database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=env["MYSQL_HOST"],
        port=int(env["MYSQL_PORT"]),
        user=env["MYSQL_USER"],
        password=env["MYSQL_PASSWORD"],
        database=database,
        autocommit=True,
        charset="utf8mb4",
        read_timeout=3600,
    )


def existing_rows(env: dict[str, str], rows: int) -> int | None:
    """COUNT(*) of the size's orders table, or None when it does not exist."""
    connection = connect(env)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name = 'orders'",
                (database_name(rows),),
            )
            if not cursor.fetchone()[0]:
                return None
            cursor.execute(
                f"SELECT COUNT(*), COALESCE(MAX(id), 0) FROM `{database_name(rows)}`.orders"
            )
            count, highest = cursor.fetchone()
            return int(count) if int(highest) == int(count) else -1
    finally:
        connection.close()


def generate(env: dict[str, str], rows: int, log: Callable[[str], None] = print) -> float:
    """(Re)create `s3rs_bench_<rows>.orders` with `rows` rows; return the seconds it took."""
    database = database_name(rows)
    step_us = SPAN_SECONDS * 1_000_000 * 3 // rows
    started = time.monotonic()
    connection = connect(env)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            cursor.execute(f"USE `{database}`")
            cursor.execute("SET SESSION time_zone = '+00:00'")
            cursor.execute("DROP TABLE IF EXISTS orders")
            cursor.execute(_CREATE)
            for first in range(1, rows + 1, CHUNK_ROWS):
                last = min(first + CHUNK_ROWS - 1, rows)
                cursor.execute(
                    _INSERT.format(
                        start=START,
                        step_us=step_us,
                        late_s=LATE_UPDATE_SECONDS,
                        first=first,
                        last=last,
                    )
                )
                log(f"  generated {last:,} / {rows:,} rows ({time.monotonic() - started:.0f} s)")
            # The secondary index is built once at the end: a sorted build, much faster
            # than maintaining it row by row.
            cursor.execute("ALTER TABLE orders ADD INDEX idx_updated_at (updated_at)")
            cursor.execute("ANALYZE TABLE orders")
            cursor.fetchall()
    finally:
        connection.close()
    return time.monotonic() - started


def ensure_table(
    env: dict[str, str], rows: int, *, skip_generate: bool, log: Callable[[str], None] = print
) -> dict[str, object]:
    """Generate the table, or with skip_generate reuse it when its count is right."""
    table = f"{database_name(rows)}.orders"
    if skip_generate:
        found = existing_rows(env, rows)
        if found == rows:
            log(f"{table}: {rows:,} rows already there (--skip-generate)")
            return {"table": table, "rows": rows, "generated": False, "seconds": 0.0}
        log(f"{table}: found {found} rows, not {rows:,}; generating it although --skip-generate")
    log(f"{table}: generating {rows:,} rows server-side")
    seconds = generate(env, rows, log)
    log(f"{table}: {rows:,} rows in {seconds:.1f} s ({rows / seconds:,.0f} rows/s)")
    return {"table": table, "rows": rows, "generated": True, "seconds": round(seconds, 2)}


def expected_id_sum(rows: int) -> int:
    """ids are 1..rows."""
    return rows * (rows + 1) // 2
