"""A generic typed loader: dataclasses from YAML settings, checked, and their JSON schema.

A field's choices are its type (``Literal[...]``) and its bounds JSON-schema keywords in its type
(``Annotated[int, MIN1]``): `from_dict` enforces both, `json_schema` writes them out, and errors
name the dotted field and the value. A `late` field (added after studies were run) is left out
of `to_dict` while it holds its default, so that `config_hash` stays what it was. Nothing here
knows the study: its keys are `detnas.plan.config`'s dataclasses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

# Bounds, for ``Annotated[int, MIN1]`` and the like
MIN0 = {"minimum": 0}
MIN1 = {"minimum": 1}
MIN2 = {"minimum": 2}
PROB = {"minimum": 0, "maximum": 1}
FRACTION = {"exclusiveMinimum": 0, "maximum": 1}
DROP = {"minimum": 0, "exclusiveMaximum": 1}
POSITIVE = {"exclusiveMinimum": 0}

def late(default_factory) -> Any:
    """A field added after studies were run: left out of the resolved config (`to_dict`) while it
    holds its default, so that those studies keep the config hash and fingerprints their
    finished stages carry."""
    return field(default_factory=default_factory, metadata={"late": True})


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against type ``tp`` (recursing into dataclasses, lists and dicts)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        inner, *bounds = typing.get_args(tp)
        value = _convert(inner, value, where)
        for bound in bounds:
            _check_bounds(value, bound, where)
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):  # the first option the value is
        if value is None and type(None) in typing.get_args(tp):
            return None
        errors = []
        for option in (a for a in typing.get_args(tp) if a is not type(None)):
            try:
                return _convert(option, value, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(" or ".join(errors))
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        key, item = typing.get_args(tp)
        return {_convert(key, str(k), f"{where}.{k}"): _convert(item, v, f"{where}.{k}")
                for k, v in value.items()}
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{where}: {value!r} ({', '.join(map(str, typing.get_args(tp)))})")
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")


_BOUNDS = {  # JSON-schema keyword -> (holds, how the error says it)
    "minimum": (lambda v, b: v >= b, ">="), "maximum": (lambda v, b: v <= b, "<="),
    "exclusiveMinimum": (lambda v, b: v > b, ">"), "exclusiveMaximum": (lambda v, b: v < b, "<"),
    "minItems": (lambda v, b: len(v) >= b, "items >="),
}


def _check_bounds(value: Any, bound: dict, where: str) -> None:
    for keyword, limit in bound.items():
        holds, says = _BOUNDS[keyword]
        if not holds(value, limit):
            raise ValueError(f"{where}: {value!r} (must be {says} {limit})")


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types, choices (Literal) and
    bounds (Annotated) raise ValueError."""
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})"
        )
    return cls(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()})


def set_overrides(data: dict, overrides: list[str]) -> None:
    """Set each ``dotted.key=yaml_value`` of ``overrides`` (``--set``) in the settings ``data``.

    Raises:
        ValueError: an override that is not key=YAML, said of its ``--set``.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        try:
            set_dotted(data, key, yaml.safe_load(value))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at column {mark.column + 1} of the value" if mark else ""
            problem = getattr(e, "problem", None) or " ".join(str(e).split())
            raise ValueError(f"--set {item}: not valid YAML{at}: {problem}") from None


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``dotted`` ``a.b.c``, making the mappings on the way."""
    keys = dotted.split(".")
    for k in keys[:-1]:
        data = data.setdefault(k, {})
    data[keys[-1]] = value


def blame_override(message: str, where: str, overrides: list[str]) -> str:
    """``message`` (``<where>[.<field>]: ...``) said of the ``--set`` that gave the field, where
    one did: the value came from the command line, not from the file ``where``."""
    head = message.split(": ", 1)[0]
    field = "" if head == where else head.removeprefix(f"{where}.")
    for item in reversed(overrides):  # the last --set of a key wins
        key = item.partition("=")[0]
        below = key.removeprefix(f"{field}.") if field else key  # the key under the field
        unknown = below != key or not field
        if field == key or field.startswith((f"{key}.", f"{key}[")) or (
                unknown and f"unknown key {below.split('.')[0]!r}" in message):
            detail = message[len(head) + 2:]
            return f"--set {item}: {f'{field}: ' if field else ''}{detail}"
    return message


def yaml_error(source: str | Path, e: yaml.YAMLError) -> str:
    """PyYAML's error ``e`` (several lines, its position in ``"<unicode string>"``) as one line,
    ``SOURCE:LINE:COLUMN: problem (context, at LINE:COLUMN)``, as compilers say it."""
    mark = getattr(e, "problem_mark", None)
    if mark is None:
        return f"{source}: not valid YAML: {' '.join(str(e).split())}"
    problem = getattr(e, "problem", None) or "not valid YAML"
    text = f"{source}:{mark.line + 1}:{mark.column + 1}: {problem}"
    context, at = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context:
        text += f" ({context}" + (f", at {at.line + 1}:{at.column + 1})" if at else ")")
    return text


def to_dict(cfg: Any) -> dict:
    """A config as plain data, without the `late` fields that hold their default: a study keeps
    the resolved config, hash and fingerprints it had before those fields existed (its finished
    stages stay valid)."""
    data = dataclasses.asdict(cfg)
    _drop_late_defaults(cfg, data)
    return data


def _drop_late_defaults(obj: Any, data: Any) -> None:
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            if f.metadata.get("late") and value == default:
                del data[f.name]
            else:
                _drop_late_defaults(value, data[f.name])
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _drop_late_defaults(value, data[key])
    elif isinstance(obj, (list, tuple)):
        for value, item in zip(obj, data, strict=True):
            _drop_late_defaults(value, item)


def config_hash(cfg: Any) -> str:
    """A short stable hash of a (resolved) config or its dict, for tags and provenance."""
    text = json.dumps(cfg if isinstance(cfg, dict) else to_dict(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _field_comments(cls: type) -> dict[str, str]:
    """The comment of each field in ``cls``'s source (its line's, and the ``#`` lines below it)."""
    import inspect
    import re

    comments: dict[str, list[str]] = {}
    name = None
    for line in inspect.getsource(cls).splitlines():
        if m := re.match(r"    (\w+): [^#]*?(?:  # (.*))?$", line):
            name = m[1]
            comments[name] = [m[2]] if m[2] else []
        elif name and (m := re.match(r"    # (.*)", line)):
            comments[name].append(m[1])
        else:
            name = None
    return {k: " ".join(v) for k, v in comments.items() if v}


def _type_schema(tp: Any, defs: dict) -> dict:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        inner, *bounds = typing.get_args(tp)
        node = _type_schema(inner, defs)
        for bound in bounds:
            node.update(bound)
        return node
    if dataclasses.is_dataclass(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # reserved: a dataclass is described once
            defs[tp.__name__] = _dataclass_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [{"type": "null"} if a is type(None) else _type_schema(a, defs)
                          for a in typing.get_args(tp)]}
    if origin is list:
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0], defs)}
    if origin is dict:
        key, item = typing.get_args(tp)
        node = {"type": "object", "additionalProperties": _type_schema(item, defs)}
        if key is not str:
            node["propertyNames"] = _type_schema(key, defs)
        return node
    return {"type": {int: "integer", float: "number", str: "string", bool: "boolean"}[tp]}


def _dataclass_schema(cls: type, defs: dict) -> dict:
    hints = typing.get_type_hints(cls, include_extras=True)
    comments = _field_comments(cls)
    props = {}
    for f in dataclasses.fields(cls):
        props[f.name] = _type_schema(hints[f.name], defs)
        if f.name in comments:
            props[f.name]["description"] = comments[f.name]
    node = {"type": "object", "additionalProperties": False, "properties": props}
    if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):  # not dataclass's own
        node["description"] = cls.__doc__.strip()
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        node["required"] = required
    return node


def json_schema(cls: type) -> dict:
    """The JSON schema (draft 2020-12) of dataclass ``cls``: its keys, their types, choices
    (Literal) and bounds (Annotated), and their comments; every dataclass below it once, under
    ``$defs``."""
    defs: dict = {}
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              **_dataclass_schema(cls, defs)}
    schema["$defs"] = defs
    return schema
