"""The connection caps' bookkeeping (corral.net.limits.ConnectionTable), over random event sequences."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.net.limits import ConnectionTable


class Conn:
    def __init__(self, ip: str, serial: int) -> None:
        self.peer_ip = ip
        self.serial = serial
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True

    def __repr__(self) -> str:
        return f"Conn({self.peer_ip}, {self.serial})"


def busy(table: ConnectionTable[Conn], conn: Conn) -> None:
    table.idle_since.pop(conn, None)  # what the server does when a request starts


def idle(table: ConnectionTable[Conn], conn: Conn) -> None:
    table.idle_since[conn] = None  # ... and when it finishes


def test_the_oldest_idle_connection_of_the_client_makes_room() -> None:
    table: ConnectionTable[Conn] = ConnectionTable(max_total=10, max_per_client=2)
    a1, a2, b1 = Conn("a", 1), Conn("a", 2), Conn("b", 1)
    assert table.admit(b1) and table.admit(a1) and table.admit(a2)
    a3 = Conn("a", 3)
    assert table.admit(a3)
    assert a1.evicted and not a2.evicted and not b1.evicted  # b1 is older, but another client's


def test_a_newcomer_is_refused_when_every_connection_is_busy() -> None:
    table: ConnectionTable[Conn] = ConnectionTable(max_total=2, max_per_client=5)
    first, second = Conn("a", 1), Conn("b", 1)
    assert table.admit(first) and table.admit(second)
    busy(table, first)
    busy(table, second)
    assert not table.admit(Conn("c", 1))
    idle(table, second)
    assert table.admit(Conn("c", 2)) and second.evicted and not first.evicted


events = st.lists(
    st.tuples(st.sampled_from(["open", "busy", "idle", "close"]), st.integers(0, 3), st.integers(0, 50)),
    max_size=200,
)


@given(events)
def test_the_caps_always_hold_and_only_idle_connections_are_evicted(script: list[tuple[str, int, int]]) -> None:
    table: ConnectionTable[Conn] = ConnectionTable(max_total=6, max_per_client=3)
    live: list[Conn] = []
    serving: set[Conn] = set()
    for serial, (action, client, pick) in enumerate(script):
        if action == "open":
            conn = Conn(f"10.0.0.{client}", serial)
            before_idle = list(table.idle_since)
            if table.admit(conn):
                live.append(conn)
            else:
                # Refused only when it had to be: no idle connection could make room.
                same = [c for c in before_idle if c.peer_ip == conn.peer_ip]
                at_client_cap = sum(c.peer_ip == conn.peer_ip for c in live) >= 3
                assert (at_client_cap and not same) or (len(live) >= 6 and not before_idle)
            for gone in [c for c in live if c.evicted]:
                assert gone not in serving  # a connection serving a request is never closed for room
                live.remove(gone)
        elif live:
            conn = live[pick % len(live)]
            if action == "busy":
                busy(table, conn)
                serving.add(conn)
            elif action == "idle":
                idle(table, conn)
                serving.discard(conn)
            else:
                table.remove(conn)
                live.remove(conn)
                serving.discard(conn)
        assert len(table) == len(live) <= 6
        for ip in {c.peer_ip for c in live}:
            assert sum(c.peer_ip == ip for c in live) <= 3
