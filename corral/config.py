"""Corral's settings: one frozen tree, YAML as the base and `CORRAL_<SECTION>__<KEY>` on top.

Every field has a description; docs/configuration.md is generated from this module
(`python -m corral.cli.main config docs`). A bad file is refused before start with `ConfigError`,
which names each offending key and the reason.
"""

from __future__ import annotations

import ipaddress
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from corral.domain import num_ctx as ctx_policy
from corral.domain.catalog import Catalog
from corral.domain.cors import OLLAMA_DEFAULTS
from corral.domain.groups import label_error
from corral.domain.keep_alive import FOREVER, json_keep_alive, keep_alive_ns, valid_keep_alive


class ConfigError(Exception):
    """The configuration cannot be used. `problems` holds (key, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {key}: {reason}" for key, reason in problems)
        super().__init__(f"invalid configuration{where}:\n{lines}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Section):
    cert_file: Path | None = Field(None, description="PEM certificate for Corral's own listener.")
    key_file: Path | None = Field(None, description="PEM private key for the certificate.")

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        for path in (self.cert_file, self.key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"file {path} does not exist")
        return self


class CorsSettings(_Section):
    allow_origins: list[str] = Field(
        default_factory=lambda: list(OLLAMA_DEFAULTS),
        description="Browser origins allowed to call Corral: an origin without a port matches any port; "
        "'*' is a wildcard (app://*); a lone '*' allows all. The default is Ollama's own list.",
    )


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on (0 picks a free one).")
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest JSON request body accepted (413 beyond; decided from Content-Length before "
        "reading, a chunked body is cut at the limit). Blob uploads (/api/blobs) are streamed to the node "
        "and not capped.",
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request head accepted (request line and headers; 431 beyond)."
    )
    max_header_count: int = Field(100, ge=8, description="Most header lines in a request head (431 beyond).")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="The whole request head must arrive within this, counted from the connection's start or "
        "the head's first byte (408 and the connection closed beyond; closed silently if nothing came).",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Longest wait for the next piece of a request body once it is read (408 beyond)."
    )
    keepalive_timeout_s: float = Field(75.0, gt=0, description="Idle client connections are closed after this.")
    max_connections: int = Field(
        4096,
        ge=1,
        description="Most open client connections. At the cap the oldest idle connection is closed to make room; "
        "if none is idle the new connection is closed at once.",
    )
    max_connections_per_client: int = Field(
        256,
        ge=1,
        description="Most open connections from one client address (the peer's, not X-Forwarded-For: raise it "
        "when a load balancer connects for many clients). At the cap as for max_connections.",
    )
    shutdown_grace_s: float = Field(30.0, ge=0, description="On SIGTERM, how long in-flight requests may finish.")
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Worker processes accepting on the port (Linux, SO_REUSEPORT), supervised by a parent that "
        "restarts a dead one, drains all on SIGTERM and hands SIGHUP on as a reload. About one per core; "
        "`corral serve --workers N` wins over this (docs/deploy.md).",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="CIDRs whose X-Forwarded-For is believed for the client IP."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="On a loopback address, Host names answered besides local ones (as Ollama, against DNS "
        "rebinding: localhost, local and private IPs, this machine's name, *.localhost, *.local, *.internal): exact "
        "names, '*.example.com' for subdomains, or '*' for any.",
    )
    expose_node_header: bool = Field(True, description="Add X-Corral-Node (the node that served) to responses.")
    tls: TlsSettings = Field(default_factory=TlsSettings, description="Optional TLS on Corral's listener.")
    cors: CorsSettings = Field(default_factory=CorsSettings, description="CORS policy for browser clients.")

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not a CIDR") from exc
        return value


class HealthSettings(_Section):
    interval_s: float = Field(5.0, gt=0, description="Seconds between active health checks of a node.")
    timeout_s: float = Field(2.0, gt=0, description="A health check slower than this fails.")
    rise: int = Field(2, ge=1, description="Consecutive successful checks to mark a down node up.")
    fall: int = Field(2, ge=1, description="Consecutive failed checks to mark an up node down.")


def _checked_labels(value: dict[str, str] | None) -> dict[str, str]:
    for key, label in (value or {}).items():
        problem = label_error(key, label)
        if problem is not None:
            raise ValueError(problem)
    return value or {}


class BackendSettings(_Section):
    name: str = Field(
        ...,
        min_length=1,
        max_length=255,  # discovered nodes are named after DNS names (up to 253 characters)
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\[\]-]*$",
        description="Unique node name (used in metrics, logs and X-Corral-Node). Discovered nodes are named "
        "`dns:HOST:PORT` or `file:HOST:PORT`.",
    )
    url: str = Field(..., description="Base URL of the node, e.g. http://10.0.0.5:11434.")
    type: Literal["ollama", "openai"] = Field("ollama", description="API the node speaks.")
    priority: int = Field(0, description="Higher is preferred by the `priority` strategy.")
    weight: float = Field(1.0, gt=0, description="Relative share of traffic for weighted strategies.")
    max_concurrency: int | None = Field(None, ge=1, description="Most requests Corral sends it at once.")
    parallel: int = Field(1, ge=1, description="Slots per loaded model on the node (OLLAMA_NUM_PARALLEL).")
    max_loaded: int = Field(3, ge=1, description="Models the node keeps loaded (OLLAMA_MAX_LOADED_MODELS).")
    vram_gb: float | None = Field(
        None,
        gt=0,
        description="GPU memory (GiB) the node gives models. Lets model-aware predict which models a load "
        "evicts by memory as well as by count.",
    )
    models: list[str] | None = Field(None, description="If set, the only models this node may serve.")
    preload: list[str] = Field(
        default_factory=list,
        description="Models warmed on this node whenever it comes up (at start and after a restart), "
        "with models.preload_keep_alive.",
    )
    health: HealthSettings | None = Field(None, description="Per-node health-check override.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Node-group labels (`pool: embeddings`, `team: search`) that model and key selectors match.",
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _checked_labels(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError(f"{value!r} has no host")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"{value!r} has an invalid port") from exc
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r} must not carry a query or fragment")
        return value.rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "https"

    @property
    def base_path(self) -> str:
        return _base_path(self.url)


class RoutingSettings(_Section):
    strategy: Literal["model-aware", "round-robin", "least-connections", "priority", "power-of-two"] = Field(
        "model-aware", description="How a node is chosen for a request."
    )
    retries: int = Field(2, ge=0, le=10, description="Other nodes tried when one fails before any byte is sent.")
    retry_backoff_s: float = Field(0.05, ge=0, description="Pause before a retry, doubled on each further one.")
    affinity_header: str = Field("x-session-id", description="Requests with the same value go to the same node.")
    discovery_interval_s: float = Field(5.0, gt=0, description="Seconds between reads of /api/tags and /api/ps.")
    prefix_affinity: bool = Field(
        True,
        description="model-aware: send a request whose conversation prefix (system prompt, earlier turns) "
        "a node served last back to that node, for its prompt cache, unless another can start it sooner by "
        "more than a small share of the prompt evaluation saved (docs/routing.md).",
    )
    prefix_index_size: int = Field(
        65_536, ge=1, le=16_777_216, description="Prefix hashes remembered for prefix_affinity (LRU; no prompt text)."
    )
    prompt_eval_rate: float = Field(
        2000.0,
        gt=0,
        description="Prompt tokens per second a node evaluates: what a prompt-cache hit is worth to prefix_affinity.",
    )


class TimeoutSettings(_Section):
    connect_s: float = Field(3.0, gt=0, description="Connecting to a node.")
    first_byte_s: float = Field(
        300.0, gt=0, description="Streamed requests: from sending the request to the node's response head."
    )
    answer_s: float = Field(
        900.0,
        gt=0,
        description="Non-streamed requests: from sending the request to the whole answer (a node sends "
        "nothing until it has generated all of it). Model management (pull, push, create) waits up to total_s.",
    )
    idle_s: float = Field(120.0, gt=0, description="Longest silence between two chunks of a streamed response.")
    total_s: float = Field(3600.0, gt=0, description="Whole exchange with a node, stream included.")


class QueueSettings(_Section):
    max_len: int = Field(1024, ge=0, description="Requests that may wait for a free node slot (503 beyond).")
    max_wait_s: float = Field(60.0, gt=0, description="Longest wait in the queue (503 with Retry-After beyond).")
    shed_after_s: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Refuse a request at once (503 with Retry-After) when model-aware routing estimates it would "
        "wait longer than this for a node to start it (queued work on the model's copies, or a model load); a free "
        "slot is never refused. Needs routing.strategy: model-aware. Unset: requests wait in the nodes' queues.",
    )


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Diagnostic log level.")
    format: Literal["auto", "json", "console"] = Field("auto", description="auto: console on a terminal, else JSON.")
    access: bool = Field(True, description="Write one access line per request to the corral.access logger.")


class MetricsSettings(_Section):
    enabled: bool = Field(True, description="Serve Prometheus metrics at GET /metrics.")
    listen: str | None = Field(
        None,
        pattern=r"^[^:\s]+:\d{1,5}$",
        description="Also serve GET /metrics on this separate host:port (no key needed).",
    )
    per_key: bool = Field(False, description="Label request metrics with the API key's name.")


class ConsoleSettings(_Section):
    enabled: bool = Field(True, description="Serve the web console at /ui (docs/console.md).")
    listen: Literal["main", "metrics"] = Field(
        "main",
        description="Where the console is served: on the main listener, or on the metrics listener "
        "(metrics.listen, e.g. an internal interface) together with the admin API it calls.",
    )


class TracingSettings(_Section):
    enabled: bool = Field(False, description="Export OpenTelemetry traces (OTLP over HTTP).")
    endpoint: str = Field("http://127.0.0.1:4318/v1/traces", description="The OTLP/HTTP traces endpoint.")
    service_name: str = Field("corral", description="service.name of the exported spans.")
    sample_ratio: float = Field(1.0, ge=0, le=1, description="Share of new traces sampled (a client's choice wins).")
    export_delay_ms: int = Field(1000, ge=10, description="How often batched spans are sent.")


class JwtSettings(_Section):
    secret: str | None = Field(None, description="HS256 shared secret (or use jwks_url).")
    jwks_url: str | None = Field(None, description="JWKS URL of the identity provider (RS256/ES256).")
    issuer: str | None = Field(None, description="Required `iss`, if set.")
    audience: str | None = Field(None, description="Required `aud`, if set.")
    role_claim: str = Field("role", description="Claim holding the role ('admin' for admin; dotted paths work).")
    models_claim: str = Field("models", description="Claim holding the allowed models (list or space-separated).")
    nodes_claim: str = Field(
        "nodes", description="Claim holding a node-group selector (an object, or `team=search,pool=gpu`)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> JwtSettings:
        if (self.secret is None) == (self.jwks_url is None):
            raise ValueError("set exactly one of secret and jwks_url")
        return self


class AuthSettings(_Section):
    enabled: bool | None = Field(
        None,
        description="Require API keys. Unset: off when Corral listens on a loopback address (as Ollama does), "
        "and refused at start on any other address until set explicitly.",
    )
    store_url: str = Field("sqlite:///corral-keys.db", description="Key database: sqlite:///PATH or postgresql://...")
    cache_ttl_s: float = Field(2.0, gt=0, le=60, description="How long a looked-up key is trusted (revocation delay).")
    fleet_poll_s: float = Field(
        1.0,
        gt=0,
        le=5,
        description="With API keys on, run-time fleet changes (/admin/backends) are kept in store_url's "
        "database and every replica and worker polls it this often (a change reaches all within it plus a "
        "moment); without keys they live in the process's memory.",
    )
    metrics: Literal["open", "key"] = Field("open", description="Whether GET /metrics needs a key.")
    jwt: JwtSettings | None = Field(None, description="Also accept JSON Web Tokens as Bearer credentials.")


class LimitsSettings(_Section):
    redis_url: str | None = Field(
        None,
        description="Share limits across replicas through this Redis "
        "(redis://host:port/db); unset: in memory, per replica.",
    )
    on_store_error: Literal["allow", "deny"] = Field("allow", description="When Redis is unreachable.")
    store_timeout_s: float = Field(
        0.5,
        gt=0,
        le=30,
        description="How long a limit check waits for Redis (a script call, connecting, writing and "
        "reading all counted; admissions queued behind a call that times out get its answer) before "
        "on_store_error decides.",
    )
    per_ip_rpm: int | None = Field(None, ge=1, description="Requests per minute per client address.")
    burst_share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Cap any slice of the minute at this share of a requests-per-minute limit "
        "(0.25: at most a quarter of it in any 15 s); unset: the whole minute's allowance at once.",
    )
    global_rpm: int | None = Field(None, ge=1, description="Requests per minute for the whole gateway.")
    global_tpm: int | None = Field(None, ge=1, description="Tokens per minute for the whole gateway.")
    estimate_tokens: int = Field(
        512,
        ge=0,
        description="Tokens a request is assumed to use when admitted (charged with the real count afterwards).",
    )


class ValidationSettings(_Section):
    max_predict: int | None = Field(None, ge=1, description="Cap on num_predict / max_tokens (unset: none).")
    max_ctx: int | None = Field(None, ge=1, description="Cap on options.num_ctx (unset: none).")
    models: list[str] | None = Field(None, description="Gateway-wide model allow-list (globs); unset: all.")
    deny_patterns: list[str] = Field(
        default_factory=list, description="Regular expressions refused in prompts (off by default)."
    )

    @field_validator("deny_patterns")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
        return value


class AuditSettings(_Section):
    enabled: bool = Field(True, description="Write one JSON line per request (and per admin action).")
    path: Path = Field(Path("corral-audit.log"), description="The audit file (rotated).")
    max_bytes: int = Field(100 * 2**20, ge=1024, description="Rotate the audit file at this size.")
    backups: int = Field(10, ge=0, description="Rotated audit files kept.")
    include_content: bool = Field(
        False, description="Also record prompt text (off: only its keyed fingerprint and length)."
    )
    fingerprint_key: str | None = Field(
        None,
        description="Secret key of the HMAC-SHA256 that fingerprints prompts in audit records (prompt_sha256). "
        "Unset: a random key per process, so a fingerprint can be matched within one run but never looked up in a "
        "table of known prompts; set the same key (e.g. CORRAL_AUDIT__FINGERPRINT_KEY) on every replica to compare "
        "fingerprints across replicas and restarts.",
    )
    database: bool = Field(False, description="Also write records to the audit_log table of auth.store_url.")


class ModelPolicy(_Section):
    """Settings for one model, under `models.<name>` (the name as clients and nodes spell it)."""

    nodes: dict[str, str] | None = Field(
        None, description="Label selector: only nodes whose `labels` match all of these serve the model."
    )
    fallbacks: list[str] = Field(
        default_factory=list, description="Models tried in order when no node can serve this one."
    )
    fallback_after_s: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Also fall back when the estimated wait for this model exceeds this.",
    )
    num_ctx: str | None = Field(
        None,
        description="Rewrite options.num_ctx so that one runner serves every request of the model (changes "
        "what clients asked for; docs/routing.md): `normalize` (drop it: the node's default context, which /v1 "
        "requests get too), `normalize N` (always N) or `cap N` (at most N).",
    )
    names: list[str] = Field(
        default_factory=list,
        description="Other names nodes know this model by (an OpenAI-type node's "
        "`meta-llama/Llama-3.2-3B-Instruct`): they pool under this one catalog name.",
    )

    @field_validator("nodes")
    @classmethod
    def _selector(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else _checked_labels(value)

    @field_validator("num_ctx")
    @classmethod
    def _num_ctx(cls, value: str | None) -> str | None:
        return None if value is None else str(ctx_policy.parse(value))

    @property
    def num_ctx_policy(self) -> ctx_policy.NumCtxPolicy | None:
        return None if self.num_ctx is None else ctx_policy.parse(self.num_ctx)


class ModelsSettings(_Section):
    """Fleet-wide model management; any other key is a model name holding its `ModelPolicy`."""

    default_targets: Literal["all", "placement", "reject"] = Field(
        "all",
        description="Where model-changing calls without X-Corral-Node act: every healthy node, "
        "the nodes the placement file names, or refuse (400).",
    )
    placement_file: Path | None = Field(None, description="The placement file (models.yaml) for `placement`.")
    fanout_idle_s: float = Field(
        900.0,
        gt=0,
        description="Fleet-wide pull, create or blob upload: the longest a node may stay silent before it "
        "counts as failed (verifying a large layer is silent). There is no limit on the whole operation.",
    )
    aliases: dict[str, str] = Field(default_factory=dict, description="Names clients use mapped to fleet models.")
    preload_keep_alive: str | None = Field(
        None,
        description="keep_alive for backends[].preload warms (e.g. 24h, -1); unset: the node's default. "
        "Models of the placement file with a keep_alive are warmed with theirs.",
    )
    per_model: dict[str, ModelPolicy] = Field(
        default_factory=dict, description="Per-model policies; written as `models.<name>: {...}` in YAML."
    )

    @field_validator("preload_keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, value: Any) -> Any:
        if value is None:
            return None
        checked = valid_keep_alive(value)
        if checked is None:
            raise ValueError(f"{value!r} is not a duration such as 24h or -1 (Ollama's keep_alive)")
        return checked

    @model_validator(mode="before")
    @classmethod
    def _model_keys(cls, data: Any) -> Any:
        # `models: {llama3.2: {num_ctx: normalize}}`: keys that are not settings name models.
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields)
        out = {k: v for k, v in data.items() if k in known}
        per_model = dict(out.get("per_model") or {})
        per_model.update({k: v for k, v in data.items() if k not in known})
        if per_model:
            out["per_model"] = per_model
        return out

    @model_validator(mode="after")
    def _one_catalog(self) -> ModelsSettings:
        try:
            self.catalog()
        except ValueError as exc:
            raise ValueError(f"models.aliases: {exc}") from None
        for model, policy in self.per_model.items():
            if model in policy.fallbacks:
                raise ValueError(f"models.{model}.fallbacks: a model cannot fall back to itself")
        return self

    def policy(self, model: str) -> ModelPolicy | None:
        return self.per_model.get(model)

    def catalog(self) -> Catalog:
        """Aliases and catalog entries as one lookup (corral.domain.catalog)."""
        return Catalog.build(self.aliases, {k: p.names for k, p in self.per_model.items() if p.names})


class DiscoveredNode(_Section):
    """What every node a discovery source finds gets (the source's defaults)."""

    type: Literal["ollama", "openai"] = Field("ollama", description="API the discovered nodes speak.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels given to the discovered nodes.")
    priority: int = Field(0, description="Priority of the discovered nodes.")
    weight: float = Field(1.0, gt=0, description="Weight of the discovered nodes.")
    max_concurrency: int | None = Field(None, ge=1, description="Most requests Corral sends each one at once.")
    parallel: int = Field(1, ge=1, description="Slots per loaded model (OLLAMA_NUM_PARALLEL).")
    max_loaded: int = Field(3, ge=1, description="Models each keeps loaded (OLLAMA_MAX_LOADED_MODELS).")
    vram_gb: float | None = Field(None, gt=0, description="GPU memory (GiB) each gives models.")
    models: list[str] | None = Field(None, description="If set, the only models they may serve.")

    def backend(self, name: str, url: str, **overrides: Any) -> BackendSettings:
        """A node's settings: these defaults, then what the source knows of this node."""
        keys = set(DiscoveredNode.model_fields) & set(BackendSettings.model_fields)  # labels: with node groups
        fields = {key: getattr(self, key) for key in keys}
        fields.update(overrides)
        return BackendSettings(name=name, url=url, **fields)


class DnsService(DiscoveredNode):
    name: str = Field(..., min_length=1, description="The DNS name: a headless service (A/AAAA) or an SRV name.")
    record: Literal["A", "AAAA", "A+AAAA", "SRV"] = Field(
        "A", description="Records to read: addresses (with `port`) or SRV (targets and ports from the records)."
    )
    port: int | None = Field(None, ge=1, le=65535, description="The nodes' port (A/AAAA; SRV records carry theirs).")
    scheme: Literal["http", "https"] = Field("http", description="How Corral talks to the discovered nodes.")

    @model_validator(mode="after")
    def _port(self) -> DnsService:
        if self.record != "SRV" and self.port is None:
            raise ValueError(f"a port is needed: {self.record} records of {self.name!r} carry none")
        return self


class DnsDiscovery(_Section):
    nameserver: str | None = Field(
        None, description="The resolver to ask (an IP address); unset: the system's (/etc/resolv.conf)."
    )
    port: int = Field(53, ge=1, le=65535, description="The resolver's port.")
    interval_s: float = Field(
        30.0, gt=0, description="Seconds between resolutions; sooner when the answer's TTL runs out first."
    )
    min_interval_s: float = Field(1.0, gt=0, description="Never resolve more often than this (TTL 0 answers).")
    timeout_s: float = Field(2.0, gt=0, description="A resolution slower than this fails (the nodes are kept).")
    services: list[DnsService] = Field(default_factory=list, description="The names to resolve into nodes.")

    @field_validator("nameserver")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an IP address") from exc
        return value


class NodeFile(DiscoveredNode):
    path: Path = Field(
        ...,
        description="A JSON or YAML list of nodes: URLs, or mappings with `url` (and `name`, "
        "or any `backends[]` key overriding these defaults).",
    )
    interval_s: float = Field(1.0, gt=0, description="Seconds between checks of the file for changes.")


class DiscoverySettings(_Section):
    """Nodes found at run time, besides the static `backends` list (docs/routing.md, Node discovery)."""

    dns: DnsDiscovery = Field(default_factory=DnsDiscovery, description="Nodes from DNS records.")
    files: list[NodeFile] = Field(default_factory=list, description="Nodes from watched files.")


RESPONSE_CACHE_ROUTES = (
    "/api/generate",
    "/api/chat",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
)


DeterministicRule = Literal["temperature_zero", "seed"]
DETERMINISTIC_RULES: tuple[DeterministicRule, ...] = ("temperature_zero", "seed")


class CacheResponsesSettings(_Section):
    """The response cache: whole answers of deterministic requests (docs/cache.md)."""

    enabled: bool = Field(False, description="Cache answers of deterministic generate/chat requests.")
    routes: list[str] = Field(
        default_factory=lambda: ["/api/generate", "/api/chat", "/v1/chat/completions", "/v1/completions"],
        description="Routes whose answers may be cached (any of " + ", ".join(RESPONSE_CACHE_ROUTES) + ").",
    )
    models: list[str] | None = Field(None, description="Models (globs) whose answers may be cached; unset: all.")
    deterministic: list[DeterministicRule] = Field(
        default_factory=lambda: list(DETERMINISTIC_RULES),
        description="What makes a request deterministic: `temperature_zero` (temperature 0) and/or `seed` "
        "(a fixed seed, not -1); a request is cached when it meets any of them.",
    )

    @field_validator("routes")
    @classmethod
    def _known_routes(cls, value: list[str]) -> list[str]:
        for index, path in enumerate(value):
            if path not in RESPONSE_CACHE_ROUTES:
                raise ValueError(
                    f"entry {index}, {path!r}, cannot be cached; known: {', '.join(RESPONSE_CACHE_ROUTES)}"
                )
        return value


class CacheEmbeddingsSettings(_Section):
    """The embeddings cache: one vector per input string (docs/cache.md)."""

    enabled: bool = Field(
        False, description="Cache embeddings per input on /api/embed, /api/embeddings and /v1/embeddings."
    )
    models: list[str] | None = Field(None, description="Models (globs) whose embeddings may be cached; unset: all.")


class CacheSettings(_Section):
    """Response and embeddings caches (docs/cache.md). Both are off unless enabled."""

    backend: Literal["memory", "redis"] = Field(
        "memory", description="`memory`: per replica, LRU within max_bytes; `redis`: shared by replicas."
    )
    redis_url: str | None = Field(None, description="Redis for `backend: redis` (redis://host:port/db).")
    ttl_s: float = Field(3600.0, gt=0, description="How long an entry is kept.")
    max_bytes: int = Field(
        256 * 2**20,
        ge=1024,
        description="Memory backend: the most bytes all entries take (least recently used go first). "
        "With Redis, cap the server instead (maxmemory, allkeys-lru).",
    )
    max_entry_bytes: int = Field(
        4 * 2**20, ge=64, description="Answers larger than this are not stored (the client still gets them)."
    )
    scope: Literal["key", "global"] = Field(
        "key",
        description="`key`: an entry serves only the API key (or JWT subject) that filled it, so no key learns "
        "what another asked; `global`: one cache for all callers.",
    )
    charge_hits: bool = Field(
        True,
        description="Charge a hit's tokens to token limits as if a node had answered; false: hits cost no "
        "tokens (request-rate limits apply either way).",
    )
    responses: CacheResponsesSettings = Field(default_factory=CacheResponsesSettings, description="The response cache.")
    embeddings: CacheEmbeddingsSettings = Field(
        default_factory=CacheEmbeddingsSettings, description="The embeddings cache."
    )

    @model_validator(mode="after")
    def _combinations(self) -> CacheSettings:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("cache.redis_url: `backend: redis` needs a Redis URL")
        if self.backend == "memory" and self.redis_url:
            raise ValueError("cache.redis_url: only used with `backend: redis` (set cache.backend: redis)")
        if self.backend == "redis" and "max_bytes" in self.model_fields_set:
            raise ValueError("cache.max_bytes: applies to the memory backend; cap Redis with its maxmemory")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("cache.redis_url: must start with redis://, rediss:// or unix://")
        if self.backend == "memory" and self.max_entry_bytes > self.max_bytes:
            raise ValueError("cache.max_entry_bytes: larger than cache.max_bytes, so such an entry could never be kept")
        if self.responses.enabled and not self.responses.deterministic:
            raise ValueError("cache.responses.deterministic: empty, so no request could be cached")
        if self.responses.enabled and not self.responses.routes:
            raise ValueError("cache.responses.routes: empty, so no request could be cached")
        return self

    @property
    def enabled(self) -> bool:
        return self.responses.enabled or self.embeddings.enabled


# Keep-warm is off unless turned on: on the generated draws keep-alive expiry causes under 1% of loads,
# and the rule moved the median by 2-3% with a few draws' tails 5-10% worse (docs/benchmarks.md §2).
KEEP_WARM_DEFAULT = False


class ResidencySettings(_Section):
    enabled: bool = Field(
        False,
        description="Load a replica of a model that turns hot before requests queue for it, and pin hot models "
        "with keep_alive (docs/routing.md, Residency). Needs the model-aware strategy's estimates.",
    )
    interval_s: float = Field(1.0, gt=0, description="Seconds between residency decisions.")
    hot: float = Field(
        1.0,
        gt=0,
        description="A model is queued (hot) when routing's estimated wait on its best loaded copy is at least this "
        "many of its load times; its replicas are pinned.",
    )
    cool: float = Field(
        0.3,
        gt=0,
        description="A hot model cools when its best estimated wait is below this many load times and its requests "
        "fit its slots (it is unpinned after cool_s).",
    )
    hold_s: float = Field(
        1.0, ge=0, description="Seconds a model stays queued before a replica is preloaded (a passing queue: routing)."
    )
    window_s: float = Field(10.0, gt=0, description="Arrival rates are averaged over about this long.")
    cool_s: float = Field(60.0, ge=0, description="Seconds a model stays cool before it is unpinned.")
    trend_window_s: float = Field(
        300.0, gt=0, description="A model's usual arrival rate is averaged over about this long."
    )
    rise: float = Field(
        5.0,
        gt=0,
        description="A replica is preloaded only while a queued model's recent rate (over window_s) is at least this "
        "many times its usual rate (over trend_window_s): a turn, not the steady traffic routing already places.",
    )
    fill: float = Field(
        0.75,
        gt=0,
        le=1,
        description="How many replicas a queued model needs: the slots its requests keep busy (in flight, or its "
        "recent rate times a request's slot time) over this share of a copy's slots; that many are preloaded at once.",
    )
    surge: float = Field(
        4.0,
        gt=0,
        description="Without a rise, a queued model gets replicas only while it keeps at least this many times its "
        "copies' slots busy (closed-loop clients queue rather than arrive faster) and the fleet is calm.",
    )
    calm: float = Field(
        0.15,
        ge=0,
        le=1,
        description="The fleet is calm (for a surge's replicas) while the other models keep at most this share of its "
        "slots (one set per node) busy and its runners are not coming and going.",
    )
    keep_alive: str = Field(
        "5m",
        description="The keep_alive an unpinned replica goes back to, and the one keep-warm refreshes a runner with "
        "(Ollama's default; finite).",
    )
    keep_warm: bool = Field(
        KEEP_WARM_DEFAULT,
        description="Keep-warm (separate from `enabled`): refresh an idle runner's keep_alive shortly before it runs "
        "out while its node has free room and no load waits there, so a model no one needs the room of is not "
        "unloaded just because its keep-alive passed; it expires normally once the node is full (docs/routing.md, "
        "Keep-warm).",
    )
    keep_warm_margin_s: float = Field(
        60.0,
        ge=10,
        description="Keep-warm refreshes a runner that `/api/ps` shows expiring within this many seconds (more than "
        "routing.discovery_interval_s, so the expiry it reads is recent enough).",
    )

    @model_validator(mode="after")
    def _cool_below_hot(self) -> ResidencySettings:
        if self.cool >= self.hot:
            raise ValueError("residency.cool: must be below residency.hot")
        return self

    @model_validator(mode="after")
    def _finite_keep_alive(self) -> ResidencySettings:
        if not self.keep_warm:
            return self
        ns = keep_alive_ns(json_keep_alive(self.keep_alive))
        if ns is None or ns <= 0 or ns >= FOREVER:
            raise ValueError(
                "residency.keep_alive: keep-warm needs a finite, positive duration (e.g. 5m), "
                f"not {self.keep_alive!r}, so that a runner kept warm is still evicted when memory is wanted"
            )
        if ns / 1e9 <= self.keep_warm_margin_s:
            raise ValueError("residency.keep_warm_margin_s: must be below residency.keep_alive")
        return self


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="CORRAL_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        nested_model_default_partial_update=True,
    )

    server: ServerSettings = Field(default_factory=ServerSettings, description="Corral's own listener.")
    backends: list[BackendSettings] = Field(default_factory=list, description="The nodes of the fleet.")
    health: HealthSettings = Field(default_factory=HealthSettings, description="Fleet-wide health-check defaults.")
    routing: RoutingSettings = Field(default_factory=RoutingSettings, description="Node choice and retries.")
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings, description="Limits on node exchanges.")
    queue: QueueSettings = Field(default_factory=QueueSettings, description="The gateway's admission queue.")
    logging: LoggingSettings = Field(default_factory=LoggingSettings, description="Logs.")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, description="Prometheus metrics.")
    tracing: TracingSettings = Field(default_factory=TracingSettings, description="OpenTelemetry tracing.")
    console: ConsoleSettings = Field(default_factory=ConsoleSettings, description="The web console.")
    auth: AuthSettings = Field(default_factory=AuthSettings, description="API keys.")
    audit: AuditSettings = Field(default_factory=AuditSettings, description="The audit log.")
    validation: ValidationSettings = Field(default_factory=ValidationSettings, description="Request checks.")
    limits: LimitsSettings = Field(default_factory=LimitsSettings, description="Rate, token and concurrency limits.")
    models: ModelsSettings = Field(default_factory=ModelsSettings, description="Model management and policies.")
    residency: ResidencySettings = Field(
        default_factory=ResidencySettings, description="Preloading and pinning hot models."
    )
    discovery: DiscoverySettings = Field(
        default_factory=DiscoverySettings, description="Nodes found at run time (DNS, watched files)."
    )
    cache: CacheSettings = Field(default_factory=CacheSettings, description="Response and embeddings caches.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables override the YAML file, which arrives as init arguments.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        seen: set[str] = set()
        for index, backend in enumerate(self.backends):
            if backend.name in seen:
                raise ValueError(f"backends[{index}].name: duplicate node name {backend.name!r}")
            seen.add(backend.name)
        return self

    @model_validator(mode="after")
    def _shedding_needs_estimates(self) -> Settings:
        if self.queue.shed_after_s is not None and self.routing.strategy != "model-aware":
            raise ValueError(
                f"queue.shed_after_s: needs routing.strategy: model-aware, the only strategy that estimates a "
                f"request's wait (routing.strategy is {self.routing.strategy!r})"
            )
        return self

    @model_validator(mode="after")
    def _console_listener(self) -> Settings:
        if self.console.enabled and self.console.listen == "metrics" and not self.metrics.listen:
            raise ValueError("console.listen: 'metrics' needs a metrics listener (set metrics.listen)")
        return self

    @model_validator(mode="after")
    def _limits_shared_by_workers(self) -> Settings:
        # Never silently per worker: each worker's memory store would admit its own full allowance.
        if self.server.workers > 1 and self.limits.redis_url is None:
            lim = self.limits
            what = [f"limits.{k}" for k in ("per_ip_rpm", "global_rpm", "global_tpm") if getattr(lim, k)]
            if self.auth_required:
                what.append("API keys (their rpm, tpm and max_concurrency)")
            if what:
                raise ValueError(
                    f"limits.redis_url: {self.server.workers} workers would each keep their own count of "
                    f"{', '.join(what)}; set limits.redis_url (redis://host:port/db) to share them, or run one worker"
                )
        return self

    @model_validator(mode="after")
    def _secure_by_default(self) -> Settings:
        if self.auth.enabled is None and not is_loopback(self.server.host):
            raise ValueError(
                f"auth.enabled: server.host {self.server.host!r} is not a loopback address; require API keys "
                "(auth.enabled: true) or set auth.enabled: false explicitly"
            )
        return self

    @property
    def auth_required(self) -> bool:
        return bool(self.auth.enabled)

    def health_for(self, backend: BackendSettings) -> HealthSettings:
        return backend.health or self.health


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=256)
def _base_path(url: str) -> str:
    return urlsplit(url).path.rstrip("/")


def _key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out.replace("models.per_model.", "models.") or "(top level)"


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        if ": " in msg and re.fullmatch(r"[a-z_]+(\[\d+\])?(\.[a-z_]+)*", msg.split(": ", 1)[0]):
            key, msg = msg.split(": ", 1)
            problems.append((key, msg))
            continue
        problems.append((_key(loc), msg))
    return problems


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (if any), apply CORRAL_* environment variables, validate."""
    data: dict[str, Any] = {}
    source = str(path) if path else ""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([("(file)", f"cannot read {path}: {exc.strerror or exc}")], source) from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([("(file)", f"not valid YAML: {exc}")], source) from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([("(top level)", "the file must hold a mapping of sections")], source)
        data = loaded
    for key, value in overrides.items():
        section = dict(data.get(key) or {}) if isinstance(value, dict) else None
        if section is not None:
            section.update(value)
            data[key] = section
        else:
            data[key] = value
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc), source) from exc
