from corral.app.gateway import ClientAddress
from corral.net.response import Request


def req(peer: str, xff: str | None) -> Request:
    headers = [(b"x-forwarded-for", xff.encode())] if xff else []
    return Request("GET", b"/", b"", headers, b"", (peer, 1))


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    address = ClientAddress(["10.0.0.0/8"])
    assert address(req("192.0.2.9", "1.2.3.4")) == "192.0.2.9"
    assert address(req("10.1.1.1", "1.2.3.4")) == "1.2.3.4"
    assert address(req("10.1.1.1", "6.6.6.6, 1.2.3.4, 10.2.2.2")) == "1.2.3.4"
    assert address(req("10.1.1.1", "not-an-ip")) == "10.1.1.1"
    assert address(req("10.1.1.1", None)) == "10.1.1.1"
    assert ClientAddress([])(req("10.1.1.1", "1.2.3.4")) == "10.1.1.1"
