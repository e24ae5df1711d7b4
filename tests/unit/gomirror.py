"""The Go side of the decoding tests: tests/unit/go/decode_mirror.go, built once with Debian's golang-go
(cached by its source's hash) and run as one long-lived process answering a line per body."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).parent / "go" / "decode_mirror.go"


def build(cache: Path) -> Path:
    """The mirror binary, built into `cache` unless a build of the same source is there."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    binary = cache / f"decode_mirror-{digest}"
    if binary.exists():
        return binary
    go = shutil.which("go")
    assert go is not None
    work = cache / f"build-{digest}"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(SOURCE, work / "main.go")
    env = {
        **os.environ,
        "GOCACHE": str(cache / "gocache"),
        "GOPATH": str(cache / "gopath"),
        "GO111MODULE": "off",
        "GOPROXY": "off",
        "GOFLAGS": "",
    }
    subprocess.run(
        [go, "build", "-o", str(binary), "main.go"], cwd=work, env=env, check=True, timeout=300, capture_output=True
    )
    return binary


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return re.sub("[\ud800-\udfff]", "\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


class Mirror:
    """Decodes a body with Go's encoding/json into the route's struct, in a long-lived process."""

    def __init__(self, binary: Path) -> None:
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _ask(self, route: str, arg: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{route} {arg}\n".encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the Go mirror exited"
        # json.RawMessage fields come back as the client's bytes, unchecked: read them as Go's decoder
        # will when the node parses them (each invalid byte and unpaired surrogate escape is U+FFFD).
        answer: dict[str, Any] = _replace_surrogates(json.loads(line.decode(errors="surrogateescape")))
        return answer

    def decode(self, route: str, body: bytes) -> tuple[bool, Any]:
        """(True, the struct as JSON) or (False, Go's error text)."""
        answer = self._ask(route, base64.b64encode(body).decode() or "=")
        return (True, answer["v"]) if answer["ok"] else (False, answer["err"])

    def fields(self, route: str) -> Any:
        """The route's struct as {json tag: nested struct description or None}."""
        return self._ask(route, "?")["v"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)
