"""The `corral models` and `corral nodes` command groups, with every module that adds a command to them."""

from __future__ import annotations

from corral.cli import model_sync, rollout
from corral.cli.models import app as models_app
from corral.cli.nodes import app as nodes_app

__all__ = ["model_sync", "models_app", "nodes_app", "rollout"]
