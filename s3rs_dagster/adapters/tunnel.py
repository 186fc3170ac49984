"""SSH tunnels through a bastion, shared per (bastion, remote endpoint) within a process.

Many tables of one source reuse one tunnel instead of each opening its own SSH session (the
existing tool's "tunnels competing" failure). A tunnel is opened on first use, reference
counted, reopened if its transport died, and closed when its last user leaves.

paramiko and sshtunnel are imported when a tunnel is first opened, not with this module: every
load and extract imports TunnelError, and most never open a tunnel (the two cost ~0.1 s of
start-up).
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from s3rs_dagster.config import SshTunnelConfig

if TYPE_CHECKING:
    import paramiko
    import sshtunnel

LOCAL_HOST = "127.0.0.1"


class _DemoteToDebug(logging.Filter):
    """sshtunnel logs every failure at ERROR; we raise a clearer TunnelError instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


sshtunnel_logger = logging.getLogger(f"{__name__}.sshtunnel")
sshtunnel_logger.addFilter(_DemoteToDebug())


class TunnelError(Exception):
    """An SSH tunnel could not be opened; the message says which bastion and what to check."""


@dataclass
class _SharedTunnel:
    forwarder: sshtunnel.SSHTunnelForwarder
    port: int
    users: int = 0


_TunnelKey = tuple[str, int, str, str, str, int]


class TunnelRegistry:
    """Process-wide tunnels keyed by bastion and remote endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tunnels: dict[_TunnelKey, _SharedTunnel] = {}

    @contextmanager
    def forward(
        self, tunnel: SshTunnelConfig, remote_host: str, remote_port: int
    ) -> Iterator[tuple[str, int]]:
        """Yield the local (host, port) that reaches remote_host:remote_port via the bastion."""
        key = _key(tunnel, remote_host, remote_port)
        self.revive(tunnel, remote_host, remote_port)
        with self._lock:
            shared = self._tunnels.get(key)
            if shared is None:
                forwarder = _open(tunnel, remote_host, remote_port)
                shared = _SharedTunnel(forwarder, forwarder.local_bind_port)
                self._tunnels[key] = shared
            shared.users += 1
            port = shared.port
        try:
            yield LOCAL_HOST, port
        finally:
            with self._lock:
                shared.users -= 1
                if shared.users == 0:
                    del self._tunnels[key]
                    shared.forwarder.stop(force=True)

    def revive(self, tunnel: SshTunnelConfig, remote_host: str, remote_port: int) -> None:
        """Reopen the tunnel to remote_host:remote_port if its SSH link died.

        It reopens on the same local port: engines already hold that port in their URL.
        """
        key = _key(tunnel, remote_host, remote_port)
        with self._lock:
            shared = self._tunnels.get(key)
            if shared is not None and not shared.forwarder.is_active:
                shared.forwarder.stop(force=True)
                shared.forwarder = _open(tunnel, remote_host, remote_port, shared.port)

    def is_alive(self, tunnel: SshTunnelConfig, remote_host: str, remote_port: int) -> bool:
        """Whether the tunnel to remote_host:remote_port is open and its SSH link is up."""
        with self._lock:
            shared = self._tunnels.get(_key(tunnel, remote_host, remote_port))
            return shared is not None and shared.forwarder.is_active

    def open_count(self) -> int:
        """How many tunnels are open now (one per bastion and remote endpoint)."""
        with self._lock:
            return len(self._tunnels)


def _key(tunnel: SshTunnelConfig, remote_host: str, remote_port: int) -> _TunnelKey:
    return (
        str(tunnel.host),
        tunnel.port,
        str(tunnel.username),
        str(tunnel.private_key_path),
        remote_host,
        remote_port,
    )


TUNNELS = TunnelRegistry()
"""The registry every source and warehouse connection in this process goes through."""


def _describe(tunnel: SshTunnelConfig) -> str:
    return f"{tunnel.username}@{tunnel.host}:{tunnel.port}"


def _load_key(tunnel: SshTunnelConfig) -> paramiko.PKey:
    import paramiko

    path = Path(str(tunnel.private_key_path))
    if not path.is_file():
        raise TunnelError(
            f"SSH key {path} for bastion {_describe(tunnel)} does not exist "
            "(check ssh_tunnel.private_key_path)"
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise TunnelError(
            f"SSH key {path} is readable by others (mode {mode:04o}); ssh refuses such keys "
            f"and so do we: run chmod 600 {path}"
        )
    passphrase = (
        tunnel.private_key_passphrase.get_secret_value() if tunnel.private_key_passphrase else None
    )
    try:
        return paramiko.PKey.from_path(path, password=passphrase)
    except paramiko.PasswordRequiredException:
        raise TunnelError(
            f"SSH key {path} is encrypted; set ssh_tunnel.private_key_passphrase: ${{ENV_VAR}}"
        ) from None
    except (paramiko.SSHException, OSError, ValueError) as exc:
        raise TunnelError(f"cannot read SSH key {path}: {exc}") from None


def _host_key(tunnel: SshTunnelConfig) -> paramiko.PKey | None:
    import paramiko

    if tunnel.host_key is None:
        return None
    key_type, data = tunnel.host_key.split()[:2]
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(data))


def _verify_host_key(tunnel: SshTunnelConfig) -> None:
    """Reach the bastion and, when a host key is configured, check the one it presents."""
    import paramiko

    where = _describe(tunnel)
    try:
        sock = socket.create_connection(
            (str(tunnel.host), tunnel.port), timeout=tunnel.connect_timeout_seconds
        )
    except OSError as exc:
        raise TunnelError(f"cannot reach SSH bastion {where}: {exc.strerror or exc}") from None
    expected = _host_key(tunnel)
    if expected is None:
        sock.close()
        return
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=tunnel.connect_timeout_seconds)
        presented = transport.get_remote_server_key()
    except (paramiko.SSHException, OSError) as exc:
        raise TunnelError(f"SSH handshake with bastion {where} failed: {exc}") from None
    finally:
        transport.close()
    if presented.get_name() != expected.get_name() or presented.asbytes() != expected.asbytes():
        raise TunnelError(
            f"SSH bastion {where} presented host key {presented.get_name()} "
            f"{presented.get_base64()[:24]}..., which does not match ssh_tunnel.host_key; "
            "refusing to connect (update host_key only if the bastion's key really changed)"
        )


def _open(
    tunnel: SshTunnelConfig, remote_host: str, remote_port: int, local_port: int = 0
) -> sshtunnel.SSHTunnelForwarder:
    import paramiko
    import sshtunnel

    key = _load_key(tunnel)
    where = _describe(tunnel)
    _verify_host_key(tunnel)
    forwarder = sshtunnel.SSHTunnelForwarder(
        (str(tunnel.host), tunnel.port),
        ssh_username=tunnel.username,
        ssh_pkey=key,
        ssh_host_key=_host_key(tunnel),
        ssh_config_file=None,
        allow_agent=False,
        host_pkey_directories=[],
        remote_bind_address=(remote_host, remote_port),
        local_bind_address=(LOCAL_HOST, local_port),
        set_keepalive=tunnel.keepalive_seconds,
        mute_exceptions=True,
        logger=sshtunnel_logger,
    )
    try:
        forwarder.start()
    except (sshtunnel.BaseSSHTunnelForwarderError, paramiko.SSHException, OSError) as exc:
        raise TunnelError(
            f"SSH tunnel via {where} failed: {exc}. Check that the key {tunnel.private_key_path} "
            "is authorised on the bastion and that it may forward to "
            f"{remote_host}:{remote_port}"
        ) from None
    if not (forwarder.is_active and forwarder.local_bind_ports):
        forwarder.stop(force=True)
        raise TunnelError(
            f"SSH authentication to {where} failed with key {tunnel.private_key_path}: "
            "check that it is in the bastion's authorized_keys for that user"
        )
    return forwarder
