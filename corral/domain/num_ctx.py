"""The per-model `num_ctx` policy (`models.<name>.num_ctx`): one context size for every request of a model,
so that one runner serves them all.

Ollama reloads a model whenever a request's load-time options differ from its runner's (`needsReload`,
server/sched.go); two groups of clients that ask one model for different `num_ctx` values make each node
reload it back and forth. The policy is an operator's explicit choice to change what clients asked for:

- `normalize`: the request's `num_ctx` is removed, so every request runs at the node's default context
  (OLLAMA_CONTEXT_LENGTH, or the model's `PARAMETER num_ctx`). This is also the context every
  OpenAI-compatible request gets: Ollama's /v1 routes carry no `num_ctx` (openai/openai.go builds the
  options from temperature, top_p and the like only), so native and /v1 clients share one runner.
- `normalize N`: every native request runs at N (set OLLAMA_CONTEXT_LENGTH=N on the nodes too, so /v1
  requests share the runner).
- `cap N`: a request asking for more than N gets N; smaller and absent values are left as they are.

Pure: the gateway calls `rewrite` on the options it read and re-encodes the body only when it changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FORMS = "`normalize`, `normalize N` or `cap N` (N a positive whole number of tokens)"


@dataclass(frozen=True, slots=True)
class NumCtxPolicy:
    mode: Literal["normalize", "cap"]
    value: int | None = None  # normalize: None = the node's default; cap: the ceiling

    def __str__(self) -> str:
        return self.mode if self.value is None else f"{self.mode} {self.value}"


def parse(text: str) -> NumCtxPolicy:
    """`normalize`, `normalize 8192` or `cap 8192`; ValueError naming the accepted forms otherwise."""
    parts = str(text).split()
    if not parts or parts[0] not in ("normalize", "cap") or len(parts) > 2:
        raise ValueError(f"{text!r} is not a num_ctx policy; use {FORMS}")
    value: int | None = None
    if len(parts) == 2:
        if not parts[1].isdigit() or int(parts[1]) < 1:
            raise ValueError(f"{text!r}: {parts[1]!r} is not a positive whole number; use {FORMS}")
        value = int(parts[1])
    if parts[0] == "cap" and value is None:
        raise ValueError(f"{text!r}: cap needs a size; use {FORMS}")
    mode: Literal["normalize", "cap"] = "normalize" if parts[0] == "normalize" else "cap"
    return NumCtxPolicy(mode, value)


def _asked(options: dict[str, Any]) -> int | None:
    value = options.get("num_ctx")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)  # 4096.0 is 4096 to Ollama (Options.FromMap)


def rewrite(policy: NumCtxPolicy, options: Any) -> dict[str, Any] | None:
    """The options to send instead of `options`, or None when the request is left as it is.

    A `num_ctx` of the wrong type is left for the node to refuse with its own error (never stricter than
    Ollama, and never hiding a client's mistake)."""
    opts: dict[str, Any] = options if isinstance(options, dict) else {}
    if "num_ctx" in opts and _asked(opts) is None:
        return None
    asked = _asked(opts)
    if policy.mode == "cap":
        assert policy.value is not None
        if asked is None or asked <= policy.value:
            return None
        return {**opts, "num_ctx": policy.value}
    if policy.value is None:
        if "num_ctx" not in opts:
            return None
        return {k: v for k, v in opts.items() if k != "num_ctx"}
    if asked == policy.value:
        return None
    return {**opts, "num_ctx": policy.value}


def effective(policy: NumCtxPolicy | None, asked: int | None) -> int | None:
    """The `num_ctx` a request asking for `asked` (None: not set) runs with under `policy` (None: the
    node's default). The policy simulator routes by it."""
    if policy is None:
        return asked
    opts = {} if asked is None else {"num_ctx": asked}
    out = rewrite(policy, opts)
    return asked if out is None else _asked(out)
