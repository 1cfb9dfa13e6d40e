"""Typed pass settings: dataclasses built from plain mappings (CLI flags, recipe tables).

Values must already have their field's type, as TOML and Python write them: a quoted ``"false"``,
``"0.5"`` or ``"1000"`` is a string, not a bool or a number. The one textual form accepted is a
list written as comma-separated text (``"Softmax,/head/Concat"``, ``"1,3,224,224"``), the form
the CLI's flags take; its items are then parsed.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from typing import Any, Mapping

from onnxslim.errors import ConfigError


def build_config(config_cls: type, options: Mapping[str, Any], *, where: str) -> Any:
    """Creates ``config_cls`` from ``options``, rejecting unknown keys and wrong types."""
    values = check_settings(config_cls, options, where=where)
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), where=where) from None


def check_settings(config_cls: type, options: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """``options`` as values of ``config_cls``'s fields; unknown keys and wrongly typed values raise ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        known = ", ".join(fields) or "none"
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} (known: {known})", where=where)
    hints = typing.get_type_hints(config_cls)
    return {key: coerce(value, hints[key], where=f"{where}.{key}") for key, value in options.items()}


def coerce(value: Any, hint: Any, *, where: str, text: bool = False) -> Any:
    """``value`` as the type ``hint`` describes (bool, int, float, str, Literal, tuple/list, dict, unions).

    Raises ConfigError naming ``where`` and the expected type. ``text``: the value is an item of a
    comma-separated string, so numbers and bools are parsed from it.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where=where, text=text)
            except ConfigError:
                continue
        raise _wrong_type(value, hint, where, text=text)
    if origin is typing.Literal:
        for allowed in args:
            if type(value) is type(allowed) and value == allowed:
                return allowed
            if text and isinstance(value, str) and value == str(allowed):
                return allowed
        raise _wrong_type(value, hint, where, text=text)
    if origin in (tuple, list):
        return _coerce_items(value, hint, where=where)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise _wrong_type(value, hint, where, text=text)
        key_hint, item_hint = args or (str, Any)
        return {coerce(k, key_hint, where=where): coerce(v, item_hint, where=f"{where}.{k}") for k, v in value.items()}
    if hint in (bool, int, float, str):
        return _coerce_scalar(value, hint, where=where, text=text)
    return value


def _coerce_items(value: Any, hint: Any, *, where: str) -> tuple:
    text = isinstance(value, str)
    items = [v.strip() for v in value.split(",") if v.strip()] if text else value  # "Conv, Gemm": two names
    if not isinstance(items, (list, tuple)):
        raise _wrong_type(value, hint, where)
    args = typing.get_args(hint)
    item = args[0] if args else Any
    try:
        return tuple(coerce(v, item, where=where, text=text) for v in items)
    except ConfigError:
        raise _wrong_type(value, hint, where, text=True) from None


def _coerce_scalar(value: Any, hint: type, *, where: str, text: bool) -> Any:
    if text and isinstance(value, str) and hint is not str:
        parsed = _parse(value, hint)
        if parsed is not None:
            return parsed
        raise _wrong_type(value, hint, where, text=True)
    if hint is bool and isinstance(value, bool):
        return value
    # numbers.*, not int/float: an API caller's numpy scalar (np.int64(8)) is a number too
    if hint is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if hint is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise _wrong_type(value, hint, where, text=text)


def _parse(text: str, hint: type) -> Any:
    """A bool or number written as text (an item of a comma-separated list), or None."""
    word = text.strip().lower()
    if hint is bool:
        return {"true": True, "false": False}.get(word)
    try:
        return hint(word)
    except ValueError:
        return None


def _wrong_type(value: Any, hint: Any, where: str, *, text: bool = False) -> ConfigError:
    note = ""
    if isinstance(value, str) and not text:  # "0.5" for a number, "false" for a bool: say what is wrong
        try:
            coerce(value, hint, where=where, text=True)
            note = " (a string: write it without quotes)"
        except ConfigError:
            pass
    return ConfigError(f"expected {expected(hint)}, got {value!r}{note}", where=where)


_WORDS = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
          str: ("a string", "strings")}


def expected(hint: Any) -> str:
    """What a value of type ``hint`` looks like, in words: "a number", "a list of strings"..."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(expected(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (tuple, list):
        item = args[0] if args else Any
        return f"a list of {_WORDS[item][1] if item in _WORDS else 'values'} (or comma-separated text)"
    if origin is dict or hint is dict:
        return "a table"
    if hint in _WORDS:
        return _WORDS[hint][0]
    return _describe(hint)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:  # the choices, not "Literal"
        return " | ".join(repr(choice) for choice in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def describe_fields(config_cls: type) -> list[dict[str, Any]]:
    """Name, type and default of each setting, for `onnxslim passes`."""
    hints = typing.get_type_hints(config_cls)
    rows = []
    for field in dataclasses.fields(config_cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        rows.append({"name": field.name, "type": _describe(hints[field.name]), "default": default})
    return rows
