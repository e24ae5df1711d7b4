"""The configuration reference, generated from the settings model (docs/configuration.md)."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from corral.config import Settings


def _model_of(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *get_args(annotation)]
    for candidate in candidates:
        for inner in (candidate, *get_args(candidate)):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        return "" if isinstance(value, BaseModel) else f"`{value!r}`"
    return f"`{info.default!r}`"


# Keys written by name in YAML: `models.<name>.num_ctx` rather than the field that holds them.
_NAMED = {"models.per_model": "models.<name>"}


def _rows(model: type[BaseModel], prefix: str, out: list[str], sections: list[tuple[str, type[BaseModel]]]) -> None:
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        key = _NAMED.get(key, key)
        nested = _model_of(info.annotation)
        if nested is not None:
            sections.append((key, nested))
            continue
        kind = getattr(info.annotation, "__name__", None) or str(info.annotation).replace("typing.", "")
        kind = kind.replace("pathlib.", "").replace(" | ", " or ").replace("|", " or ")
        out.append(f"| `{key}` | {kind} | {_default(info)} | {info.description or ''} |")


def _descriptions(model: type[BaseModel], prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        nested = _model_of(info.annotation)
        if nested is not None:
            key = _NAMED.get(f"{prefix}{name}", f"{prefix}{name}")
            out[key] = info.description or ""
            out.update(_descriptions(nested, f"{key}[]." if key == "backends" else f"{key}."))
    return out


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `corral/config.py` by `corral config docs`; do not edit by hand.",
        "",
        "The YAML file is the base; every key can be overridden by an environment variable",
        "`CORRAL_<SECTION>__<KEY>` (for example `CORRAL_SERVER__PORT=9000`). Lists such as `backends`",
        "take JSON in the variable. Unknown keys are refused, naming the key.",
        "",
    ]
    sections: list[tuple[str, type[BaseModel]]] = []
    top: list[str] = []
    _rows(Settings, "", top, sections)
    descriptions = _descriptions(Settings, "")
    while sections:
        key, model = sections.pop(0)
        lines += [f"## `{key}`", "", descriptions.get(key) or (model.__doc__ or "").strip(), ""]
        rows: list[str] = []
        nested: list[tuple[str, type[BaseModel]]] = []
        is_list = key == "backends"
        _rows(model, f"{key}[]." if is_list else f"{key}.", rows, nested)
        lines += ["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
        sections[:0] = nested
    return "\n".join(lines)
