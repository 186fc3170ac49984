"""SSH tunnels on the real sshd bastion: shared, reopened, and refused with clear reasons."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import sqlalchemy as sa

from s3rs_dagster.adapters.source import open_source
from s3rs_dagster.adapters.tunnel import TunnelError, TunnelRegistry
from s3rs_dagster.config import SshTunnelConfig
from s3rs_dagster_tests.adapters.test_source import bastion, direct_source
from s3rs_dagster_tests.conftest import Stack


def mysql_endpoint(stack: Stack) -> tuple[str, int]:
    return stack["MYSQL_HOST"], int(stack["MYSQL_PORT"])


def open_and_close(registry: TunnelRegistry, tunnel: SshTunnelConfig, stack: Stack) -> None:
    with registry.forward(tunnel, *mysql_endpoint(stack)):
        pass


def test_tunnel_is_shared_by_users_of_the_same_bastion_and_closed_after(stack: Stack) -> None:
    registry = TunnelRegistry()
    source = direct_source(stack, ssh_tunnel=bastion(stack))
    with (
        open_source(source, tunnels=registry) as first,
        open_source(source, tunnels=registry) as second,
    ):
        assert registry.open_count() == 1
        for engine in (first, second):
            with engine.connect() as connection:
                assert connection.execute(sa.text("SELECT 1")).scalar_one() == 1
        assert first.url.port == second.url.port, "both engines use the same forwarded port"
        port = first.url.port
    assert registry.open_count() == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_dead_tunnel_is_reopened_for_the_next_user(stack: Stack) -> None:
    registry = TunnelRegistry()
    tunnel = bastion(stack)
    with registry.forward(tunnel, *mysql_endpoint(stack)) as (_host, first_port):
        shared = next(iter(registry._tunnels.values()))
        shared.forwarder._transport.close()  # the bastion connection drops
        with (
            registry.forward(tunnel, *mysql_endpoint(stack)) as (host, port),
            socket.create_connection((host, port), timeout=5) as sock,
        ):
            assert sock.recv(4), "MariaDB greets through the reopened tunnel"
            assert port == first_port, "engines holding the old port keep working"
    assert registry.open_count() == 0


def test_host_key_is_verified_when_configured(stack: Stack) -> None:
    registry = TunnelRegistry()
    host_key_file = Path(stack["SSH_BASTION_KEY_PATH"]).with_name("host_ed25519.pub")
    good = bastion(stack, host_key=host_key_file.read_text().strip())
    with registry.forward(good, *mysql_endpoint(stack)) as (_host, port):
        assert port > 0
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    with pytest.raises(TunnelError, match=r"does not match ssh_tunnel\.host_key; refusing"):
        open_and_close(registry, bastion(stack, host_key=other_key), stack)
    assert registry.open_count() == 0


def test_key_not_authorised_is_explained(stack: Stack) -> None:
    unauthorised = Path(stack["SSH_BASTION_KEY_PATH"]).with_name("host_ed25519")
    with pytest.raises(
        TunnelError, match=r"authentication to .* failed with key .*authorized_keys"
    ):
        open_and_close(TunnelRegistry(), bastion(stack, private_key_path=unauthorised), stack)


def test_missing_key_file(stack: Stack, tmp_path: Path) -> None:
    with pytest.raises(TunnelError, match=r"does not exist \(check ssh_tunnel.private_key_path\)"):
        open_and_close(TunnelRegistry(), bastion(stack, private_key_path=tmp_path / "x"), stack)


def test_unreachable_bastion(stack: Stack) -> None:
    with pytest.raises(TunnelError, match=r"cannot reach SSH bastion .*:1: "):
        open_and_close(TunnelRegistry(), bastion(stack, port=1), stack)


def test_key_readable_by_others_is_refused_with_the_fix(stack: Stack, tmp_path: Path) -> None:
    key = tmp_path / "bastion.pem"
    key.write_bytes(Path(stack["SSH_BASTION_KEY_PATH"]).read_bytes())
    key.chmod(0o644)
    with pytest.raises(TunnelError, match=rf"mode 0644.*chmod 600 {key}"):
        open_and_close(TunnelRegistry(), bastion(stack, private_key_path=key), stack)
    key.chmod(0o600)
    open_and_close(TunnelRegistry(), bastion(stack, private_key_path=key), stack)
