"""The `corral` command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from corral.cli import loadtest as loadtest_cmd
from corral.cli import status as status_cmd
from corral.cli.backup import app as backup_app
from corral.cli.keys import app as keys_app
from corral.cli.model_commands import models_app, nodes_app
from corral.cli.options import ConfigOpt, err, load_or_exit
from corral.config import ConfigError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Corral: one endpoint for a fleet of Ollama nodes.")
config_app = typer.Typer(no_args_is_help=True, help="Check and document the configuration.")
app.add_typer(config_app, name="config")


app.add_typer(keys_app, name="keys")
app.add_typer(backup_app, name="backup")
app.add_typer(models_app, name="models")
app.add_typer(nodes_app, name="nodes")


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override server.port.")] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Reload the configuration when the file changes (as SIGHUP does).")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Override server.workers: processes sharing the port (about one per core).")
    ] = None,
) -> None:
    """Serve the gateway until SIGTERM or Ctrl-C. SIGHUP reloads the configuration."""
    server: dict[str, object] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    if workers is not None:
        server["workers"] = workers
    overrides = {"server": server} if server else {}
    settings = load_or_exit(config, **overrides)
    if not settings.backends:
        err.print("[yellow]warning:[/] no backends configured; every model request will get 404")
    from corral.app.config_state import ConfigSource
    from corral.app.logs import configure

    configure(settings.logging.level, settings.logging.format)
    if settings.server.workers > 1:
        from corral.app.workers import supervise
        from corral.config import load_settings

        reread = lambda: load_settings(config, **overrides)  # noqa: E731
        raise typer.Exit(supervise(settings, reread, watch=config if watch else None))
    from corral.cli.runner import run_gateway

    try:
        run_gateway(settings, source=ConfigSource(config, {"server": server} if server else {}), watch=watch)
    except ConfigError as exc:  # found while assembling, e.g. a bad models.placement_file
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="The YAML file to check.")]) -> None:
    """Validate a configuration file (and CORRAL_* variables) without starting anything."""
    settings = load_or_exit(file)
    if settings.models.placement_file is not None:
        from corral.app.preload import load_placement

        try:
            load_placement(settings.models.placement_file)
        except ConfigError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
    typer.echo(f"{file}: OK ({len(settings.backends)} backend(s), strategy {settings.routing.strategy})")


@config_app.command("docs")
def config_docs() -> None:
    """Print the configuration reference (Markdown), generated from the settings model."""
    from corral.cli.config_docs import render

    typer.echo(render())


@app.command()
def sim(
    port: Annotated[int, typer.Option(help="Port to listen on.")],
    model: Annotated[list[str], typer.Option("--model", "-m", help="A model the node has (repeatable).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    tokens_per_second: Annotated[float, typer.Option(help="Generation speed.")] = 50.0,
    embed_tokens_per_second: Annotated[
        float | None, typer.Option(help="Embedding speed in prompt tokens/s (default: 20× generation speed).")
    ] = None,
    prompt_eval_rate: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            metavar="TOKENS_PER_S",
            help="Prompt evaluation speed: the first token waits for the prompt tokens not in the slot's "
            "cache (default: no wait; durations report 20× generation speed).",
        ),
    ] = None,
    multiuser_cache: Annotated[
        bool,
        typer.Option(help="OLLAMA_MULTIUSER_CACHE: choose prompt-cache slots as Ollama's runners before v0.30 did."),
    ] = False,
    load_seconds: Annotated[float, typer.Option(help="Time to load a model.")] = 0.5,
    max_loaded: Annotated[int, typer.Option(help="OLLAMA_MAX_LOADED_MODELS.")] = 3,
    parallel: Annotated[int, typer.Option(help="OLLAMA_NUM_PARALLEL: slots per loaded model.")] = 1,
    max_queue: Annotated[int, typer.Option(help="OLLAMA_MAX_QUEUE: pending requests before 503.")] = 512,
    keep_alive: Annotated[str, typer.Option(help="OLLAMA_KEEP_ALIVE default.")] = "5m",
    error_rate: Annotated[float, typer.Option(help="Fault: share of requests answered 500.")] = 0.0,
    latency_ms: Annotated[float, typer.Option(help="Fault: delay before the first byte.")] = 0.0,
    hang: Annotated[bool, typer.Option(help="Fault: accept requests, never answer.")] = False,
    drop_after: Annotated[int | None, typer.Option(help="Fault: drop the connection after N tokens.")] = None,
    midstream_error_after: Annotated[
        int | None, typer.Option(help="Fault: send an error line after N tokens and end the stream.")
    ] = None,
    host_check: Annotated[bool, typer.Option(help="Refuse non-local Host headers, as Ollama on loopback.")] = False,
    ollama_version: Annotated[str, typer.Option(help="Version /api/version reports.")] = "0.12.6",
    seed: Annotated[int, typer.Option(help="Seed for generated text.")] = 0,
    fail_pull: Annotated[
        list[str] | None, typer.Option("--fail-pull", help="Fault: pulls of this model fail partway (repeatable).")
    ] = None,
    memory_gb: Annotated[
        float | None, typer.Option(help="Refuse to load models bigger than this many GiB (Ollama's 500).")
    ] = None,
) -> None:
    """Run one simulated Ollama node (for tests, demos and benchmarks)."""
    from corral.sim import SimOptions
    from corral.sim import serve as serve_sim

    serve_sim(
        SimOptions(
            host=host,
            port=port,
            models=list(model),
            tokens_per_second=tokens_per_second,
            embed_tokens_per_second=embed_tokens_per_second,
            prompt_eval_rate=prompt_eval_rate,
            multiuser_cache=multiuser_cache,
            load_seconds=load_seconds,
            max_loaded=max_loaded,
            parallel=parallel,
            max_queue=max_queue,
            keep_alive_default=keep_alive,
            error_rate=error_rate,
            latency_ms=latency_ms,
            hang=hang,
            drop_after=drop_after,
            midstream_error_after=midstream_error_after,
            host_check=host_check,
            version=ollama_version,
            seed=seed,
            fail_pull=list(fail_pull or []),
            memory_gb=memory_gb,
        )
    )


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port for Corral.")] = 8080,
    config: ConfigOpt = None,
) -> None:
    """Start Corral in front of three simulated nodes (or the given config) and print how to use it."""
    from corral.cli import demo as demo_cmd  # imports the whole gateway: not for every command

    demo_cmd.run(port, config)


@app.command()
def status(
    url: Annotated[str, typer.Option(help="Corral's base URL.", envvar="CORRAL_URL")] = "http://127.0.0.1:8080",
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
    key: Annotated[
        str | None, typer.Option("--key", help="An API key, when Corral requires keys.", envvar="CORRAL_ADMIN_KEY")
    ] = None,
) -> None:
    """Show the fleet: nodes, state, load and models."""
    status_cmd.show(url, as_json, key)


@app.command()
def top(
    url: Annotated[str, typer.Option(help="Corral's base URL.", envvar="CORRAL_URL")] = "http://127.0.0.1:8080",
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
    iterations: Annotated[int | None, typer.Option(help="Stop after N refreshes (default: until Ctrl-C).")] = None,
) -> None:
    """Watch the fleet live: requests/s, tokens/s and TTFT per node."""
    from corral.cli import top as top_cmd

    try:
        top_cmd.run(url, interval, iterations)
    except KeyboardInterrupt:
        pass


app.command(name="loadtest")(loadtest_cmd.loadtest)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
