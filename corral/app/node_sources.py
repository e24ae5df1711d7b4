"""Node discovery: DNS names and watched files that turn into nodes (`discovery:` in the settings).

DNS: the A/AAAA records of a headless service (one node per address, on the configured port) or SRV
records (one node per target and port), re-resolved every `interval_s`, or as soon as the answer's TTL
runs out (never more often than `min_interval_s`). A failed resolution (timeout, SERVFAIL) keeps the
nodes as they are; a name that no longer exists, or has no records, drains them.

Files: a JSON or YAML list of nodes that any other system writes (a Consul template, a Kubernetes
ConfigMap). Checked every `interval_s`; an unreadable or invalid file keeps the nodes as they are.

Each source hands its whole set to `NodeSync.apply`, which health-checks newcomers before they take
traffic and drains the nodes that left.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver
import yaml
from pydantic import ValidationError

from corral.app.node_sync import NodeSync
from corral.config import BackendSettings, DiscoverySettings, DnsDiscovery, DnsService, NodeFile

log = logging.getLogger(__name__)


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _resolver(dns_settings: DnsDiscovery) -> dns.asyncresolver.Resolver:
    if dns_settings.nameserver is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns_settings.nameserver]
    resolver.port = dns_settings.port
    resolver.lifetime = dns_settings.timeout_s
    resolver.cache = None  # the TTL rule below is ours
    return resolver


class DnsSource:
    def __init__(self, dns_settings: DnsDiscovery, service: DnsService, sync: NodeSync) -> None:
        self.settings = dns_settings
        self.service = service
        self.sync = sync
        self.name = f"dns:{service.name}" + (f":{service.port}" if service.port else "")
        self.resolver = _resolver(dns_settings)

    async def _addresses(self, name: str, kinds: tuple[str, ...]) -> tuple[list[str], float]:
        """The addresses of `name` (sorted) and the smallest TTL seen (inf when there was no answer)."""
        found: list[str] = []
        ttl = float("inf")
        for kind in kinds:
            try:
                answer = await self.resolver.resolve(name, kind, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                continue
            if answer.rrset is not None:
                ttl = min(ttl, answer.rrset.ttl)
                found.extend(str(r.address) for r in answer.rrset)
        return sorted(set(found)), ttl

    async def resolve(self) -> tuple[list[BackendSettings], float]:
        """The nodes the records name now, and how long the answer may be trusted."""
        s = self.service
        nodes: list[BackendSettings] = []
        if s.record == "SRV":
            try:
                answer = await self.resolver.resolve(s.name, "SRV", raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                return [], float("inf")
            ttl = float(answer.rrset.ttl) if answer.rrset is not None else float("inf")
            targets = sorted({(str(r.target).rstrip("."), int(r.port)) for r in answer.rrset or []})
            for target, port in targets:
                addresses, address_ttl = await self._addresses(target, ("A", "AAAA"))
                ttl = min(ttl, address_ttl)
                if addresses:  # a target without an address is not a node yet
                    url = f"{s.scheme}://{_endpoint(addresses[0], port)}"
                    nodes.append(s.backend(f"dns:{_endpoint(target, port)}", url))
            return nodes, ttl
        kinds = ("A", "AAAA") if s.record == "A+AAAA" else (s.record,)
        addresses, ttl = await self._addresses(s.name, kinds)
        assert s.port is not None  # checked by the settings
        for address in addresses:
            endpoint = _endpoint(address, s.port)
            nodes.append(s.backend(f"dns:{endpoint}", f"{s.scheme}://{endpoint}"))
        return nodes, ttl

    async def run(self) -> None:
        while True:
            wait = self.settings.interval_s
            try:
                nodes, ttl = await self.resolve()
                wait = max(self.settings.min_interval_s, min(wait, ttl))
                await self.sync.apply(self.name, nodes)
            except (dns.exception.DNSException, OSError) as exc:
                # The resolver is unreachable or failing: the nodes stay as they were.
                log.warning("resolving %s failed (%s); nodes kept", self.service.name, exc)
                wait = max(self.settings.min_interval_s, min(wait, 5.0))
            except ValidationError as exc:
                log.error("nodes from %s are invalid: %s", self.service.name, exc)
            except Exception:  # the source must outlive any surprise: its nodes stay as they are
                log.exception("discovery from %s failed", self.service.name)
            await asyncio.sleep(wait)


def parse_node_file(text: str, source: NodeFile) -> list[BackendSettings]:
    """A list of nodes (or a mapping with `nodes`): URLs, or mappings with `url` and optional `name` and
    `backends[]` keys. Raises ValueError naming the entry that is wrong."""
    doc = yaml.safe_load(text) if text.strip() else []
    if isinstance(doc, dict) and "nodes" in doc:
        doc = doc["nodes"]
    if doc is None:
        doc = []
    if not isinstance(doc, list):
        raise ValueError("the file must hold a list of nodes (or a mapping with `nodes`)")
    nodes: list[BackendSettings] = []
    for index, entry in enumerate(doc):
        item: dict[str, Any] = {"url": entry} if isinstance(entry, str) else entry
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise ValueError(f"[{index}]: a node is a URL or a mapping with `url`")
        rest = {k: v for k, v in item.items() if k not in ("url", "name")}
        try:
            parts = BackendSettings(name="x", url=item["url"])
            name = item.get("name") or f"file:{_endpoint(parts.host, parts.port)}"
            nodes.append(source.backend(str(name), parts.url, **rest))
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"[{index}].{key}: {first['msg']}") from None
        except TypeError as exc:
            raise ValueError(f"[{index}]: {exc}") from None
    return nodes


class FileSource:
    def __init__(self, source: NodeFile, sync: NodeSync) -> None:
        self.source = source
        self.sync = sync
        self.name = f"file:{source.path}"
        self._seen: str | None = None  # hash of the content last applied

    async def poll(self) -> None:
        try:
            data = await asyncio.to_thread(self.source.path.read_bytes)
        except OSError as exc:
            if self._seen != "missing":
                log.warning("node file %s unreadable (%s); nodes kept", self.source.path, exc.strerror or exc)
            self._seen = "missing"
            return
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._seen:
            return
        self._seen = digest
        try:
            nodes = parse_node_file(data.decode("utf-8", errors="replace"), self.source)
        except (ValueError, yaml.YAMLError) as exc:
            log.error("node file %s is invalid (%s); nodes kept", self.source.path, exc)
            return
        await self.sync.apply(self.name, nodes)

    async def run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:
                log.exception("reading node file %s failed", self.source.path)
            await asyncio.sleep(self.source.interval_s)


class NodeSources:
    """The running discovery sources; restarted as a whole when the `discovery` settings change."""

    def __init__(self, sync: NodeSync) -> None:
        self.sync = sync
        self.settings: DiscoverySettings | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def configure(self, settings: DiscoverySettings) -> None:
        if settings == self.settings:
            return
        self.settings = settings
        sources: list[DnsSource | FileSource] = [DnsSource(settings.dns, s, self.sync) for s in settings.dns.services]
        sources += [FileSource(f, self.sync) for f in settings.files]
        self.stop()
        loop = asyncio.get_running_loop()
        for source in sources:
            self._tasks[source.name] = loop.create_task(source.run(), name=source.name)
        for gone in [s for s in self.sync.owned if s.split(":", 1)[0] in ("dns", "file") and s not in self._tasks]:
            await self.sync.drop_source(gone)

    def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
