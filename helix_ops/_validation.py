"""Turning YAML text and pydantic validation failures into one-line :class:`ConfigError`s.

Only the first problem is reported: one clear error naming its path is more useful than a wall of them,
and fixing it reveals the next.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from helix_ops.errors import ConfigError
from helix_ops.safe_load import load_yaml

M = TypeVar("M", bound=BaseModel)

_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "float_type": "a number",
    "float_parsing": "a number",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}


def format_path(loc: Sequence[str | int]) -> str:
    """``("gates", "gate_1", "timeout_hours")`` → ``gates.gate_1.timeout_hours``; list indexes as ``[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml_mapping(text: str, source: str | None = None, *, aliases: bool = False) -> dict[str, Any]:
    """Parse YAML text that must hold one mapping, through :func:`helix_ops.safe_load.load_yaml` (bounded size,
    depth and node count; no duplicate keys; anchors and aliases refused unless ``aliases``). Malformed YAML is a
    :class:`ConfigError` with a line."""
    data = load_yaml(text, source, aliases=aliases)
    if not isinstance(data, dict):
        raise ConfigError("(top level)", f"expected a mapping, got {_kind(data)}", source)
    return data


def validate_model(model: type[M], data: Any, source: str | None = None) -> M:
    """Validate ``data`` into ``model``; on failure raise the first error as a :class:`ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise first_error(model, exc, source) from None


def first_error(model: type[BaseModel], exc: ValidationError, source: str | None) -> ConfigError:
    """The first pydantic error as a ConfigError, with a message saying what was expected."""
    err = exc.errors(include_url=False)[0]
    loc = _clean_loc(err["loc"])
    return ConfigError(format_path(loc) or "(top level)", _message(model, err, loc), source)


def _clean_loc(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """Drop pydantic's union-member and function tags (``function-after[...]``, ``tagged-union[...]``)."""
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p and p.endswith("]"))))


def _message(model: type[BaseModel], err: Mapping[str, Any], loc: tuple[str | int, ...]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = allowed_keys(model, loc[:-1])
        return f"unknown key (expected one of: {', '.join(allowed)})" if allowed else "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {_kind(err.get('input'))}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}, got {_short(err.get('input'))}"
    if kind == "greater_than":
        return f"must be greater than {_num(ctx['gt'])}"
    if kind == "greater_than_equal":
        return f"must be at least {_num(ctx['ge'])}"
    if kind == "less_than_equal":
        return f"must be at most {_num(ctx['le'])}"
    if kind == "less_than":
        return f"must be less than {_num(ctx['lt'])}"
    if kind == "string_pattern_mismatch":
        return f"{_short(err.get('input'))} does not match the expected form {ctx.get('pattern')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"expected 'kind' to be one of {ctx.get('expected_tags', '?')}"
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _num(value: Any) -> str:
    """``0.0`` → ``0``; other values unchanged."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {value!s}".lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {_short(value)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys accepted at ``loc`` inside ``model`` (follows nested models, dicts, lists and unions)."""
    target: Any = model
    for part in loc:
        target = _step(target, part)
        if target is None:
            return []
    models = _models_in(target)
    keys: set[str] = set()
    for m in models:
        keys.update(f.alias or name for name, f in m.model_fields.items())
    return sorted(keys)


def _step(annotation: Any, part: str | int) -> Any:
    for m in _models_in(annotation):
        for name, field in m.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
    for inner in _containers_in(annotation):
        return inner
    return None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in _union_args(annotation):
        out.extend(_models_in(arg))
    return out


def _containers_in(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (dict, Mapping) and len(args) == 2:
        return [args[1]]
    if origin in (list, tuple, Sequence) and args:
        return [args[0]]
    out: list[Any] = []
    for arg in _union_args(annotation):
        out.extend(_containers_in(arg))
    return out


def _union_args(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return (typing.get_args(annotation)[0],)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return ()
