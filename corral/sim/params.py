"""Request parameters shared by the inference routes: keep_alive, options, think (ollama-api.md §4)."""

from __future__ import annotations

import re
from typing import Any

from corral.sim.catalog import DEFAULT_NUM_CTX
from corral.sim.wire import BadRequest

FOREVER = -1.0  # a negative session duration: never expire
_NUMBER = re.compile(r"[0-9]*(\.[0-9]*)?")
_UNIT_TEXT = re.compile(r"[^0-9.]*")
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
_INT_OPTIONS |= {"main_gpu", "num_thread", "draft_num_predict"}
_FLOAT_OPTIONS = {"top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty"}
_FLOAT_OPTIONS |= {"frequency_penalty"}
_BOOL_OPTIONS = {"use_mmap"}
THINK_LEVELS = ("low", "medium", "high", "max")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def go_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds; raises BadRequest with its messages (time/format.go)."""
    rest, negative = text, False
    if rest[:1] in ("-", "+"):
        negative, rest = rest[0] == "-", rest[1:]
    if rest == "0":
        return 0.0
    invalid = BadRequest(400, f"time: invalid duration {_quote(text)}")
    if not rest:
        raise invalid
    seconds = 0.0
    while rest:
        number = _NUMBER.match(rest)
        if number is None or number.group(0) in ("", "."):
            raise invalid
        rest = rest[number.end() :]
        unit = _UNIT_TEXT.match(rest)
        if unit is None or not unit.group(0):
            raise BadRequest(400, f"time: missing unit in duration {_quote(text)}")
        rest = rest[unit.end() :]
        if unit.group(0) not in _UNIT:
            raise BadRequest(400, f"time: unknown unit {_quote(unit.group(0))} in duration {_quote(text)}")
        seconds += float(number.group(0) if number.group(0) != "." else 0) * _UNIT[unit.group(0)]
    if seconds * 1e9 > 2**63:
        raise invalid
    return -seconds if negative else seconds


def check_keep_alive(value: object) -> object:
    """api.Duration's UnmarshalJSON: a number (seconds) or a Go duration string; any other JSON
    type is `Unsupported type: '<Go type>'` (api/types.go)."""
    if isinstance(value, str):
        go_duration(value)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        kind = {bool: "bool", dict: "map[string]interface {}", list: "[]interface {}"}[type(value)]
        raise BadRequest(400, f"Unsupported type: '{kind}'")
    return value


def parse_keep_alive(value: object, default: str) -> float:
    """Seconds; negative means forever. A number is seconds, a string a Go duration (§4.2)."""
    if value is None:
        value = default
        if re.fullmatch(r"-?\d+", default):  # OLLAMA_KEEP_ALIVE also takes bare seconds
            value = int(default)
    check_keep_alive(value)
    seconds = go_duration(value) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    return FOREVER if seconds < 0 else seconds


def check_options(options: object) -> dict[str, Any]:
    """The `options` map as Options.FromMap reads it (api/types.go): keys match the json tags
    exactly (others are ignored), numbers are accepted for integer options, `stop` must be an
    array of strings. Its errors reach the client as 500 (handleScheduleError's default)."""
    if not isinstance(options, dict):
        return {}
    for key, value in options.items():
        if value is None:
            continue
        if key in _INT_OPTIONS and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequest(500, f'option "{key}" must be of type integer')
        if key in _FLOAT_OPTIONS and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequest(500, f'option "{key}" must be of type float32')
        if key in _BOOL_OPTIONS and not isinstance(value, bool):
            raise BadRequest(500, f'option "{key}" must be of type boolean')
        if key == "stop" and not isinstance(value, list):  # a bare string is not converted
            raise BadRequest(500, 'option "stop" must be of type array')
        if key == "stop" and not all(isinstance(s, str) for s in value):
            raise BadRequest(500, 'option "stop" must be of an array of strings')
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
    """api.ThinkValue's UnmarshalJSON: a bool or one of the levels; its errors are 400s."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value in THINK_LEVELS:
        return value
    levels = '"high", "medium", "low", "max", true, or false'
    if isinstance(value, str):
        raise BadRequest(400, f"invalid think value: {_quote(value)} (must be {levels})")
    raise BadRequest(400, f"think must be a boolean or string ({levels})")
