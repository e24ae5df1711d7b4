#!/usr/bin/env bash
# Installs Corral and runs it: the demo fleet (three simulated nodes), or `serve` with the config given.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [[ $# -ge 1 ]]; then
  exec .venv/bin/corral serve --config "$1" "${@:2}"
fi
exec .venv/bin/corral demo
