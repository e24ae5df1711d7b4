"""Pull the models every node must hold before Corral sends it traffic (the model-preload Job).

Runs in the Corral image (standard library only). For each node in NODES and each model in MODELS it
calls the node's own `POST /api/pull` with `"stream": false` (Ollama answers once, with
`{"status": "success"}`, when the model is on disk), waiting for nodes that are still starting.
Pulling a model a node already has is cheap (only the manifest is checked), so the Job can run again
after every node is added or replaced.

    NODES="http://ollama-0.ollama:11434 http://ollama-1.ollama:11434" MODELS="llama3.2:1b" \
        python preload-models.py

Exit status: 0 when every node holds every model, 1 otherwise (the Job's backoffLimit retries).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

WAIT_FOR_NODE_S = float(os.environ.get("NODE_WAIT_S", "600"))
PULL_TIMEOUT_S = float(os.environ.get("PULL_TIMEOUT_S", "3600"))  # a large model on a slow link


def wait_until_up(node: str, deadline: float) -> bool:
    while True:
        try:
            with urllib.request.urlopen(node + "/api/version", timeout=5) as response:
                if response.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass  # not up yet: the StatefulSet starts pods one by one
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(2.0, left))


def pull(node: str, model: str) -> str | None:
    """None on success, else the reason."""
    body = json.dumps({"model": model, "stream": False}).encode()
    request = urllib.request.Request(
        node + "/api/pull", data=body, headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=PULL_TIMEOUT_S) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        return f"HTTP {exc.code}: {detail}"
    except (OSError, ValueError) as exc:
        return str(exc)
    if answer.get("status") != "success":
        return f"unexpected answer {answer!r}"
    return None


def main() -> int:
    nodes = [n.rstrip("/") for n in os.environ.get("NODES", "").split()]
    models = os.environ.get("MODELS", "").split()
    if not nodes or not models:
        print("preload: set NODES and MODELS (space-separated)", file=sys.stderr)
        return 2
    failed = 0
    deadline = time.monotonic() + WAIT_FOR_NODE_S
    for node in nodes:
        if not wait_until_up(node, deadline):
            print(f"preload: {node} did not answer within {WAIT_FOR_NODE_S:.0f} s", file=sys.stderr)
            failed += 1
            continue
        for model in models:
            started = time.monotonic()
            error = pull(node, model)
            if error:
                print(f"preload: {node} {model}: {error}", file=sys.stderr)
                failed += 1
            else:
                print(f"preload: {node} {model}: ready in {time.monotonic() - started:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
