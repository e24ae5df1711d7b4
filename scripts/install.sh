#!/usr/bin/env bash
# Installs what Corral needs into .venv (idempotent). With --system (as root), also the Debian packages
# the tests and benchmarks start for real: nginx, wrk, valgrind (bench.instructions), redis, haproxy,
# postgresql, prometheus, alertmanager; Go
# (golang-go: the tests compare body decoding with encoding/json itself); and systemd for
# `systemd-analyze verify` (it runs without systemd as PID 1); dnsmasq-base (a DNS server on loopback for
# the node-discovery tests, no system service); curl (the runbooks' commands use it); and the chromium the web console's tests drive (through the pinned playwright package, never
# `playwright install`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
for arg in "$@"; do
  case "$arg" in
    --system) system=1 ;;
    --test) extras="[test]" ;;
  esac
done
if [[ "${system:-0}" == 1 ]]; then
  need=()
  for pkg in nginx wrk valgrind redis-server haproxy postgresql prometheus prometheus-alertmanager golang-go systemd chromium chromium-driver dnsmasq-base curl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then echo "install.sh: need root to apt-get install ${need[*]}" >&2; exit 1; fi
    echo "== apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed${extras}"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  echo "== pip install -e .${extras}"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  if ! .venv/bin/python -m pip install -q -e ".${extras}" > .venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log >&2
    echo "install.sh: pip install failed (log above)" >&2
    exit 1
  fi
  .venv/bin/python -c "import corral" && touch "$stamp"
fi
