"""The few calls `corral backup` makes to a running Corral, on the CLI's one client (admin_client.py):
the fleet's inventory from /internal/status, each model's Modelfile from /api/show, and pulls, all
addressed to one node with X-Corral-Node."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from corral.cli.admin_client import AdminClient, AdminError
from corral.config import Settings

Progress = Callable[[int, int, str], None]  # completed, total, status line

UrlOpt = Annotated[
    str | None,
    typer.Option(envvar="CORRAL_URL", help="Corral's base URL (default: from server.host and server.port).",
                 show_default=False),
]  # fmt: skip
CorralUnreachable = AdminError  # the name the backup commands catch
PULL_TIMEOUT_S = 3600.0  # between two progress lines of one pull; a layer can take long to verify


def corral_url(settings: Settings, url: str | None) -> str:
    """`url`, or where the configured listener is reached from this machine."""
    if url:
        return url
    host = settings.server.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if settings.server.tls.cert_file else "http"
    return f"{scheme}://{host}:{settings.server.port}"


class CorralClient(AdminClient):
    def close(self) -> None:
        """Nothing is held between calls (urllib opens one connection per call)."""

    def status(self, wait_auth_s: float = 0.0) -> dict[str, Any]:
        """GET /internal/status. `wait_auth_s`: keep asking while the key is refused (a key just restored
        reaches a running Corral once its look-up cache, auth.cache_ttl_s, has expired)."""
        deadline = time.monotonic() + wait_auth_s
        while True:
            try:
                data: dict[str, Any] = self.call("GET", "/internal/status")
                return data
            except AdminError as exc:
                if exc.status != 401 or time.monotonic() >= deadline:
                    raise
            time.sleep(0.25)

    def node_models(self, status: dict[str, Any]) -> dict[str, dict[str, str | None]]:
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
        for target in (node, None):
            try:
                data: dict[str, Any] = self.call("POST", "/api/show", {"model": model}, node=target)
                return data
            except AdminError as exc:
                if exc.status != 503:
                    raise AdminError(f"POST /api/show {model} on {node}: {exc}", exc.status) from None
        return None

    def pull(self, node: str, model: str, progress: Progress) -> str | None:
        """Pull `model` on `node`, reporting progress; None on success, else the node's error."""
        try:
            for doc in self.stream("POST", "/api/pull", {"model": model, "stream": True}, node, PULL_TIMEOUT_S):
                progress(int(doc.get("completed") or 0), int(doc.get("total") or 0), str(doc.get("status", "")))
                if doc.get("status") == "success":
                    return None
        except (AdminError, ValueError) as exc:
            return str(exc)
        return "the pull ended without success"
