"""The few calls `corral backup` makes to a running Corral: the fleet's inventory from /internal/status,
each model's Modelfile from /api/show, and pulls, all addressed to one node with X-Corral-Node."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import typer

from corral.config import Settings

Progress = Callable[[int, int, str], None]  # completed, total, status line


UrlOpt = Annotated[
    str | None,
    typer.Option(envvar="CORRAL_URL", help="Corral's base URL (default: from server.host and server.port).",
                 show_default=False),
]  # fmt: skip
KeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", "--key", envvar=["CORRAL_ADMIN_KEY", "CORRAL_API_KEY"],
                 help="An admin API key, when Corral requires keys.", show_default=False),
]  # fmt: skip


def corral_url(settings: Settings, url: str | None) -> str:
    """`url`, or where the configured listener is reached from this machine."""
    if url:
        return url
    host = settings.server.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if settings.server.tls.cert_file else "http"
    return f"{scheme}://{host}:{settings.server.port}"


class CorralUnreachable(Exception):
    """Corral did not answer, or refused the call; the message says which and how to fix it."""


class CorralClient:
    def __init__(self, url: str, api_key: str | None, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def _check(self, reply: httpx.Response, what: str) -> None:
        if reply.status_code == 401:
            raise CorralUnreachable(f"{what}: Corral at {self.url} wants an API key (--api-key or CORRAL_API_KEY)")
        if reply.status_code == 403:
            raise CorralUnreachable(f"{what}: the API key is not an admin key")
        if reply.status_code >= 400:
            raise CorralUnreachable(f"{what}: HTTP {reply.status_code}: {reply.text[:300]}")

    def status(self, wait_auth_s: float = 0.0) -> dict[str, Any]:
        """GET /internal/status. `wait_auth_s`: keep asking while the key is refused (a key just restored
        reaches a running Corral once its look-up cache, auth.cache_ttl_s, has expired)."""
        deadline = time.monotonic() + wait_auth_s
        while True:
            try:
                reply = self.http.get("/internal/status")
            except httpx.HTTPError as exc:
                raise CorralUnreachable(f"cannot reach Corral at {self.url}: {exc}") from None
            if reply.status_code == 401 and time.monotonic() < deadline:
                time.sleep(0.25)
                continue
            self._check(reply, "GET /internal/status")
            data: dict[str, Any] = reply.json()
            return data

    def inventory(self, status: dict[str, Any]) -> dict[str, dict[str, str | None]]:
        """node -> model -> digest, for the Ollama-type nodes Corral knows (an OpenAI-type node has no
        model store to back up or restore)."""
        out: dict[str, dict[str, str | None]] = {}
        for node in status.get("nodes", []):
            if node.get("type", "ollama") != "ollama":
                continue
            digests = node.get("digests") or {}
            out[node["name"]] = {m: digests.get(m) for m in node.get("models", [])}
        return out

    def show(self, node: str, model: str) -> dict[str, Any] | None:
        """The model's /api/show on `node`; on another node holding it when that one takes no requests
        (draining or down: the same name has the same Modelfile); None when no node can answer."""
        try:
            reply = self.http.post("/api/show", json={"model": model}, headers={"x-corral-node": node})
            if reply.status_code == 503:
                reply = self.http.post("/api/show", json={"model": model})
                if reply.status_code == 503:
                    return None
        except httpx.HTTPError as exc:
            raise CorralUnreachable(f"POST /api/show {model} on {node}: {exc}") from None
        self._check(reply, f"POST /api/show {model} on {node}")
        data: dict[str, Any] = reply.json()
        return data

    def pull(self, node: str, model: str, progress: Progress) -> str | None:
        """Pull `model` on `node`, reporting progress; None on success, else the node's error."""
        body = {"model": model, "stream": True}
        try:
            with self.http.stream(
                "POST", "/api/pull", json=body, headers={"x-corral-node": node}, timeout=httpx.Timeout(30, read=None)
            ) as reply:
                if reply.status_code >= 400:
                    reply.read()
                    return _error_text(reply)
                for line in reply.iter_lines():
                    if not line.strip():
                        continue
                    doc = json.loads(line)
                    if "error" in doc:
                        return str(doc["error"])
                    progress(int(doc.get("completed") or 0), int(doc.get("total") or 0), str(doc.get("status", "")))
                    if doc.get("status") == "success":
                        return None
        except (httpx.HTTPError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return "the pull ended without success"


def _error_text(reply: httpx.Response) -> str:
    try:
        return str(reply.json().get("error") or reply.text)
    except ValueError:
        return f"HTTP {reply.status_code}: {reply.text[:300]}"
