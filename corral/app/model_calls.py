"""Model calls to one node, as Ollama takes them: pull, delete, warm (load), unload, and a 1-token check.

Used by the admin model routes, rolling updates and preloading. Warm and unload are Ollama's own forms
(server/routes.go, GenerateHandler: an empty prompt loads the model and answers at once; with
`keep_alive: 0` it unloads it), so they work on any Ollama version that has /api/generate.
"""

from __future__ import annotations

import orjson

from corral.adapters.node_api import call
from corral.app.discovery import Discovery
from corral.app.fleet import Node
from corral.domain.errors import UpstreamError
from corral.domain.keep_alive import json_keep_alive


class ModelCallFailed(Exception):
    """A node refused or failed a model call; the message says which node and why."""


def _error_text(body: bytes) -> str:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")[:300] or "(empty answer)"
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return body.decode("utf-8", "replace")[:300]


class ModelCalls:
    def __init__(self, discovery: Discovery, timeout_s: float, check_timeout_s: float) -> None:
        self.discovery = discovery
        self.timeout_s = timeout_s  # pulls: as long as a model management call may take
        self.check_timeout_s = check_timeout_s  # loads and checks

    async def _post(self, node: Node, method: str, path: str, doc: dict[str, object], timeout_s: float) -> bytes:
        try:
            status, body = await call(
                node.pool,
                method,
                node.settings.base_path + path,
                body=orjson.dumps(doc),
                timeout_s=timeout_s,
            )
        except UpstreamError as exc:
            raise ModelCallFailed(f"node {node.name}: {exc.message}") from exc
        if status >= 300:
            raise ModelCallFailed(f"node {node.name}: {method} {path} answered {status}: {_error_text(body)}")
        return body

    async def pull(self, node: Node, model: str) -> None:
        await self._post(node, "POST", "/api/pull", {"model": model, "stream": False}, self.timeout_s)
        await self.discovery.refresh(node)

    async def delete(self, node: Node, model: str) -> None:
        await self._post(node, "DELETE", "/api/delete", {"model": model}, self.check_timeout_s)
        await self.discovery.refresh(node)

    async def warm(self, node: Node, model: str, keep_alive: str | None) -> None:
        doc: dict[str, object] = {"model": model, "prompt": "", "stream": False}
        if keep_alive is not None:
            doc["keep_alive"] = json_keep_alive(keep_alive)
        await self._post(node, "POST", "/api/generate", doc, self.check_timeout_s)
        await self.discovery.refresh(node)

    async def unload(self, node: Node, model: str) -> None:
        doc = {"model": model, "prompt": "", "keep_alive": 0, "stream": False}
        await self._post(node, "POST", "/api/generate", doc, self.check_timeout_s)
        await self.discovery.refresh(node)

    async def check(self, node: Node, model: str) -> None:
        """A real request: generate one token; the node must answer 200 with a finished response."""
        doc = {"model": model, "prompt": "Say OK.", "stream": False, "options": {"num_predict": 1}}
        body = await self._post(node, "POST", "/api/generate", doc, self.check_timeout_s)
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ModelCallFailed(f"node {node.name}: the check answered invalid JSON") from exc
        if not isinstance(answer, dict) or answer.get("done") is not True:
            raise ModelCallFailed(f"node {node.name}: the check did not finish: {_error_text(body)}")
