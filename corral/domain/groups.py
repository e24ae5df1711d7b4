"""Node groups: labels on nodes (`backends[].labels`) and the selectors that pick a group of them
(`models.<name>.nodes`, a key's `--nodes`). A selector matches a node when every one of its labels
is on the node with the same value; an empty selector matches every node."""

from __future__ import annotations

import re
from collections.abc import Mapping

Labels = Mapping[str, str]

# Label names become Prometheus label names (corral_node_info), so they follow its rule; `node` is taken.
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
RESERVED = frozenset({"node"})
MAX_VALUE = 128


def matches(labels: Labels, selector: Labels | None) -> bool:
    """Whether a node with `labels` belongs to the group `selector` names (None or {}: every node)."""
    if not selector:
        return True
    return all(labels.get(key) == value for key, value in selector.items())


def label_error(key: str, value: str) -> str | None:
    """Why `key: value` cannot be a label or selector term, or None when it can."""
    if not LABEL_NAME.match(key) or key.startswith("__"):
        return f"label name {key!r} must match [A-Za-z_][A-Za-z0-9_]* (at most 63 characters, no leading __)"
    if key in RESERVED:
        return f"label name {key!r} is reserved"
    if not value or len(value) > MAX_VALUE:
        return f"label {key!r} needs a value of 1 to {MAX_VALUE} characters"
    return None


def parse_selector(text: str) -> dict[str, str]:
    """`team=search,pool=gpu` as a selector; ValueError naming the bad term."""
    out: dict[str, str] = {}
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        key, sep, value = term.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise ValueError(f"{term!r} is not label=value")
        problem = label_error(key, value)
        if problem is not None:
            raise ValueError(problem)
        out[key] = value
    return out


def format_selector(selector: Labels | None) -> str:
    """The selector as `a=b,c=d` (sorted), for messages and listings; "" for none."""
    return ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items()))
