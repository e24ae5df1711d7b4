"""`python -m corral.sim`: the simulator without the rest of the CLI."""

from __future__ import annotations

import argparse

from corral.sim import SimOptions, serve


def _rate(text: str) -> float:
    value = float(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1 token per second")
    return value


def parse(argv: list[str] | None = None) -> SimOptions:
    p = argparse.ArgumentParser(prog="corral-sim", description="A simulated Ollama node.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11434)
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="a model the node has (repeatable); flags after '=': embed, think, nothink, tools, notools, vision",
    )
    p.add_argument("--tokens-per-second", type=float, default=50.0)
    p.add_argument("--embed-tokens-per-second", type=float, default=None)
    p.add_argument(
        "--prompt-eval-rate",
        type=_rate,
        default=None,
        metavar="TOKENS_PER_S",
        help="prompt tokens evaluated per second; the first token waits for the uncached ones (unset: no wait)",
    )
    p.add_argument(
        "--multiuser-cache",
        action="store_true",
        help="OLLAMA_MULTIUSER_CACHE: choose prompt-cache slots as the runners before v0.30 did with it",
    )
    p.add_argument("--load-seconds", type=float, default=0.5)
    p.add_argument("--max-loaded", type=int, default=3, help="OLLAMA_MAX_LOADED_MODELS")
    p.add_argument("--parallel", type=int, default=1, help="OLLAMA_NUM_PARALLEL")
    p.add_argument("--max-queue", type=int, default=512, help="OLLAMA_MAX_QUEUE")
    p.add_argument("--keep-alive", default="5m", help="OLLAMA_KEEP_ALIVE")
    p.add_argument("--ollama-version", default="0.12.6", help="what /api/version reports")
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--hang", action="store_true")
    p.add_argument("--drop-after", type=int)
    p.add_argument("--midstream-error-after", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-gb", type=float, default=None, help="refuse to load models bigger than this (500)")
    p.add_argument("--host-check", action="store_true", help="403 for non-local Host headers, as Ollama on loopback")
    p.add_argument("--fail-pull", action="append", default=[], help="pulls of this model fail partway (repeatable)")
    a = p.parse_args(argv)
    return SimOptions(
        host=a.host,
        port=a.port,
        models=a.model or ["llama3.2:1b"],
        tokens_per_second=a.tokens_per_second,
        embed_tokens_per_second=a.embed_tokens_per_second,
        prompt_eval_rate=a.prompt_eval_rate,
        multiuser_cache=a.multiuser_cache,
        load_seconds=a.load_seconds,
        max_loaded=a.max_loaded,
        parallel=a.parallel,
        max_queue=a.max_queue,
        keep_alive_default=a.keep_alive,
        version=a.ollama_version,
        error_rate=a.error_rate,
        latency_ms=a.latency_ms,
        hang=a.hang,
        drop_after=a.drop_after,
        midstream_error_after=a.midstream_error_after,
        seed=a.seed,
        memory_gb=a.memory_gb,
        host_check=a.host_check,
        fail_pull=a.fail_pull,
    )


if __name__ == "__main__":
    serve(parse())
