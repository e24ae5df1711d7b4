"""Native chat/generate requests served by an OpenAI-type node: the request and the answer are
translated both ways (corral.protocol.translate holds the pure mappings)."""

from __future__ import annotations

import json
from typing import Any

from corral.app.headers import Outbound
from corral.domain.record import RequestRecord
from corral.net.response import Headers
from corral.protocol import translate, wire


class Translation:
    def __init__(self, route: str, doc: dict[str, Any], started_ns: int) -> None:
        self.kind = "chat" if route == "/api/chat" else "generate"
        self.model = str(doc.get("model", ""))
        self.started_ns = started_ns
        if self.kind == "chat":
            self.path = "/v1/chat/completions"
            self.payload = translate.chat_request_to_openai(doc)
        else:
            self.path, self.payload = translate.generate_request_to_openai(doc)
        self.stream = bool(self.payload.get("stream"))
        self._streamer: translate.SseToNdjson | None = None
        self._whole: dict[str, Any] | None = None

    def outbound(self, headers: Headers) -> Outbound:
        kept = [(k, v) for k, v in headers if k not in (b"content-type", b"accept", b"accept-encoding")]
        kept.append((b"content-type", b"application/json"))
        body = json.dumps(self.payload, ensure_ascii=True, separators=(",", ":")).encode()
        return Outbound("POST", self.path.encode(), kept, body)

    def error_body(self, status: int, body: bytes) -> bytes:
        return translate.openai_error_to_native(status, body)

    def whole(self, body: bytes, now_ns: int) -> bytes:
        try:
            doc = json.loads(body)
        except ValueError:
            return wire.ollama_error("the node sent an invalid JSON answer")
        self._whole = translate.openai_response_to_native(self.kind, doc, self.model, self.started_ns, now_ns)
        return wire.dumps(self._whole)

    def streamer(self) -> translate.SseToNdjson:
        self._streamer = translate.SseToNdjson(self.kind, self.model, self.started_ns)
        return self._streamer

    def count(self, record: RequestRecord, stream: translate.SseToNdjson | None = None) -> None:
        source: dict[str, Any] = {}
        if stream is not None:
            source = stream.final or {}
        elif self._whole is not None:
            source = self._whole
        if isinstance(source.get("prompt_eval_count"), int):
            record.prompt_tokens = source["prompt_eval_count"]
        if isinstance(source.get("eval_count"), int):
            record.completion_tokens = source["eval_count"]
