"""Logging set-up: JSON lines when not on a terminal, readable lines when on one; and the access log."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

import orjson

from corral.app.context import Observer, RequestRecord

__all__ = ["ACCESS", "Observer", "access_observer", "configure", "json_handler", "tag_process"]

ACCESS = logging.getLogger("corral.access")
PROCESS_FIELDS: dict[str, object] = {}  # fields every line of this process carries (a worker's index and pid)


def tag_process(**fields: object) -> None:
    """Add `fields` to every log line this process writes (set once, at a worker's start)."""
    PROCESS_FIELDS.update(fields)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **PROCESS_FIELDS,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        try:  # orjson: the access lines' encoder too (app/access_log.py), so one stream has one style
            return orjson.dumps(out, default=str).decode()
        except TypeError:  # what orjson refuses (keys that are not strings, integers past 64 bits)
            return json.dumps(out, ensure_ascii=True, default=str)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        worker = f"[{PROCESS_FIELDS['worker']}] " if "worker" in PROCESS_FIELDS else ""
        line = f"{stamp} {record.levelname.lower():7} {worker}{record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "info", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def json_handler() -> logging.StreamHandler[TextIO] | None:
    """The handler `configure` installed, when it writes JSON lines and is the only one: then the access
    log may write its lines itself, batched (app/access_log.py), and they read the same."""
    handlers = logging.getLogger().handlers
    if ACCESS.handlers or not ACCESS.propagate or len(handlers) != 1:
        return None
    handler = handlers[0]
    if type(handler) is not logging.StreamHandler or not isinstance(handler.formatter, JsonFormatter):
        return None
    return handler


def access_fields(record: RequestRecord) -> dict[str, object]:
    """What an access line says about a request. Never the prompt, never a key (the record holds
    neither)."""
    ttft, queued, kind = record.ttft, record.queued_s, record.error_kind
    return {
        "request_id": record.request_id,
        "client_ip": record.client_ip,
        "method": record.method,
        "route": record.route,
        "status": record.status,
        "model": record.model,
        "node": record.node,
        "attempts": record.attempts,
        "cache": record.cache,
        "stream": record.stream,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
        "latency_ms": round(record.latency * 1000, 2),
        "queued_ms": round(queued * 1000, 2) if queued else None,
        "error_kind": kind.value if kind else None,
        "error": record.error,
    }


def access_observer(record: RequestRecord) -> None:
    """One line per request through `logging` (console lines, or handlers other than the standard one)."""
    ACCESS.info("%s %s %d", record.method, record.path, record.status, extra={"fields": access_fields(record)})
