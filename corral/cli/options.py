"""What several commands share: the --config option and loading the settings or exiting with code 2."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from corral.config import ConfigError, Settings, load_settings

err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="CORRAL_CONFIG", help="YAML configuration file.", show_default=False),
]


def load_or_exit(path: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(path, **overrides)
    except ConfigError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        raise typer.Exit(2) from None
