"""Request parameters shared by the inference routes: keep_alive, options, think (ollama-api.md §4)."""

from __future__ import annotations

import re
from typing import Any

from corral.sim.catalog import DEFAULT_NUM_CTX
from corral.sim.wire import BadRequest

FOREVER = -1.0  # a negative session duration: never expire
_DURATION = re.compile(r"^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$")
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

# Runner ("load-time") options: any difference from the loaded runner's means a reload (sched.go needsReload).
LOAD_DEFAULTS: dict[str, Any] = {
    "num_ctx": None,  # filled with the node default
    "num_batch": 512,
    "num_gpu": -1,
    "main_gpu": 0,
    "use_mmap": None,
    "num_thread": 0,
}
_INT_OPTIONS = {"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch", "num_gpu"}
_INT_OPTIONS |= {"main_gpu", "num_thread"}
_FLOAT_OPTIONS = {"top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty"}
_FLOAT_OPTIONS |= {"frequency_penalty"}
_BOOL_OPTIONS = {"use_mmap", "numa"}
THINK_LEVELS = ("low", "medium", "high", "max")


def go_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds; raises BadRequest with Go's message."""
    if text in ("0", "+0", "-0"):
        return 0.0
    if not _DURATION.match(text):
        unitless = re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)", text) is not None
        reason = "missing unit in duration" if unitless else "invalid duration"
        raise BadRequest(400, f'time: {reason} "{text}"')
    seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(text))
    return -seconds if text.startswith("-") else seconds


def parse_keep_alive(value: object, default: str) -> float:
    """Seconds; negative means forever. A number is seconds, a string a Go duration (§4.2)."""
    if value is None:
        value = default
        if re.fullmatch(r"-?\d+", default):  # OLLAMA_KEEP_ALIVE also takes bare seconds
            value = int(default)
    if isinstance(value, bool):
        raise BadRequest(400, "Unsupported type")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = go_duration(value)
    else:
        raise BadRequest(400, "Unsupported type")
    return FOREVER if seconds < 0 else seconds


def check_options(options: object) -> dict[str, Any]:
    """The `options` object, type-checked as Ollama's FromMap does (wrong types are a 500 there)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise BadRequest(400, "json: cannot unmarshal options into Go struct field of type map[string]interface {}")
    for key, value in options.items():
        if value is None:
            continue
        if key in _INT_OPTIONS and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequest(500, f'option "{key}" must be of type integer')
        if key in _FLOAT_OPTIONS and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequest(500, f'option "{key}" must be of type float32')
        if key in _BOOL_OPTIONS and not isinstance(value, bool):
            raise BadRequest(500, f'option "{key}" must be of type boolean')
        stop_ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value))
        if key == "stop" and not stop_ok:
            raise BadRequest(500, 'option "stop" must be of type array')
    return options


def load_key(options: dict[str, Any], model_ctx: int) -> tuple[tuple[str, Any], ...]:
    """The runner options a request asks for, defaults filled in (num_ctx: the node default, at most
    what the model was trained for)."""
    out = []
    for key, default in LOAD_DEFAULTS.items():
        value = options.get(key)
        if value is None:
            value = min(DEFAULT_NUM_CTX, model_ctx) if key == "num_ctx" else default
        out.append((key, int(value) if isinstance(value, float) else value))
    return tuple(out)


def needs_reload(loaded: tuple[tuple[str, Any], ...], wanted: tuple[tuple[str, Any], ...]) -> bool:
    for (key, have), (_, want) in zip(loaded, wanted, strict=True):
        if key == "num_gpu" and want == -1:  # -1 is "auto": any GPU split satisfies it
            continue
        if have != want:
            return True
    return False


def parse_think(value: object) -> bool | str | None:
    """None (not given), a bool, or a level; anything else is a 400 as in api.ThinkValue."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value in THINK_LEVELS:
        return value
    if isinstance(value, str):
        raise BadRequest(400, f'invalid think value: "{value}" (must be "high", "medium", "low", true, or false)')
    raise BadRequest(400, "think must be a boolean or string")
