"""What reading a request body costs on the proxy path: `python -m bench.body_read`.

A typical chat body (four messages, ~850 bytes), native and /v1. "before": orjson.loads and the old
pydantic validation (corral/protocol/validation.py before issue 9, read from git when available);
"after": corral.protocol.body.read_body (Go's rule, exact) and the new validation. Best of 7 runs of
20,000 calls each, one core, no I/O.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from corral.protocol.body import read_body
from corral.protocol.validation import Caps, validate

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant. " * 6},
    {"role": "user", "content": "What is the capital of France? Explain in detail please. " * 3},
    {"role": "assistant", "content": "The capital of France is Paris, a city on the Seine. " * 4},
    {"role": "user", "content": "And of Germany? " * 5},
]
BODIES = {
    "/api/chat": {"model": "llama3.2:1b", "messages": MESSAGES, "stream": True, "options": {"temperature": 0.7}},
    "/v1/chat/completions": {"model": "llama3.2:1b", "messages": MESSAGES, "stream": True, "max_tokens": 256},
}
DENY = (re.compile(r"(?i)ignore previous instructions"),)
N = 20_000


def best(call: Callable[[], object]) -> float:
    return min(timeit.repeat(call, number=N, repeat=7)) / N * 1e6


def old_validation() -> Any:
    """The validation module as it was before issue 9 (git show 9616bd2), or None."""
    try:
        source = subprocess.run(
            ["git", "show", "9616bd2:corral/protocol/validation.py"], capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "old_validation.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_validation", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_validation"] = module
    spec.loader.exec_module(module)
    return module


def line(label: str, micros: float) -> None:
    print(f"  {label:42} {micros:6.2f} µs")


def report(route: str, doc: dict[str, Any], old: Any) -> None:
    body = orjson.dumps(doc)
    variant = body.replace(b'"model"', b'"Model"', 1)
    print(f"{route} ({len(body)} bytes)")
    line("orjson.loads", best(lambda: orjson.loads(body)))
    if old is not None:
        for name, caps in (("", old.Caps()), (" + caps, deny", old.Caps(1000, 8192, DENY))):
            line(
                f"before: orjson + validate{name}",
                best(lambda caps=caps: old.validate(route, orjson.loads(body), caps)),
            )
    line("read_body", best(lambda: read_body(body, route)))
    line("read_body, a key in another case", best(lambda: read_body(variant, route)))
    for name, caps in (("", Caps()), (" + caps, deny", Caps(1000, 8192, DENY))):
        line(
            f"after: read_body + validate{name}",
            best(lambda caps=caps: validate(route, read_body(body, route).doc, caps)),
        )


def main() -> None:
    old = old_validation()
    for route, doc in BODIES.items():
        report(route, doc, old)


if __name__ == "__main__":
    main()
