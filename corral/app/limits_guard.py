"""Rate, token and concurrency limits in the pipeline: admit (or 429) before the handler, settle after.

Requests per minute: per key (`rpm` on the key), per client address (`limits.per_ip_rpm`) and global
(`limits.global_rpm`). Tokens per minute: per key (`tpm`) and global (`limits.global_tpm`), admitted on
an estimate and charged with the tokens the node reports. Concurrent requests: per key
(`max_concurrency`). In memory, or shared by every replica through Redis (`limits.redis_url`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from corral.adapters.limit_windows import Window
from corral.adapters.limits import Admission, Decision, LimitStore, Scope, TokenReservation
from corral.app.routes import RouteSpec
from corral.domain.errors import RateLimited
from corral.domain.keys import Principal
from corral.domain.record import RequestRecord
from corral.net.response import Request

log = logging.getLogger(__name__)
_WHAT = {
    "rate_limited": "request rate limit",
    "token_limited": "token rate limit",
    "concurrency_limited": "concurrent request limit",
}


_PREPARED_MAX = 4096
_UNSEEN = object()


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One combination of limits, planned once: the windows, whether tokens are reserved, the slot."""

    plan: tuple[Window, ...]
    tokens: bool
    slot: str | None
    limit: int
    requests: bool  # whether request-rate scopes are among them (then RateLimit-* headers are sent)


class LimitGuard:
    def __init__(
        self,
        store: LimitStore,
        per_ip_rpm: int | None,
        global_rpm: int | None,
        global_tpm: int | None,
        estimate_tokens: int,
        burst_share: float | None = None,
        on_reject: Callable[[str], None] | None = None,
        on_store_error: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.per_ip_rpm = per_ip_rpm
        self.global_rpm = global_rpm
        self.global_tpm = global_tpm
        self.estimate_tokens = estimate_tokens
        self.burst_share = burst_share
        self.on_reject = on_reject or (lambda reason: None)
        self.on_store_error = on_store_error or (lambda: None)
        # Per request: what to settle once the answer is known.
        self._open: dict[int, tuple[TokenReservation | None, str | None]] = {}
        self._prepared: dict[tuple[tuple[object, ...] | None, str | None, bool], _Prepared | None] = {}

    def _scope(self, key: str, per_minute: int) -> Scope:
        burst = math.ceil(per_minute * self.burst_share) if self.burst_share else None
        return Scope(key, per_minute, burst if burst and burst < per_minute else None)

    def _noted(self, decision: Decision) -> Decision:
        if decision.store_error is not None:
            log.warning(
                "limit store unavailable (%s); requests are %s",
                decision.store_error,
                "allowed" if decision.allowed else "refused",
            )
            self.on_store_error()
        return decision

    def _refuse(self, reason: str, what: str, decision: Decision, record: RequestRecord) -> RateLimited:
        self.on_reject(reason)
        record.limit_headers = decision.header_pairs()
        scope = f" ({decision.scope})" if decision.scope else ""
        if decision.store_error is not None:
            message = "rate limits are unavailable and the policy is to refuse requests"
        else:
            message = f"{what} exceeded{scope}; retry after {decision.retry_after_s or 1:.0f}s"
        return RateLimited(message, retry_after=decision.retry_after_s or 1.0)

    def _prepare(self, principal: Principal | None, client_ip: str, tokens: bool) -> _Prepared | None:
        scopes = []
        if principal is not None and principal.rpm:
            scopes.append(self._scope(principal.bucket, principal.rpm))
        if self.per_ip_rpm:
            scopes.append(self._scope(f"ip:{client_ip}", self.per_ip_rpm))
        if self.global_rpm:
            scopes.append(self._scope("global", self.global_rpm))
        token_scopes = []
        slot: str | None = None
        if tokens:
            if principal is not None and principal.tpm:
                token_scopes.append(Scope(f"tokens:{principal.bucket}", principal.tpm))
            if self.global_tpm:
                token_scopes.append(Scope("tokens:global", self.global_tpm))
            if principal is not None and principal.max_concurrency:
                slot = f"concurrency:{principal.bucket}"
        if not scopes and not token_scopes and slot is None:
            return None
        limit = principal.max_concurrency if principal is not None and principal.max_concurrency else 0
        plan = self.store.plan(scopes, token_scopes, self.estimate_tokens)
        return _Prepared(plan, bool(token_scopes), slot, limit, bool(scopes))

    def __call__(self, request: Request, record: RequestRecord, spec: RouteSpec) -> Awaitable[None] | None:
        """Admit the request on every limit, in one step: synchronously in memory (no coroutine on the
        path), one awaited script call on Redis."""
        if not spec.limited:
            return None
        principal = record.principal
        # The same few combinations come back request after request (a key, an address): plan each once.
        # The key holds every principal field a plan reads, so a key's changed limits make a new entry.
        who = (
            (principal.source, principal.name, principal.rpm, principal.tpm, principal.max_concurrency)
            if principal is not None
            else None
        )
        key = (who, record.client_ip if self.per_ip_rpm else None, spec.tokens)
        prepared = self._prepared.get(key, _UNSEEN)
        if prepared is _UNSEEN:
            if len(self._prepared) >= _PREPARED_MAX:  # bounded: every client address is an entry
                self._prepared.clear()
            prepared = self._prepared[key] = self._prepare(principal, record.client_ip, spec.tokens)
        if prepared is None:
            return None
        assert isinstance(prepared, _Prepared)
        if self.store.in_memory:
            self._admitted(
                self.store.admit_now(prepared.plan, prepared.tokens, prepared.slot, prepared.limit), record, prepared
            )
            return None
        return self._admit_remote(prepared, record)

    async def _admit_remote(self, prepared: _Prepared, record: RequestRecord) -> None:
        admission = await self.store.admit_plan(prepared.plan, prepared.tokens, prepared.slot, prepared.limit)
        self._admitted(admission, record, prepared)

    def _admitted(self, admission: Admission, record: RequestRecord, prepared: _Prepared) -> None:
        decision = self._noted(admission.decision)
        if admission.refused is not None:
            raise self._refuse(admission.refused, _WHAT[admission.refused], decision, record)
        if prepared.requests:
            record.limit_headers = decision.header_pairs()
        if admission.tokens is not None or admission.slot is not None:
            self._open[id(record)] = (admission.tokens, admission.slot)

    def settle(self, record: RequestRecord) -> None:
        """An observer: charge the tokens actually used and free the concurrency slot (synchronously in
        memory; on Redis carried by the next admission's script call: `LimitStore.settle_later`)."""
        opened = self._open.pop(id(record), None)
        if opened is None:
            return
        reservation, slot = opened
        used = 0
        if reservation is not None:
            prompt = record.prompt_tokens if record.prompt_tokens is not None else record.est_prompt_tokens
            used = prompt + (record.completion_tokens or 0)
            if record.tokens_counted or record.completion_tokens is None:
                # No count from the node (a /v1 stream without include_usage, an abandoned stream, a
                # failed request): what was relayed, and never less than the admission estimate.
                used = max(used, self.estimate_tokens)
        self.store.settle_later(reservation, used, slot)

    async def close(self) -> None:
        await self.store.close()
