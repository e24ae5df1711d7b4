"""The server's edge limits and the table of open client connections that enforces the connection caps.

A client that opens connections and never finishes a request costs a socket and a buffer each; the
caps bound that before any authentication runs. At a cap, idle connections (no request being served,
the oldest idle first) make room for the new one; when every connection is busy the new one is closed.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class ServerLimits:
    __slots__ = (
        "body_timeout_s",
        "header_timeout_s",
        "keepalive_timeout_s",
        "max_connections",
        "max_connections_per_client",
        "max_header_bytes",
        "max_header_count",
    )

    def __init__(
        self,
        max_header_bytes: int = 64 * 1024,
        max_header_count: int = 100,
        keepalive_timeout_s: float = 75.0,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 30.0,
        max_connections: int = 4096,
        max_connections_per_client: int = 256,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.keepalive_timeout_s = keepalive_timeout_s
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_connections = max_connections
        self.max_connections_per_client = max_connections_per_client


class Evictable(Protocol):
    """A connection as the table sees it."""

    peer_ip: str

    def evict(self) -> None: ...


C = TypeVar("C", bound=Evictable)


class ConnectionTable(Generic[C]):
    """Open connections, per client address, and the idle ones in the order they became idle."""

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.open: set[C] = set()
        # The connections serving no request, in the order they became idle; each connection adds and
        # removes itself (on the hot path, without a method call).
        self.idle_since: dict[C, None] = {}
        self._per_client: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.open)

    def admit(self, conn: C) -> bool:
        """Take `conn` in (idle) if the caps allow, closing older idle connections to make room."""
        ip = conn.peer_ip
        if self._per_client.get(ip, 0) >= self.max_per_client:
            victim = next((c for c in self.idle_since if c.peer_ip == ip), None)
            if victim is None:
                return False
            self._evict(victim)
        if len(self.open) >= self.max_total:
            victim = next(iter(self.idle_since), None)
            if victim is None:
                return False
            self._evict(victim)
        self.open.add(conn)
        self.idle_since[conn] = None
        self._per_client[ip] = self._per_client.get(ip, 0) + 1
        return True

    def remove(self, conn: C) -> None:
        if conn not in self.open:
            return
        self.open.discard(conn)
        self.idle_since.pop(conn, None)
        ip = conn.peer_ip
        left = self._per_client.get(ip, 1) - 1
        if left:
            self._per_client[ip] = left
        else:
            self._per_client.pop(ip, None)

    def _evict(self, conn: C) -> None:
        self.remove(conn)
        conn.evict()
