"""pipelines.yaml: every user mistake becomes one clear message naming the file and key path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from s3rs_dagster.config import (
    ConfigError,
    DuckdbTargetConfig,
    PostgresTargetConfig,
    RedshiftTargetConfig,
    load_config,
    parse_config,
    resolve_config_path,
)

REPO = Path(__file__).resolve().parent.parent

ENV = {"MYSQL_PASSWORD": "s3cr3t-mysql", "RS_PASSWORD": "s3cr3t-rs"}

BASE: dict[str, Any] = {
    "connections": {
        "sources": {
            "mysql_prod": {
                "host": "db.internal",
                "port": 3306,
                "database": "settlement",
                "username": "reader",
                "password": "${MYSQL_PASSWORD}",
                "ssh_tunnel": {
                    "enabled": True,
                    "host": "bastion.example.com",
                    "username": "ubuntu",
                    "private_key_path": "keys/bastion.pem",
                },
            }
        },
        "targets": {
            "redshift_dw": {
                "type": "redshift",
                "host": "dw.example.com",
                "database": "dw",
                "username": "loader",
                "password": "${RS_PASSWORD}",
                "schema": "raw",
                "iam_role": "arn:aws:iam::123456789012:role/RedshiftCopy",
            }
        },
    },
    "storage": {"url": "s3://backups-bucket/mysql", "region": "us-west-2"},
    "pipelines": {
        "us_dw": {
            "source": "mysql_prod",
            "target": "redshift_dw",
            "tables": {
                "settlement.settle_orders": {
                    "cdc_strategy": "hybrid",
                    "cdc_timestamp_column": "updated_at",
                    "cdc_id_column": "id",
                    "start_date": "2025-01-01",
                }
            },
        }
    },
}


def render(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def parse(data: dict[str, Any] | str, tmp_path: Path, env: dict[str, str] | None = None):
    text = data if isinstance(data, str) else render(data)
    return parse_config(text, file=tmp_path / "pipelines.yaml", env=ENV if env is None else env)


def problems_of(data: dict[str, Any] | str, tmp_path: Path, env: dict[str, str] | None = None):
    with pytest.raises(ConfigError) as caught:
        parse(data, tmp_path, env)
    error = caught.value
    assert str(tmp_path / "pipelines.yaml") in str(error), "the message names the file"
    return error, {problem.key_path: problem.message for problem in error.problems}


def edited(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-path changes applied; a value of ... deletes the key."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("/")
        node = data
        for part in parents:
            node = node[part]
        if value is ...:
            del node[leaf]
        else:
            node[leaf] = value
    return data


# --------------------------------------------------------------------------- valid files


def test_shipped_pipelines_yaml_is_valid() -> None:
    config = load_config(REPO / "pipelines.yaml", env={})
    assert set(config.pipelines) >= {"local", "local_ssh"}
    source = config.source_for("local_ssh")
    assert source.ssh_tunnel.enabled
    assert source.ssh_tunnel.private_key_path == REPO / ".stack" / "ssh" / "client_ed25519"
    assert config.storage.bucket == "s3rs" and config.storage.prefix == "backups"


def test_full_example_parses_with_defaults_resolved(tmp_path: Path) -> None:
    config = parse(BASE, tmp_path)
    pipeline = config.pipeline("us_dw")
    table = pipeline.tables["settlement.settle_orders"]
    assert table.partitioning == "daily"
    assert str(table.start_date) == "2025-01-01"
    assert table.write_mode is None, "merge vs append is decided once the primary key is known"
    assert pipeline.processing.strategy == "sequential"
    assert pipeline.processing.batch_size == 50_000
    source = config.source_for("us_dw")
    assert source.password.get_secret_value() == "s3cr3t-mysql"
    assert source.time_zone == "+00:00"
    assert source.ssh_tunnel.private_key_path == tmp_path / "keys" / "bastion.pem"
    target = config.target_for("us_dw")
    assert isinstance(target, RedshiftTargetConfig)
    assert (target.port, target.schema_) == (5439, "raw")


def test_secrets_are_masked_in_repr(tmp_path: Path) -> None:
    config = parse(BASE, tmp_path)
    assert "s3cr3t" not in repr(config)
    assert "s3cr3t" not in str(config.model_dump())


def test_target_type_defaults_to_redshift_and_each_backend_parses(tmp_path: Path) -> None:
    targets = {
        "rs": {
            k: v for k, v in BASE["connections"]["targets"]["redshift_dw"].items() if k != "type"
        },
        "pg": {"type": "postgres", "host": "pg", "database": "dw", "username": "u"},
        "duck": {"type": "duckdb", "path": "warehouse.duckdb"},
    }
    config = parse(
        edited(**{"connections/targets": targets, "pipelines/us_dw/target": "rs"}), tmp_path
    )
    assert isinstance(config.connections.targets["rs"], RedshiftTargetConfig)
    pg = config.connections.targets["pg"]
    assert isinstance(pg, PostgresTargetConfig) and pg.port == 5432
    duck = config.connections.targets["duck"]
    assert isinstance(duck, DuckdbTargetConfig)
    assert duck.path == tmp_path / "warehouse.duckdb", "relative to the config file"


def test_env_interpolation_defaults_and_escapes(tmp_path: Path) -> None:
    data = edited(
        **{
            "connections/sources/mysql_prod/host": "${DB_HOST:-fallback.internal}",
            "connections/sources/mysql_prod/port": "${DB_PORT:-3310}",
            "connections/sources/mysql_prod/database": "price$$list",
        }
    )
    config = parse(data, tmp_path)
    source = config.connections.sources["mysql_prod"]
    assert (source.host, source.port, source.database) == ("fallback.internal", 3310, "price$list")
    config = parse(data, tmp_path, env={**ENV, "DB_HOST": "from-env"})
    assert config.connections.sources["mysql_prod"].host == "from-env"


def test_table_defaults_apply_and_tables_override(tmp_path: Path) -> None:
    data = edited(
        **{
            "pipelines/us_dw/table_defaults": {
                "cdc_strategy": "timestamp_only",
                "start_date": "2024-06-01",
            },
            "pipelines/us_dw/tables": {
                "shop.a": {},
                "shop.b": {"cdc_strategy": "id_only"},
            },
        }
    )
    tables = parse(data, tmp_path).pipeline("us_dw").tables
    assert tables["shop.a"].cdc_strategy == "timestamp_only"
    assert tables["shop.a"].cdc_timestamp_column == "updated_at"
    assert tables["shop.a"].partitioning == "daily"
    assert tables["shop.b"].cdc_strategy == "id_only"
    assert tables["shop.b"].partitioning == "none"
    assert tables["shop.b"].cdc_id_column == "id"


def test_full_sync_resolves_to_replace(tmp_path: Path) -> None:
    data = edited(**{"pipelines/us_dw/tables": {"shop.small": {"cdc_strategy": "full_sync"}}})
    table = parse(data, tmp_path).pipeline("us_dw").tables["shop.small"]
    assert (table.write_mode, table.partitioning) == ("replace", "none")


def test_yaml_anchors_are_allowed(tmp_path: Path) -> None:
    text = (
        render(BASE).replace("  us_dw:\n", "  us_dw: &base\n")
        + "  us_dw_copy:\n    <<: *base\n    description: same tables\n"
    )
    text = text.replace("pipelines:\n", "pipelines:\n", 1)
    config = parse(text, tmp_path)
    assert config.pipelines["us_dw_copy"].tables.keys() == config.pipelines["us_dw"].tables.keys()


def test_table_found_by_bare_name(tmp_path: Path) -> None:
    config = parse(BASE, tmp_path)
    assert config.table("us_dw", "settle_orders")[0] == "settlement.settle_orders"
    assert config.table("us_dw", "settlement.settle_orders")[0] == "settlement.settle_orders"


# --------------------------------------------------------------------------- mistakes


def test_unknown_key_names_path_and_suggests(tmp_path: Path) -> None:
    data = edited(**{"pipelines/us_dw/tables/settlement.settle_orders/cdc_timestamp_colum": "x"})
    _, problems = problems_of(data, tmp_path)
    path = 'pipelines.us_dw.tables["settlement.settle_orders"].cdc_timestamp_colum'
    assert path in problems
    assert "did you mean 'cdc_timestamp_column'?" in problems[path]
    assert "allowed here:" in problems[path]


def test_unknown_top_level_and_nested_keys(tmp_path: Path) -> None:
    data = edited(**{"storage/endpoint": "http://x", "connections/sourcs": {}})
    _, problems = problems_of(data, tmp_path)
    assert "did you mean 'endpoint_url'?" in problems["storage.endpoint"]
    assert "did you mean 'sources'?" in problems["connections.sourcs"]


def test_unknown_key_inside_a_typed_target_has_no_type_tag_in_path(tmp_path: Path) -> None:
    data = edited(**{"connections/targets/redshift_dw/iam_rol": "x"})
    _, problems = problems_of(data, tmp_path)
    assert "did you mean 'iam_role'?" in problems["connections.targets.redshift_dw.iam_rol"]


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    data = edited(**{"connections/sources/mysql_prod/port": "three-three-oh-six"})
    _, problems = problems_of(data, tmp_path)
    message = problems["connections.sources.mysql_prod.port"]
    assert "integer" in message and "three-three-oh-six" in message


def test_bad_choice_lists_allowed_values(tmp_path: Path) -> None:
    data = edited(**{"pipelines/us_dw/tables/settlement.settle_orders/cdc_strategy": "hybird"})
    _, problems = problems_of(data, tmp_path)
    message = problems['pipelines.us_dw.tables["settlement.settle_orders"].cdc_strategy']
    assert "did you mean 'hybrid'?" in message
    assert "timestamp_only" in message and "full_sync" in message


def test_unknown_target_type(tmp_path: Path) -> None:
    data = edited(**{"connections/targets/redshift_dw/type": "snowflake"})
    _, problems = problems_of(data, tmp_path)
    message = problems["connections.targets.redshift_dw"]
    assert "'snowflake' is not supported" in message and "duckdb" in message


def test_missing_required_key(tmp_path: Path) -> None:
    data = edited(**{"connections/sources/mysql_prod/database": ...})
    _, problems = problems_of(data, tmp_path)
    assert problems["connections.sources.mysql_prod.database"] == "required key is missing"


def test_missing_environment_variable(tmp_path: Path) -> None:
    _, problems = problems_of(BASE, tmp_path, env={"RS_PASSWORD": "x"})
    message = problems["connections.sources.mysql_prod.password"]
    assert "MYSQL_PASSWORD is not set" in message


def test_malformed_reference(tmp_path: Path) -> None:
    data = edited(**{"connections/sources/mysql_prod/host": "${DB_HOST"})
    _, problems = problems_of(data, tmp_path)
    assert "malformed" in problems["connections.sources.mysql_prod.host"]


def test_literal_secret_is_refused_and_not_echoed(tmp_path: Path) -> None:
    data = edited(**{"connections/sources/mysql_prod/password": "hunter2-literal"})
    error, problems = problems_of(data, tmp_path)
    assert "environment only" in problems["connections.sources.mysql_prod.password"]
    assert "hunter2-literal" not in str(error)


def test_invalid_secret_value_is_not_echoed(tmp_path: Path) -> None:
    data = edited(**{"connections/sources/mysql_prod/ssh_tunnel/private_key_passphrase": "${PP}"})
    error, _ = problems_of(
        edited(**{"connections/sources/mysql_prod/ssh_tunnel/bogus": "${PP}"}), tmp_path
    )
    assert "bogus" in str(error)
    config = parse(data, tmp_path, env={**ENV, "PP": "pass-phrase-value"})
    assert "pass-phrase-value" not in repr(config)


def test_pipeline_naming_undefined_source_suggests(tmp_path: Path) -> None:
    data = edited(**{"pipelines/us_dw/source": "mysql_prd"})
    _, problems = problems_of(data, tmp_path)
    message = problems["pipelines.us_dw.source"]
    assert "'mysql_prd' is not defined under connections.sources" in message
    assert "did you mean 'mysql_prod'?" in message


def test_pipeline_naming_undefined_target(tmp_path: Path) -> None:
    data = edited(**{"pipelines/us_dw/target": "snowflake"})
    _, problems = problems_of(data, tmp_path)
    assert "defined: redshift_dw" in problems["pipelines.us_dw.target"]


def test_undefined_pipeline_on_the_command_line(tmp_path: Path) -> None:
    config = parse(BASE, tmp_path)
    with pytest.raises(ConfigError) as caught:
        config.pipeline("us_dww")
    assert "pipeline 'us_dww' is not defined (did you mean 'us_dw'?)" in str(caught.value)


def test_undefined_table_on_the_command_line(tmp_path: Path) -> None:
    config = parse(BASE, tmp_path)
    with pytest.raises(ConfigError) as caught:
        config.table("us_dw", "settle_order")
    message = str(caught.value)
    assert "table 'settle_order' is not defined in pipeline 'us_dw'" in message
    assert "did you mean" in message and "settlement.settle_orders" in message


def test_ambiguous_bare_table_name(tmp_path: Path) -> None:
    data = edited(
        **{
            "pipelines/us_dw/tables": {
                "a.orders": {"start_date": "2025-01-01"},
                "b.orders": {"start_date": "2025-01-01"},
            }
        }
    )
    config = parse(data, tmp_path)
    with pytest.raises(ConfigError, match=r"ambiguous.*a\.orders, b\.orders"):
        config.table("us_dw", "orders")


def test_table_key_must_be_qualified(tmp_path: Path) -> None:
    data = edited(**{"pipelines/us_dw/tables": {"orders": {"start_date": "2025-01-01"}}})
    _, problems = problems_of(data, tmp_path)
    assert "<schema>.<table>" in problems["pipelines.us_dw.tables"]


def test_partitioned_table_needs_start_date(tmp_path: Path) -> None:
    data = edited(**{"pipelines/us_dw/tables/settlement.settle_orders/start_date": ...})
    _, problems = problems_of(data, tmp_path)
    assert (
        "start_date is required" in problems['pipelines.us_dw.tables["settlement.settle_orders"]']
    )


def test_cron_defaults_by_partitioning_and_a_bad_cron_is_explained(tmp_path: Path) -> None:
    tables = {
        "s.daily": {"start_date": "2025-01-01"},
        "s.monthly": {"start_date": "2025-01-01", "partitioning": "monthly"},
        "s.nightly": {"start_date": "2025-01-01", "cron": "30 2 * * *"},
    }
    config = parse(edited(**{"pipelines/us_dw/tables": tables}), tmp_path)
    crons = {name: table.cron for name, table in config.pipelines["us_dw"].tables.items()}
    assert crons == {"s.daily": "0 * * * *", "s.monthly": "none", "s.nightly": "30 2 * * *"}
    bad = edited(**{"pipelines/us_dw/tables/settlement.settle_orders/cron": "every hour"})
    _, problems = problems_of(bad, tmp_path)
    message = problems['pipelines.us_dw.tables["settlement.settle_orders"].cron']
    assert "'every hour' is not a cron of five fields" in message and "'0 * * * *'" in message


def test_id_only_cannot_be_time_partitioned(tmp_path: Path) -> None:
    data = edited(
        **{"pipelines/us_dw/tables": {"s.t": {"cdc_strategy": "id_only", "partitioning": "daily"}}}
    )
    _, problems = problems_of(data, tmp_path)
    assert "needs a timestamp cursor" in problems['pipelines.us_dw.tables["s.t"]']


def test_full_sync_refuses_merge(tmp_path: Path) -> None:
    data = edited(
        **{"pipelines/us_dw/tables": {"s.t": {"cdc_strategy": "full_sync", "write_mode": "merge"}}}
    )
    _, problems = problems_of(data, tmp_path)
    assert "replaces the target" in problems['pipelines.us_dw.tables["s.t"]']


def test_parallelism_needs_parallel_strategy(tmp_path: Path) -> None:
    data = edited(**{"pipelines/us_dw/processing": {"max_parallel_tables": 4}})
    _, problems = problems_of(data, tmp_path)
    assert "needs strategy: parallel" in problems["pipelines.us_dw.processing"]


def test_unquoted_time_zone_offset_is_explained(tmp_path: Path) -> None:
    text = render(BASE).replace(
        "      database: settlement\n", "      database: settlement\n      time_zone: +8:00\n"
    )
    _, problems = problems_of(text, tmp_path)
    assert "quote it" in problems["connections.sources.mysql_prod.time_zone"]


def test_unknown_time_zone(tmp_path: Path) -> None:
    data = edited(**{"connections/sources/mysql_prod/time_zone": "Mars/Olympus"})
    _, problems = problems_of(data, tmp_path)
    assert "IANA" in problems["connections.sources.mysql_prod.time_zone"]


def test_enabled_tunnel_needs_its_endpoint(tmp_path: Path) -> None:
    data = edited(**{"connections/sources/mysql_prod/ssh_tunnel": {"enabled": True}})
    _, problems = problems_of(data, tmp_path)
    message = problems["connections.sources.mysql_prod.ssh_tunnel"]
    assert "host, username, private_key_path" in message


def test_storage_url_rules(tmp_path: Path) -> None:
    _, problems = problems_of(edited(**{"storage/url": "gs://bucket/x"}), tmp_path)
    assert "not supported" in problems["storage.url"]
    _, problems = problems_of(edited(**{"storage/url": "s3://Bad_Bucket/x"}), tmp_path)
    assert "bucket name" in problems["storage.url"]
    config = parse(edited(**{"storage/url": "lake"}), tmp_path)
    assert config.storage.local_root == tmp_path / "lake"


def test_bad_iam_role(tmp_path: Path) -> None:
    data = edited(**{"connections/targets/redshift_dw/iam_role": "RedshiftCopy"})
    _, problems = problems_of(data, tmp_path)
    assert "IAM role ARN" in problems["connections.targets.redshift_dw.iam_role"]


def test_bad_pipeline_name(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["pipelines"]["us dw;drop"] = data["pipelines"].pop("us_dw")
    _, problems = problems_of(data, tmp_path)
    assert "is not allowed" in problems['pipelines["us dw;drop"]']


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    text = render(BASE).replace("  us_dw:\n", "  us_dw:\n    source: other\n", 1)
    error, _ = problems_of(text, tmp_path)
    assert "duplicate key 'source'" in str(error) and "line" in str(error)


def test_invalid_yaml_gives_line_and_column(tmp_path: Path) -> None:
    error, _ = problems_of("storage: {url: [unclosed\n", tmp_path)
    assert "invalid YAML at line" in str(error)


def test_non_mapping_and_empty_files(tmp_path: Path) -> None:
    error, _ = problems_of("", tmp_path)
    assert "the file is empty" in str(error)
    error, _ = problems_of("- a\n- b\n", tmp_path)
    assert "expected a mapping" in str(error)


def test_non_string_key_is_explained(tmp_path: Path) -> None:
    text = render(BASE).replace("  us_dw:\n", "  on:\n", 1)
    _, problems = problems_of(text, tmp_path)
    assert any("quote it" in message for message in problems.values())


def test_wrong_container_types(tmp_path: Path) -> None:
    _, problems = problems_of(
        edited(**{"pipelines/us_dw/tables": ["settlement.settle_orders"]}), tmp_path
    )
    assert "valid dictionary" in problems["pipelines.us_dw.tables"]


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    data = edited(**{"storage/url": "gs://x/y", "pipelines/us_dw/target": "nope"})
    data["connections"]["sources"]["mysql_prod"]["prot"] = 1
    error, problems = problems_of(data, tmp_path)
    assert len(problems) == 2, "name checks run once the structure is valid"
    assert "2 problems" in str(error)


def test_config_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text(render(BASE))
    from_env = tmp_path / "from_env.yaml"
    from_env.write_text(render(BASE))
    assert resolve_config_path(explicit, env={"S3RS_CONFIG": str(from_env)}) == explicit
    assert resolve_config_path(None, env={"S3RS_CONFIG": str(from_env)}) == from_env
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipelines.yaml").write_text(render(BASE))
    assert resolve_config_path(None, env={}) == Path("pipelines.yaml")
    with pytest.raises(
        ConfigError, match=r"no config file at .*missing\.yaml \(from \$S3RS_CONFIG\)"
    ):
        resolve_config_path(None, env={"S3RS_CONFIG": str(tmp_path / "missing.yaml")})
    (tmp_path / "pipelines.yaml").unlink()
    with pytest.raises(ConfigError, match=r"pass --config PATH or set \$S3RS_CONFIG"):
        resolve_config_path(None, env={})


def test_initial_snapshot_is_auto_or_off(tmp_path: Path) -> None:
    data = edited(**{"pipelines/us_dw/processing": {"initial_snapshot": "always"}})
    _, problems = problems_of(data, tmp_path)
    message = problems["pipelines.us_dw.processing.initial_snapshot"]
    assert message == "'always' is not allowed; use one of: auto, off"
    data = edited(**{"pipelines/us_dw/processing": {"snapshot_checkpoint_rows": 0}})
    _, problems = problems_of(data, tmp_path)
    assert "pipelines.us_dw.processing.snapshot_checkpoint_rows" in problems
