#!/usr/bin/env bash
# Installs everything the tests need (Debian servers, the venv, llama.cpp's server with a small real
# model) and runs the whole suite: lint, types, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --system --test
if [[ -f scripts/install-llama.sh ]]; then bash scripts/install-llama.sh; fi
echo "== ruff"
.venv/bin/ruff check corral tests bench
echo "== mypy"
.venv/bin/mypy
echo "== import contracts"
.venv/bin/lint-imports --no-cache
echo "== pytest"
exec .venv/bin/python -m pytest -q "$@"
