"""A TCP proxy the tests put between s3rs and a real server, to cut, stop or stall the link.

Faults it injects, on a real connection to a real server:

- `cut()`: every open connection is reset at once (a dropped link, a restarted server);
- `down()` / `up()`: the port stops listening (connection refused, like a stopped server) and
  listens again on the same port;
- `arm(pattern, action)`: one-shot, when the client sends bytes containing `pattern` (e.g. a
  statement's text, case-insensitive), once the connection has sent `after` (when set): "cut"
  resets the connection before the bytes reach the server; "lose_reply" forwards them, lets the
  server answer, throws the answer away and resets the connection (the request was carried
  out, the client never hears so); "stall" forwards them and then black-holes the connection.
  `outage` keeps the port down for that many seconds afterwards; `on_fire` runs as it strikes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

_Armed = tuple[bytes, str, float, bytes | None, Callable[[], None] | None]


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer or a dropped route does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on it
    with contextlib.suppress(OSError):
        sock.close()


class _Pair:
    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.stalled = False
        self.losing_reply = False
        self.closed = False
        self.primed = False
        self._tail = b""

    def start(self) -> None:
        threading.Thread(target=self._pump, args=(True,), daemon=True).start()
        threading.Thread(target=self._pump, args=(False,), daemon=True).start()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            _reset(self.client)
            _reset(self.server)

    def _pump(self, upstream: bool) -> None:
        source, sink = (self.client, self.server) if upstream else (self.server, self.client)
        try:
            while not self.closed:
                data = source.recv(65536)
                if not data:
                    break
                if upstream and self._triggered(data):
                    return
                while self.stalled and not self.closed:
                    time.sleep(0.05)
                if self.closed:
                    return
                if not upstream and self.losing_reply:
                    continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            if not self.stalled:
                self.close()
                self.proxy._forget(self)

    def _triggered(self, data: bytes) -> bool:
        armed = self.proxy._armed
        window = (self._tail + data).lower()
        self._tail = data[-256:]
        if armed is None:
            return False
        pattern, action, outage, after, on_fire = armed
        if after is not None and not self.primed:
            self.primed = after.lower() in window
            return False
        if pattern.lower() not in window or not self.proxy._claim(armed):
            return False
        if action == "cut":
            self.close()
        elif action == "stall":
            self.server.sendall(data)
            self.stalled = True
        else:  # lose_reply: the server gets the request; its answer never arrives
            self.losing_reply = True
            self.server.sendall(data)
            time.sleep(self.proxy.reply_wait)
        if on_fire is not None:
            on_fire()
        if action == "lose_reply":
            self.close()
        if outage:
            self.proxy.down()
            threading.Timer(outage, self.proxy.up).start()
        self.proxy.fired.set()
        return action != "stall"


class FaultProxy:
    """Listens on 127.0.0.1:<port> and forwards every connection to (host, port)."""

    def __init__(self, host: str, port: int, *, reply_wait: float = 0.5) -> None:
        self.upstream = (host, port)
        self.reply_wait = reply_wait
        self.port = 0
        self.fired = threading.Event()
        self.connections = 0
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._listener: socket.socket | None = None
        self._armed: _Armed | None = None
        self.up()

    def arm(
        self,
        pattern: bytes,
        action: str = "cut",
        *,
        outage: float = 0.0,
        after: bytes | None = None,
        on_fire: Callable[[], None] | None = None,
    ) -> None:
        assert action in ("cut", "lose_reply", "stall")
        self.fired.clear()
        self._armed = (pattern, action, outage, after, on_fire)

    def cut(self) -> None:
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            pair.close()

    def down(self) -> None:
        """Stop listening (new connections are refused) and reset the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self.cut()

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self.port = listener.getsockname()[1]
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        self._armed = None
        self.down()

    def after(self, seconds: float, action: Callable[[], None]) -> threading.Timer:
        timer = threading.Timer(seconds, action)
        timer.start()
        return timer

    def _claim(self, armed: _Armed) -> bool:
        with self._lock:
            if self._armed is not armed:
                return False
            self._armed = None
            return True

    def _forget(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            pair = _Pair(self, client, server)
            with self._lock:
                if self._listener is not listener:
                    pair.close()
                    return
                self._pairs.add(pair)
                self.connections += 1
            pair.start()


class Proxies:
    """Starts fault proxies in front of servers; `close_all` closes every one started."""

    def __init__(self) -> None:
        self.started: list[FaultProxy] = []

    def __call__(self, host: str, port: int | str, **options: Any) -> FaultProxy:
        proxy = FaultProxy(host, int(port), **options)
        self.started.append(proxy)
        return proxy

    def close_all(self) -> None:
        for proxy in self.started:
            proxy.close()
