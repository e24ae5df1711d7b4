"""What the response and embeddings caches share: the store, the caller's scope, the model's digest
from discovery's view, the client's Cache-Control, and the hit/miss counters (docs/cache.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from corral.adapters.cache_store import CacheStore
from corral.app.fleet import Fleet
from corral.domain.keys import model_allowed
from corral.domain.record import RequestRecord
from corral.net.response import Request

if TYPE_CHECKING:
    from corral.config import CacheSettings

CACHE_HEADER = b"x-corral-cache"
HIT = (CACHE_HEADER, b"hit")
MISS = (CACHE_HEADER, b"miss")
# Per request, never replayed from a cache: ours (set again for the request being answered).
PER_REQUEST = frozenset({b"x-request-id", b"x-corral-node", CACHE_HEADER})

Count = Callable[[str, str], None]  # (kind, result)


class CacheControl:
    """The client's say: `no-cache` asks for a fresh answer (the node's answer then replaces the entry),
    `no-store` also forbids keeping it."""

    __slots__ = ("read", "write")

    def __init__(self, request: Request) -> None:
        value = request.header(b"cache-control")
        self.read = self.write = True
        if value is not None:
            tokens = {t.strip().split(b"=", 1)[0] for t in value.lower().split(b",")}
            if b"no-cache" in tokens or b"no-store" in tokens:
                self.read = False
            if b"no-store" in tokens:
                self.write = False


class CacheContext:
    def __init__(self, store: CacheStore, settings: CacheSettings, fleet: Fleet, count: Count | None = None) -> None:
        self.store = store
        self.settings = settings
        self.fleet = fleet
        self.count: Count = count or (lambda kind, result: None)
        self.charge_hits = settings.charge_hits
        self.global_scope = settings.scope == "global"

    def scope(self, record: RequestRecord) -> str:
        """Whose entries a request may see: its own principal's (`scope: key`), or everyone's. Without
        API keys every caller is the same anonymous principal."""
        if self.global_scope:
            return "*"
        principal = record.principal
        return principal.bucket if principal is not None else "-"

    def digest(self, model: str) -> str | None:
        """The model's digest as the healthy nodes list it (`/api/tags`), when they agree. Unknown, or
        different weights under one name (a rollout in progress): no caching, as either could answer."""
        found: str | None = None
        for node in self.fleet:
            if not node.up:
                continue
            entry = node.tags.get(model)
            if entry is None:
                continue
            digest = entry.get("digest")
            if not isinstance(digest, str) or not digest:
                return None
            if found is not None and digest != found:
                return None
            found = digest
        return found

    @staticmethod
    def allowed(patterns: list[str] | None, model: str) -> bool:
        return patterns is None or model_allowed(patterns, model)
