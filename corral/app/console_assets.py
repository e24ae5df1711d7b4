"""The web console's files (`corral/console/`), served at `/ui` from the installed package.

Every console response carries a strict Content-Security-Policy: scripts, styles and requests only
from Corral itself, no inline script, no frames, no forms posting elsewhere. The files are read once at
start-up; an ETag lets a browser revalidate them cheaply.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from corral.domain.errors import NotFound
from corral.domain.record import RequestRecord
from corral.net.response import Headers, Request, Response

CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Headers = [
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}


def load_files() -> dict[str, tuple[bytes, bytes, bytes]]:
    """name -> (body, content type, ETag) for every file of the console package folder."""
    files: dict[str, tuple[bytes, bytes, bytes]] = {}
    folder = resources.files("corral").joinpath("console")
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            etag = b'"' + hashlib.sha256(body).hexdigest()[:16].encode() + b'"'
            files[entry.name] = (body, _TYPES[suffix], etag)
    return files


class ConsoleAssets:
    def __init__(self) -> None:
        self.files = load_files()

    @property
    def weight(self) -> int:
        """Bytes of everything the page loads."""
        return sum(len(body) for body, _, _ in self.files.values())

    def _send(self, request: Request, response: Response, record: RequestRecord, name: str) -> None:
        found = self.files.get(name)
        if found is None:
            raise NotFound(f"no console file '{name}'")
        body, content_type, etag = found
        headers: Headers = [*SECURITY_HEADERS, (b"cache-control", b"no-cache"), (b"etag", etag)]
        if request.header(b"if-none-match") == etag:
            record.status = 304
            response.send(304, headers, b"")
            return
        record.status = 200
        response.send(200, [(b"content-type", content_type), *headers], body)

    async def page(self, request: Request, response: Response, record: RequestRecord) -> None:
        self._send(request, response, record, "index.html")

    async def file(self, request: Request, response: Response, record: RequestRecord) -> None:
        self._send(request, response, record, record.path[len("/ui/") :])
