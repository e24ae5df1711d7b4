"""How the CLI talks to a running Corral (`corral models`, `corral nodes`, `corral backup`): its URL and an
admin key (`--url`/`CORRAL_URL`, `--key`/`--api-key`/`CORRAL_ADMIN_KEY`), JSON calls and NDJSON streams
over urllib. The one client every command uses."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

UrlOpt = Annotated[str, typer.Option("--url", help="Corral's base URL.", envvar="CORRAL_URL")]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", "--api-key", envvar=["CORRAL_ADMIN_KEY", "CORRAL_API_KEY"],
                 help="An admin API key, when Corral requires keys.", show_default=False),
]  # fmt: skip
DEFAULT_URL = "http://127.0.0.1:8080"


class AdminError(Exception):
    """Corral or a node refused a call; the message is the answer's error text."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _error_text(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:300]
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict):  # the OpenAI shape
        error = error.get("message")
    return str(error) if error else raw.decode("utf-8", "replace")[:300]


def _refusal(method: str, path: str, status: int, raw: bytes) -> str:
    if status == 401:
        return f"{method} {path}: Corral wants an API key (--key or CORRAL_ADMIN_KEY)"
    if status == 403:
        return f"{method} {path}: the API key is not an admin key ({_error_text(raw)})"
    return _error_text(raw)


class AdminClient:
    def __init__(self, url: str, key: str | None, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout_s = timeout_s
        parts = urlsplit(self.url)
        # Corral refuses non-local Host headers on loopback; urllib sends the URL's host, which is right.
        self.host = parts.netloc

    def _request(self, method: str, path: str, doc: object | None, node: str | None, timeout_s: float | None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if doc is not None:
            data = json.dumps(doc).encode()
            headers["Content-Type"] = "application/json"
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        if node:
            headers["X-Corral-Node"] = node
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise AdminError(_refusal(method, path, exc.code, exc.read()), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise AdminError(f"cannot reach Corral at {self.url}: {getattr(exc, 'reason', exc)}") from None

    def call(
        self, method: str, path: str, doc: object | None = None, node: str | None = None, timeout_s: float | None = None
    ) -> Any:
        """One JSON exchange; the parsed answer (None for an empty body)."""
        with self._request(method, path, doc, node, timeout_s) as reply:
            raw = reply.read()
        return json.loads(raw) if raw.strip() else None

    def stream(
        self, method: str, path: str, doc: object, node: str | None = None, timeout_s: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """The objects of an NDJSON stream (Ollama's progress lines) as they arrive. An `{"error"}` line
        raises AdminError."""
        with self._request(method, path, doc, node, timeout_s) as reply:
            for line in reply:
                if not line.strip():
                    continue
                obj = json.loads(line)
                if isinstance(obj, dict) and obj.get("error"):
                    raise AdminError(str(obj["error"]))
                if isinstance(obj, dict):
                    yield obj

    def inventory(self) -> dict[str, Any]:
        data: dict[str, Any] = self.call("GET", "/admin/models")
        return data

    def backend(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self.call("GET", f"/admin/backends/{name}")
        return data
