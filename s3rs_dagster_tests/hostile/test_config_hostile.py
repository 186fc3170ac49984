"""Hostile pipelines.yaml files, run through the CLI: each is refused with exit 2, one message
naming the file, the key path (or line) and what is allowed, and no traceback; a legitimate
use of YAML anchors, aliases and merge keys works. No server is needed: the config is refused
before anything connects."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from s3rs_dagster_tests.hostile.conftest import invoke

pytestmark = pytest.mark.hostile

HEAD = """\
connections:
  sources:
    src: {host: db.internal, database: shop, username: reader}
  targets:
    wh: {type: duckdb, path: wh.duckdb}
storage: {url: lake}
"""
PIPELINE = """\
pipelines:
  p:
    source: src
    target: wh
    tables:
      shop.orders: {cdc_strategy: hybrid, start_date: 2025-01-01}
"""
GOOD = HEAD + PIPELINE
BILLION_LAUGHS = (
    HEAD
    + 'lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(f"lol{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]\n" for n in range(1, 10))
    + PIPELINE
)
TEN_MB = "x" * (10 * 1024 * 1024)

# name -> (file bytes, words the message must contain: key path or line, what is allowed)
CASES: dict[str, tuple[bytes, list[str]]] = {
    "empty file": (b"", ["the file is empty", "connections, storage and pipelines"]),
    "only a comment": (b"# nothing\n", ["the file is empty"]),
    "a list at the top": (b"- a\n- b\n", ["the file is a list", "expected a mapping"]),
    "a scalar at the top": (b"pipelines\n", ["the file is a str", "expected a mapping"]),
    "tab-indented": (
        GOOD.replace("  p:\n    source", "  p:\n\tsource").encode(),
        ["invalid YAML at line 9", "tab", "spaces"],
    ),
    "not UTF-8": (
        GOOD.replace("reader", "r\xe9ader").encode("latin-1"),
        ["not UTF-8", "line 3", "save it as UTF-8"],
    ),
    "duplicate key": (
        (GOOD + "    processing: {batch_size: 10}\n    processing: {batch_size: 20}\n").encode(),
        ["duplicate key 'processing'", "line"],
    ),
    "duplicate table": (
        (GOOD + "      shop.orders: {cdc_strategy: full_sync}\n").encode(),
        ["duplicate key 'shop.orders'"],
    ),
    "unknown key": (
        GOOD.replace("cdc_strategy: hybrid", "cdc_stratgy: hybrid").encode(),
        [
            'pipelines.p.tables["shop.orders"].cdc_stratgy',
            "did you mean 'cdc_strategy'",
            "allowed here",
        ],
    ),
    "unknown top-level key": (
        (GOOD + "extras: {a: 1}\n").encode(),
        ["extras: unknown key 'extras'", "connections, pipelines, storage"],
    ),
    "batch_size 10**12": (
        (GOOD + "    processing: {batch_size: 1000000000000}\n").encode(),
        ["pipelines.p.processing.batch_size", "less than or equal to 10000000"],
    ),
    "batch_size as text": (
        (GOOD + "    processing: {batch_size: lots}\n").encode(),
        ["pipelines.p.processing.batch_size", "valid integer", "'lots'"],
    ),
    "port as text": (
        GOOD.replace("host: db.internal", "host: db.internal, port: three").encode(),
        ["connections.sources.src.port", "valid integer"],
    ),
    "negative port": (
        GOOD.replace("host: db.internal", "host: db.internal, port: -1").encode(),
        ["connections.sources.src.port", "greater than or equal to 1"],
    ),
    "boolean for a number": (
        (GOOD + "    processing: {batch_size: yes}\n").encode(),
        ["pipelines.p.processing.batch_size"],
    ),
    "a list where a mapping goes": (
        (HEAD + "pipelines: [p, q]\n").encode(),
        ["pipelines", "valid dictionary"],
    ),
    "tables as a list": (
        GOOD.replace(
            "    tables:\n      shop.orders: {cdc_strategy: hybrid, start_date: 2025-01-01}",
            "    tables: [shop.orders]",
        ).encode(),
        ["pipelines.p.tables", "valid dictionary"],
    ),
    "null pipelines": ((HEAD + "pipelines:\n").encode(), ["pipelines", "valid dictionary"]),
    "null storage": (
        GOOD.replace("storage: {url: lake}", "storage:").encode(),
        ["storage", "valid dictionary"],
    ),
    "null table": (
        GOOD.replace(
            "      shop.orders: {cdc_strategy: hybrid, start_date: 2025-01-01}",
            "      shop.orders:",
        ).encode(),
        ['pipelines.p.tables["shop.orders"]', "valid dictionary"],
    ),
    "null source name": (
        GOOD.replace("    source: src", "    source:").encode(),
        ["pipelines.p.source", "valid string"],
    ),
    "10 MB host": (
        GOOD.replace("host: db.internal", f"host: {TEN_MB}").encode(),
        ["at most 1,000,000", "line 3 alone has 10,485,8"],
    ),
    "10 MB description": (
        (GOOD + f"    description: {TEN_MB}\n").encode(),
        ["at most 1,000,000", "line 13 alone"],
    ),
    "10 MB key": (
        GOOD.replace("shop.orders:", f"shop.{TEN_MB}:").encode(),
        ["at most 1,000,000", "line 12 alone"],
    ),
    "a 20,000-character value": (
        GOOD.replace("host: db.internal", f"host: {'h' * 20_000}").encode(),
        ["connections.sources.src.host", "a value of 20,000 characters", "at most 10,000"],
    ),
    "merged mappings that disagree": (
        (
            HEAD
            + "pipelines:\n  p:\n    source: src\n    target: wh\n    tables:\n"
            + "      s.a: &a {cdc_strategy: full_sync}\n"
            + "      s.b: &b {cdc_strategy: id_only}\n"
            + "      s.c: {<<: [*a, *b]}\n"
        ).encode(),
        ["line 14", "key 'cdc_strategy' comes from two merged mappings"],
    ),
    "a 65-character table name": (
        GOOD.replace("shop.orders:", f"shop.{'o' * 65}:").encode(),
        ["pipelines.p.tables", "longer than 64 characters"],
    ),
    "billion laughs": (BILLION_LAUGHS.encode(), ["expands to more than 100,000 values"]),
    "an alias inside itself": (
        (HEAD + "pipelines: &loop\n  p: *loop\n").encode(),
        ["line 7", "an alias refers to the value that contains it"],
    ),
    "nested 100,000 deep": (
        (HEAD + "pipelines: " + "[" * 100_000 + "]" * 100_000 + "\n").encode(),
        ["nested more than 100 levels deep"],
    ),
    "python object tag": (
        (GOOD + "    description: !!python/object/apply:os.system ['true']\n").encode(),
        ["invalid YAML at line", "python/object/apply"],
    ),
    "an undefined alias": (
        (GOOD + "    processing: *nothing\n").encode(),
        ["invalid YAML at line", "undefined alias"],
    ),
    "a literal password": (
        GOOD.replace("username: reader", "username: reader, password: hunter2").encode(),
        ["connections.sources.src.password", "${SOME_ENV_VAR}"],
    ),
}


MEMORY_CASES = {"billion laughs", "an alias inside itself", "nested 100,000 deep", "10 MB key"}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_config_is_refused_with_file_key_and_rule(tmp_path: Path, name: str) -> None:
    """a hostile pipelines.yaml (see CASES) -> exit 2 naming the file, the key path/line and
    what is allowed, no traceback, within seconds."""
    body, words = CASES[name]
    path = tmp_path / "pipelines.yaml"
    path.write_bytes(body)
    watch_memory = name in MEMORY_CASES
    if watch_memory:
        tracemalloc.start()
    started = time.monotonic()
    try:
        result = invoke("--config", str(path), "config", "validate")
        again = invoke("--config", str(path), "sync", "-p", "p")
    finally:
        peak = tracemalloc.get_traced_memory()[1] if watch_memory else 0
        if watch_memory:
            tracemalloc.stop()
    elapsed = time.monotonic() - started
    assert result.exit_code == 2, result.output[:2000]
    assert again.exit_code == 2, again.output[:2000]
    message = result.output
    assert message.startswith(f"Error: {path}"), message[:2000]
    for word in words:
        assert word in message, (word, message[:2000])
    assert len(message) < 5000, "the message does not echo huge values"
    assert "hunter2" not in message
    assert elapsed < 10, f"refused in {elapsed:.1f}s"
    assert peak < 400 * 1024 * 1024, f"peak memory {peak / 2**20:.0f} MiB"


def test_anchors_aliases_and_merge_keys_work(tmp_path: Path) -> None:
    """anchors, aliases and `<<:` merge keys with overriding keys -> valid, each table as meant.

    A table that merges an anchored mapping and overrides one of its keys gets the override
    (the duplicate-key rule applies to keys written twice, not to merged ones)."""
    path = tmp_path / "pipelines.yaml"
    path.write_text(
        HEAD
        + """\
pipelines:
  p:
    source: src
    target: wh
    table_defaults: &defaults
      cdc_strategy: hybrid
      start_date: 2025-01-01
    tables:
      shop.orders: &orders
        cdc_strategy: timestamp_only
        start_date: 2024-06-01
        partitioning: monthly
      shop.refunds:
        <<: *orders
        start_date: 2024-07-01
      shop.lagged: &lag {cdc_lag_seconds: 30}
      shop.items:
        <<: [*orders, *lag]
      shop.users: {<<: *defaults, cdc_strategy: full_sync, start_date: null}
  q:
    source: src
    target: wh
    table_defaults: *defaults
    tables:
      shop.orders: *orders
"""
    )
    result = invoke("--config", str(path), "config", "validate")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[3:]}
    assert lines["shop.orders"][0] == "timestamp_only"
    assert lines["shop.refunds"][:1] == ["timestamp_only"]
    assert lines["shop.items"][0] == "timestamp_only"
    assert lines["shop.users"][0] == "full_sync"
    from s3rs_dagster.config import load_config

    config = load_config(path)
    tables = config.pipelines["p"].tables
    assert str(tables["shop.refunds"].start_date) == "2024-07-01", "the override wins"
    assert str(tables["shop.items"].start_date) == "2024-06-01"
    assert tables["shop.refunds"].partitioning == "monthly"
    assert tables["shop.items"].cdc_lag_seconds == 30
    assert tables["shop.lagged"].cdc_strategy == "hybrid", "table_defaults apply"
    assert config.pipelines["q"].tables["shop.orders"] == tables["shop.orders"]
