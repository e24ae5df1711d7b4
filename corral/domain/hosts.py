"""Which Host headers a loopback-bound gateway answers: Ollama's rule against DNS rebinding.

A page on an attacker's domain can make a browser resolve that domain to 127.0.0.1 and talk to a
local server; its requests then carry the attacker's name in `Host`. Ollama, bound to a loopback
address, answers 403 to any Host that is not local (server/routes.go: allowedHostsMiddleware and
allowedHost); Corral applies the same rule, extended by `server.allowed_hosts`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def host_name(header: str) -> str:
    """The host part of a Host header value (`name:port`, `[v6]:port`, or bare), lower-case."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def _ip_is_local(host: str, local_ips: Collection[str]) -> bool | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return ip.is_loopback or ip.is_private or ip.is_unspecified or str(ip) in local_ips


def _matches(host: str, pattern: str) -> bool:
    pattern = pattern.strip().lower()
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def host_allowed(
    header: str | None,
    *,
    extra: Collection[str] = (),
    hostname: str = "",
    local_ips: Collection[str] = (),
) -> bool:
    """True when a request with this Host header may be answered by a loopback-bound gateway.

    Allowed, as Ollama allows: no Host, `localhost`, loopback/private/unspecified or local IPs, the
    machine's own hostname, and names under .localhost, .local and .internal; plus each of `extra`
    (an exact name, `*.example.com` for its subdomains, or `*` for any)."""
    host = host_name(header or "")
    if host == "" or host == "localhost":
        return True
    local = _ip_is_local(host, local_ips)
    if local is not None:
        return local or any(_matches(host, p) for p in extra)
    if hostname and host == hostname.lower():
        return True
    if host.endswith(_LOCAL_SUFFIXES):
        return True
    return any(_matches(host, p) for p in extra)
