"""`corral loadtest`: offer load to Corral, an Ollama node or any OpenAI-compatible server, and report
what it took. The flags are checked here (a bad one exits 2 naming it); the work is in corral.loadtest,
imported only when the command runs."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from corral.loadtest.run import Plan

DEFAULT_TTFT_BOUND = "2s"
RAMP_STEP_S = 10.0  # a ramp step's length unless --duration says otherwise
MIN_RAMP_STEP_REQUESTS = 10  # a step expected to send fewer says nothing about its p99


class Api(StrEnum):
    ollama = "ollama"
    openai = "openai"


def _folder_exists(path: Path | None, flag: str) -> None:
    if path is not None and not path.resolve().parent.is_dir():
        raise typer.BadParameter(f"the folder {path.resolve().parent} does not exist", param_hint=flag)


def loadtest(
    url: Annotated[str, typer.Option(help="Base URL of the server (e.g. http://127.0.0.1:8080).", show_default=False)],
    model: Annotated[
        list[str], typer.Option("--model", "-m", help="Model to ask (repeat to alternate between several).")
    ],
    api: Annotated[Api, typer.Option(help="Ollama's /api/chat or OpenAI's /v1/chat/completions.")] = Api.ollama,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Closed loop: this many requests in flight at all times. Default: 8."),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(help="Open loop: Poisson arrivals at this rate (50/s), or a ramp (10:200/s).", show_default=False),
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(help="How long to send (60s, 2m; in a ramp, per step). Default: 60s; ramp steps 10s."),
    ] = None,
    requests: Annotated[
        int | None, typer.Option(min=1, help="Send this many requests instead (per step in a ramp).")
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Ask for streamed answers (TTFT, inter-token latency).")
    ] = False,
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="Prompts, one a line: text, or JSON with prompt or messages (and max_tokens).", show_default=False
        ),
    ] = None,
    key: Annotated[
        str | None, typer.Option(envvar="CORRAL_API_KEY", help="API key, sent as a Bearer token.", show_default=False)
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every figure to this JSON file.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG chart (needs matplotlib).")] = None,
    ttft_bound: Annotated[
        str | None, typer.Option(help=f"Ramp: the p99 TTFT the rate search must keep. Default: {DEFAULT_TTFT_BOUND}.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Ask for at most this many output tokens (num_predict / max_tokens).")
    ] = None,
    timeout: Annotated[str, typer.Option(help="Give up on a request after this long.")] = "300s",
    seed: Annotated[int | None, typer.Option(help="Seed of the Poisson schedule (repeatable runs).")] = None,
) -> None:
    """Offer load (closed or open loop, or a ramp) and report throughput, errors, latency, TTFT,
    inter-token latency and tokens/s. Latency counts from each request's scheduled send time."""
    from corral.loadtest import flags
    from corral.loadtest.requests import DEFAULT_PROMPT, Prompt, encode_requests, parse_target, read_prompts

    def bad(flag: str, exc: ValueError) -> typer.BadParameter:
        return typer.BadParameter(str(exc).removeprefix(f"{flag} "), param_hint=flag)

    if concurrency is not None and rate is not None:
        raise typer.BadParameter(
            "give --concurrency (closed loop) or --rate (open loop), not both", param_hint="--rate"
        )
    if duration is not None and requests is not None:
        raise typer.BadParameter("give --duration or --requests, not both", param_hint="--requests")
    if not all(m.strip() for m in model):
        raise typer.BadParameter("a model name cannot be empty", param_hint="--model")
    if key is not None and (not key.isprintable() or not key.isascii()):
        raise typer.BadParameter("must be printable ASCII (it is sent in a header)", param_hint="--key")
    try:
        target = parse_target(url, api.value)
    except ValueError as exc:
        raise bad("--url", exc) from None
    low, high = None, None
    if rate is not None:
        try:
            low, high = flags.parse_rate(rate)
        except ValueError as exc:
            raise bad("--rate", exc) from None
    for flag, text in (("--duration", duration), ("--ttft-bound", ttft_bound), ("--timeout", timeout)):
        if text is not None:
            try:
                flags.parse_duration(text, flag)
            except ValueError as exc:
                raise bad(flag, exc) from None
    if high is not None and low is not None and requests is None:
        step_s = flags.parse_duration(duration, "--duration") if duration is not None else RAMP_STEP_S
        if low * step_s < MIN_RAMP_STEP_REQUESTS:
            raise typer.BadParameter(
                f"a ramp step of {step_s:g}s at {low:g}/s sends ~{low * step_s:.0f} requests, too few for a p99: "
                f"give a --duration of at least {MIN_RAMP_STEP_REQUESTS / low:g}s or a higher low rate",
                param_hint="--duration",
            )
    if high is None and ttft_bound is not None:
        raise typer.BadParameter("applies to a ramp (--rate LOW:HIGH/s) only", param_hint="--ttft-bound")
    try:
        chosen = (
            read_prompts(prompts) if prompts is not None else [Prompt(({"role": "user", "content": DEFAULT_PROMPT},))]
        )
    except ValueError as exc:
        raise bad("--prompts", exc) from None
    _folder_exists(json_out, "--json")
    _folder_exists(plot, "--plot")
    err = Console(stderr=True)
    if plot is not None:
        from corral.loadtest.plot import PlotUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlotUnavailable as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    from corral.loadtest.run import Plan

    if duration is None and requests is None:
        duration = f"{RAMP_STEP_S:g}s" if high is not None else "60s"
    plan = Plan(
        target=target,
        url=url.rstrip("/"),
        models=tuple(model),
        requests=tuple(encode_requests(target, list(model), chosen, stream=stream, key=key, max_tokens=max_tokens)),
        stream=stream,
        concurrency=(concurrency or 8) if rate is None else None,
        rate=low if rate is not None and high is None else None,
        ramp=(low, high) if low is not None and high is not None else None,
        ttft_bound_s=flags.parse_duration(ttft_bound or DEFAULT_TTFT_BOUND, "--ttft-bound"),
        duration_s=flags.parse_duration(duration, "--duration") if duration is not None else None,
        count=requests,
        timeout_s=flags.parse_duration(timeout, "--timeout"),
        seed=seed,
    )
    run(plan, json_out, plot, err)


def run(plan: Plan, json_out: Path | None, plot: Path | None, err: Console) -> None:
    import orjson

    from corral.loadtest.live import Progress
    from corral.loadtest.run import check_reachable, execute
    from corral.loadtest.table import summary

    try:
        check_reachable(plan.target)
    except ConnectionError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    report = execute(plan, Progress(err))
    Console().print(summary(report))
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    if plot is not None:
        from corral.loadtest.plot import write_png

        write_png(report, plot)
    if report.get("interrupted"):
        raise typer.Exit(130)
    if report["requests"]["total"] and not report["requests"]["ok"]:
        err.print("[bold red]error:[/] every request failed", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
