"""The MySQL source adapter on the real MariaDB, directly and through the SSH bastion."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from s3rs_dagster.adapters.source import SourceError, check_source, open_source
from s3rs_dagster.config import SourceConfig, SshTunnelConfig
from s3rs_dagster_tests.conftest import Stack


def direct_source(stack: Stack, **changes: object) -> SourceConfig:
    values: dict[str, object] = {
        "host": stack["MYSQL_HOST"],
        "port": int(stack["MYSQL_PORT"]),
        "database": stack["MYSQL_DATABASE"],
        "username": stack["MYSQL_USER"],
        "password": SecretStr(stack["MYSQL_PASSWORD"]),
    }
    return SourceConfig(**{**values, **changes})


def bastion(stack: Stack, **changes: object) -> SshTunnelConfig:
    values: dict[str, object] = {
        "enabled": True,
        "host": stack["SSH_BASTION_HOST"],
        "port": int(stack["SSH_BASTION_PORT"]),
        "username": stack["SSH_BASTION_USER"],
        "private_key_path": stack["SSH_BASTION_KEY_PATH"],
    }
    return SshTunnelConfig(**{**values, **changes})


def test_query_directly(stack: Stack) -> None:
    assert "MariaDB" in check_source(direct_source(stack))


def test_query_through_the_bastion(stack: Stack) -> None:
    source = direct_source(stack, ssh_tunnel=bastion(stack))
    with open_source(source) as engine, engine.connect() as connection:
        peer = connection.execute(sa.text("SELECT USER(), DATABASE(), 40 + 2")).one()
    assert peer[1:] == (stack["MYSQL_DATABASE"], 42)
    assert peer[0].startswith(f"{stack['MYSQL_USER']}@")


def test_session_time_zone_is_set_from_config(stack: Stack) -> None:
    for zone in ("+00:00", "+05:30", "Europe/Berlin"):
        with open_source(direct_source(stack, time_zone=zone)) as engine, engine.connect() as c:
            assert c.execute(sa.text("SELECT @@session.time_zone")).scalar_one() == zone


def test_wrong_password_names_the_source_and_what_to_check(stack: Stack) -> None:
    source = direct_source(stack, password=SecretStr("definitely-wrong"))
    with pytest.raises(SourceError) as caught:
        check_source(source, name="mysql_prod")
    message = str(caught.value)
    assert "source 'mysql_prod'" in message and "access denied" in message
    assert "connections.sources.mysql_prod.username and password" in message
    assert "definitely-wrong" not in message and stack["MYSQL_PASSWORD"] not in message


def test_unknown_database(stack: Stack) -> None:
    with pytest.raises(SourceError, match="database 'no_such_db' does not exist"):
        check_source(direct_source(stack, database="no_such_db"), name="prod")


def test_unreachable_server(stack: Stack) -> None:
    source = direct_source(stack, port=1, connect_timeout_seconds=2)
    with pytest.raises(SourceError, match="cannot connect"):
        check_source(source, name="prod")
