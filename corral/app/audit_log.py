"""The audit observer: one record per request, and per admin action, into the configured sink."""

from __future__ import annotations

import time

from corral.adapters.audit import AuditRecord, BufferedSink
from corral.domain.record import RequestRecord


class AuditLog:
    def __init__(self, sinks: list[BufferedSink], include_content: bool) -> None:
        self.sinks = sinks
        self.include_content = include_content

    def _submit(self, record: AuditRecord) -> None:
        for sink in self.sinks:
            sink.submit(record)

    async def close(self) -> None:
        """Write out everything buffered (after the last request has finished)."""
        for sink in self.sinks:
            await sink.close()

    def observe(self, record: RequestRecord) -> None:
        principal = record.principal
        digest = record.prompt_digest
        self._submit(
            AuditRecord(
                time=time.time(),
                request_id=record.request_id,
                key_name=principal.name if principal else None,
                key_prefix=principal.prefix if principal else None,
                client_ip=record.client_ip,
                method=record.method,
                route=record.route,
                model=record.model,
                node=record.node,
                status=record.status,
                prompt_sha256=digest[0] if digest else None,
                prompt_len=digest[1] if digest else None,
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                ttft_s=record.ttft,
                latency_s=record.latency,
                error=record.error_kind.value if record.error_kind else None,
                detail={"prompt": record.prompt_text} if self.include_content and record.prompt_text else None,
            )
        )

    def admin(self, action: str, detail: dict[str, object]) -> None:
        self._submit(AuditRecord(time=time.time(), kind="admin", action=action, detail=dict(detail)))
