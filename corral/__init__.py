"""Corral: a production gateway for fleets of Ollama servers."""

__version__ = "0.1.0"
