"""Who answers on which listener: the Host check for a loopback bind, and the metrics listener's
gateway when it also serves the web console."""

from __future__ import annotations

import socket
from collections.abc import Awaitable

from corral.app.context import RequestRecord
from corral.app.downstream import Recorded
from corral.app.gateway import Gateway, Guard, HostCheck
from corral.app.router import RouteHandler, Router
from corral.app.routes import CONSOLE_HANDLERS, ROUTES, RouteSpec
from corral.config import Settings, is_loopback
from corral.net.response import Request


def _local_addresses() -> tuple[str, frozenset[str]]:
    """This machine's hostname and its own addresses (Ollama's isLocalIP), for the Host check."""
    hostname = socket.gethostname()
    addresses: set[str] = set()
    try:
        for info in socket.getaddrinfo(hostname, None):
            addresses.add(str(info[4][0]))
    except OSError:
        pass
    return hostname, frozenset(addresses)


def host_check(host: str, allowed_hosts: list[str]) -> HostCheck | None:
    if not is_loopback(host):
        return None
    hostname, local_ips = _local_addresses()
    return HostCheck(allowed_hosts, hostname, local_ips)


def _but_metrics(guard: Guard) -> Guard:
    """`guard`, except on /metrics, which the metrics listener serves with no key."""

    def guarded(
        request: Request, record: RequestRecord, spec: RouteSpec
    ) -> Awaitable[Recorded | None] | Recorded | None:
        return None if spec.path == "/metrics" else guard(request, record, spec)

    return guarded


def console_side(main: Gateway, handlers: dict[str, RouteHandler], settings: Settings) -> Gateway:
    """The metrics listener's gateway when it also serves the console (`console.listen: metrics`):
    /metrics as before, the console, and the admin API the console calls, behind the main guards."""
    assert settings.metrics.listen
    side = {
        name: handler
        for name, handler in handlers.items()
        if name == "metrics" or name in CONSOLE_HANDLERS or name.startswith(("backends_", "keys_"))
    }
    observers = list(main.observers)

    def observe(record: RequestRecord) -> None:
        if record.route != "/metrics":  # scrapes stay out of the access log and audit, as before
            for o in observers:
                o(record)

    gateway = Gateway(
        Router.from_table(ROUTES, side),
        [observe],
        main.cors,
        main.client_ip,
        main.tracing,
        host_check(settings.metrics.listen.rpartition(":")[0], settings.server.allowed_hosts),
        main.keys_required,
    )
    gateway.guards = [_but_metrics(g) for g in main.guards]
    return gateway
