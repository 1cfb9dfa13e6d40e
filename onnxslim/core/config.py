"""Typed pass settings: dataclasses built from plain mappings (CLI flags, recipe tables)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

from onnxslim.errors import ConfigError


def build_config(config_cls: type, options: Mapping[str, Any], *, where: str) -> Any:
    """Creates ``config_cls`` from ``options``, rejecting unknown keys and wrong types."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        known = ", ".join(fields) or "none"
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} (known: {known})", where=where)
    hints = typing.get_type_hints(config_cls)
    values = {key: _coerce(value, hints[key], where=f"{where}.{key}") for key, value in options.items()}
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), where=where) from None


def _coerce(value: Any, hint: Any, *, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where=where)
            except ConfigError:
                continue
        raise ConfigError(f"expected {_describe(hint)}, got {value!r}", where=where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"expected one of {', '.join(map(repr, args))}, got {value!r}", where=where)
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}", where=where)
        item = args[0] if args else Any
        return tuple(_coerce(v, item, where=where) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"expected true or false, got {value!r}", where=where)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"expected an integer, got {value!r}", where=where)
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"expected an integer, got {value!r}", where=where) from None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"expected a number, got {value!r}", where=where)
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"expected a number, got {value!r}", where=where) from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", where=where)
        return value
    return value


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def describe_fields(config_cls: type) -> list[dict[str, Any]]:
    """Name, type and default of each setting, for `onnxslim passes`."""
    hints = typing.get_type_hints(config_cls)
    rows = []
    for field in dataclasses.fields(config_cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        rows.append({"name": field.name, "type": _describe(hints[field.name]), "default": default})
    return rows
