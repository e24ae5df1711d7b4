"""Reading the command line's durations and rates. Pure; a bad value raises ValueError saying what is
expected."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_RATE = re.compile(r"^\s*(?P<low>[^:/]+?)\s*(?::\s*(?P<high>[^:/]+?)\s*)?(?:/\s*(?P<unit>s|m))?\s*$")


def parse_duration(text: str, flag: str) -> float:
    """`60s`, `500ms`, `2m`, `1h` or a plain number of seconds; positive."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{flag} must be a duration such as 60s, 500ms, 2m or 1h, not {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not value > 0:
        raise ValueError(f"{flag} must be more than zero, not {text!r}")
    return value


def _positive(text: str, whole: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"--rate must be a positive number of requests per second, such as 50/s, not {whole!r}")
    return value


def parse_rate(text: str) -> tuple[float, float | None]:
    """`50/s`, `50`, `300/m`, or a ramp `10:200/s`: (rate, None) or (low, high), per second."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"--rate must be a rate such as 50/s or a ramp such as 10:200/s, not {text!r}")
    per = 60.0 if match.group("unit") == "m" else 1.0
    low = _positive(match.group("low"), text) / per
    if match.group("high") is None:
        return low, None
    high = _positive(match.group("high"), text) / per
    if high <= low:
        raise ValueError(f"a --rate ramp must go up (low:high), not {text!r}")
    return low, high
