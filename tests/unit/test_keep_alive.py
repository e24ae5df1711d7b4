"""`keep_alive` read as Ollama's server reads it (corral.domain.keep_alive), checked against Go's own
time.ParseDuration and float conversion (tests/unit/go/duration_mirror.go), and the load/unload rule."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from corral.domain.keep_alive import FOREVER, keep_alive_ns, unload_requested

SOURCE = Path(__file__).parent / "go" / "duration_mirror.go"


@pytest.fixture(scope="module")
def go_durations(tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain (Debian's golang-go; scripts/install.sh installs it)")
    work = tmp_path_factory.mktemp("go-durations")
    shutil.copy(SOURCE, work / "main.go")
    binary = work / f"mirror-{hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]}"
    env = {**os.environ, "GOCACHE": str(work / "cache"), "GO111MODULE": "off", "GOPROXY": "off", "GOFLAGS": ""}
    subprocess.run([go, "build", "-o", str(binary), "main.go"], cwd=work, env=env, check=True, timeout=300)
    proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    yield proc
    proc.kill()
    proc.wait(5)


def _go(proc: subprocess.Popen[bytes], value: object) -> int | None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(value).encode() + b"\n")
    proc.stdin.flush()
    line = proc.stdout.readline().strip()
    return None if line == b"err" else int(line)


_UNITS = st.sampled_from(["ns", "us", "µs", "ms", "s", "m", "h", "", "x", "sec"])
_NUMBERS = st.sampled_from(["0", "00", "1", "5", "0.0", ".5", "5.", "0.1", "1.5", "30", ".", "", "250"])
_DURATIONS = st.builds(
    lambda sign, parts: sign + "".join(n + u for n, u in parts),
    st.sampled_from(["", "-", "+"]),
    st.lists(st.tuples(_NUMBERS, _UNITS), min_size=0, max_size=3),
)


@settings(max_examples=400, deadline=None)
@example("250250250m")  # past int64 nanoseconds: Go refuses it
@example("9223372036854775807ns")
@example("9223372036854775808ns")
@example("-9223372036854775808ns")
@example("2562047h47m16.854775807s")
@example("2562047h47m16.854775808s")
@example("0.1234567890123456789012s")
@given(st.one_of(_DURATIONS, st.floats(-10, 10, allow_nan=False), st.integers(-5, 100), st.just(1e-10)))
def test_the_same_duration_as_ollama_reads(go_durations: subprocess.Popen[bytes], value: object) -> None:
    ours = keep_alive_ns(value)
    theirs = _go(go_durations, value)
    assert (ours is None) == (theirs is None), value
    if ours is not None and theirs is not None:
        assert (ours == 0) == (theirs == 0), value  # what decides an unload
        assert (ours == FOREVER) == (theirs == FOREVER), value


@pytest.mark.parametrize(
    ("route", "doc", "unloads"),
    [
        ("/api/generate", {"model": "m", "keep_alive": 0}, True),  # ollama stop
        ("/api/generate", {"model": "m", "prompt": "", "keep_alive": "0s"}, True),
        ("/api/chat", {"model": "m", "messages": [], "keep_alive": 0}, True),
        ("/api/generate", {"model": "m", "prompt": "hi", "keep_alive": 0}, False),  # unloads after answering
        ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "x"}], "keep_alive": 0}, False),
        ("/api/generate", {"model": "m"}, False),  # a load
        ("/api/generate", {"model": "m", "keep_alive": "5m"}, False),
        ("/api/generate", {"model": "m", "keep_alive": -1}, False),  # forever
        ("/api/generate", {"model": "m", "keep_alive": 0.5}, False),
        ("/api/embed", {"model": "m", "keep_alive": 0}, False),  # not a load route
    ],
)
def test_what_ollama_stop_sends_is_an_unload(route: str, doc: dict[str, object], unloads: bool) -> None:
    assert unload_requested(doc, route) is unloads


def test_a_number_past_int64_nanoseconds_is_held_forever_not_a_crash() -> None:
    # Ollama accepts it (Go's float conversion has no defined value there); never an OverflowError here.
    assert keep_alive_ns(1e300) == FOREVER and not unload_requested({"keep_alive": 1e300}, "/api/generate")


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e400"])
def test_a_number_json_cannot_carry_is_refused_not_a_crash(text: str) -> None:
    # A flag or a form field may hold it; a JSON body cannot, so Ollama never accepts one (a 400 here).
    from corral.domain.keep_alive import valid_keep_alive

    assert valid_keep_alive(text) is None
