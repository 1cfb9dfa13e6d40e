"""Pipelines as data: recipe files (TOML) and the steps they describe.

A recipe has an optional ``[options]`` table (the same names as the API's keyword arguments)
and an ordered array of ``[[pass]]`` tables, each with ``name`` and that pass's settings::

    [options]
    simplify = true
    strict = true

    [[pass]]
    name = "fold-constants"
    output_size_limit = 1000000

The pseudo-pass ``simplify`` expands to the default cleanup pipeline.

Relative paths in ``[options]`` (``calibration_data``, ``calibration_cache``, ``validation``'s
``data`` and ``html``) are relative to the recipe file's folder (``load_recipe``).

Loading a recipe checks its structure: tables, pass names, and every value against its type
(``[options]`` against the API's keywords and the families' flags, ``[[pass]]`` settings against
the pass's config dataclass). What a pass needs besides its settings (calibration data, which
the CLI or API may give) is checked when the pipeline is built with its context.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from onnxslim.core.config import check_settings, coerce
from onnxslim.core.pass_base import Pass, PassContext
from onnxslim.core.registry import check_pass_settings, get_pass
from onnxslim.errors import ConfigError, OnnxSlimError, RecipeError, first_line
from onnxslim.input_shapes import checked_input_shapes

SIMPLIFY = "simplify"

OPTION_TYPES: dict[str, Any] = {
    "simplify": bool,
    "validate": bool,
    "strict": bool,
    "input_shapes": dict[str, tuple[int, ...]],
    "calibration_data": str,
    "calibration_samples": int,
    "calibration_preprocess": str,
    "calibration_cache": str,
}
"""Types of the ``[options]`` keys besides ``validation`` (ValidationOptions' fields) and the
families' options (typed by their CLI flags)."""

RECIPE_FORMS: dict[str, Any] = {
    "lowrank": float | Literal["auto"],
    "prune_skip": tuple[str, ...],
    "prune_overrides": tuple[str, ...],
    "quantize_include": tuple[str, ...],
    "quantize_exclude": tuple[str, ...],
    "fp16_keep_float": tuple[str, ...],
}
"""Family options whose CLI flag takes text but whose recipe value may be a number or a list."""


@dataclasses.dataclass
class Step:
    name: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    instance: Pass | None = None
    """A pass object given through the API (tests, plugins) instead of a registered name."""
    source: Path | None = None
    """The recipe file the step comes from: errors found when its pass is built name that file."""


@dataclasses.dataclass
class Recipe:
    steps: list[Step]
    options: dict[str, Any]
    path: Path | None = None


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError("recipe file not found", path=path) from None
    except IsADirectoryError:
        raise RecipeError("recipe path is a folder; give a .toml file", path=path) from None
    except OSError as exc:  # unreadable (permissions, I/O): the input's problem, not a bug
        raise RecipeError(f"cannot read the recipe: {exc.strerror or first_line(exc)}", path=path) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"not valid TOML: {exc}", path=path) from None
    recipe = parse_recipe(data, path=path)
    recipe.options = relative_to(recipe.options, path.parent)
    return recipe


RECIPE_PATHS = ("calibration_data", "calibration_cache")
"""``[options]`` keys that are paths; ``validation``'s are VALIDATION_PATHS."""
VALIDATION_PATHS = ("data", "html")


def relative_to(options: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """``options`` with each relative path taken as relative to ``folder``, the recipe's own: a
    recipe kept beside its data means the same from any working directory (a CI job's, a
    developer's). Absolute paths stay as written."""
    def resolved(value: Any) -> Any:
        return str(folder / value) if isinstance(value, str) and not Path(value).is_absolute() else value

    options = {k: resolved(v) if k in RECIPE_PATHS else v for k, v in options.items()}
    if isinstance(options.get("validation"), Mapping):
        options["validation"] = {k: resolved(v) if k in VALIDATION_PATHS else v for k, v in options["validation"].items()}
    return options


def parse_recipe(data: Mapping[str, Any], *, path: Path | None = None) -> Recipe:
    unknown = sorted(set(data) - {"options", "pass"})
    if unknown:
        raise RecipeError(f"unknown table(s) {', '.join(unknown)} (expected [options] and [[pass]])", path=path)
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise RecipeError("[options] must be a table", path=path)
    entries = data.get("pass", [])
    if not isinstance(entries, list):
        raise RecipeError("passes are written as [[pass]] tables", path=path)
    steps = []
    for index, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise RecipeError(f"[[pass]] number {index} needs a name = \"...\"", path=path)
        settings = {k: v for k, v in entry.items() if k != "name"}
        steps.append(Step(entry["name"], settings, source=path))
    try:
        recipe = Recipe(steps, check_options(options), path)
        check_steps(recipe.steps)  # bad names, settings and types fail before any work
    except OnnxSlimError as exc:
        error_type = type(exc) if isinstance(exc, RecipeError) else RecipeError
        raise error_type(exc.message, path=path, where=exc.where) from None
    return recipe


def check_options(options: Mapping[str, Any], *, label: str = "[options] ", flag_text: bool = False) -> dict[str, Any]:
    """``[options]`` values checked against their types; core options come back as those types
    (``input_shapes = { x = "1,3,224,224" }`` as a tuple), family options as written. Unknown keys
    are left to the API, which knows every name. The API checks its keyword options here too
    (``label=""``): ``strict="false"`` is no more true there than in a recipe. ``flag_text``: a
    family option may also be its CLI flag's text (``lowrank="0.95"``), as the CLI hands it on."""
    checked = dict(options)
    families = _family_option_types()
    for key, value in options.items():
        where = f"{label}{key}"
        if key == "validation":
            checked[key] = check_validation(value, where=where)
        elif key == "input_shapes":
            checked[key] = checked_input_shapes(value, where=where)
        elif key in OPTION_TYPES:
            checked[key] = coerce(value, OPTION_TYPES[key], where=where)
            if key == "calibration_samples" and checked[key] < 1:  # else the data reader says it, naming the flag
                raise ConfigError(f"expected a sample count of at least 1, got {checked[key]}", where=where)
        elif key in families:
            coerce(value, families[key] | str if flag_text and key in RECIPE_FORMS else families[key], where=where)
    return checked


def check_validation(value: Any, *, where: str) -> dict[str, Any]:
    """Validation settings (ValidationOptions' fields) checked against their types."""
    from onnxslim.validation import ValidationOptions

    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a table such as {{ data = \"eval.npz\", atol = 1e-4 }}, got {value!r}", where=where)
    if value.get("input_shapes") is not None:
        value = {**value, "input_shapes": checked_input_shapes(value["input_shapes"], where=f"{where}.input_shapes")}
    checked = check_settings(ValidationOptions, value, where=where)
    for key, (within, meaning) in _THRESHOLDS.items():
        if checked.get(key) is not None and not within(checked[key]):
            raise ConfigError(f"expected {meaning}, got {checked[key]!r}", where=f"{where}.{key}")
    return checked


_THRESHOLDS: dict[str, tuple[Callable[[float], bool], str]] = {
    # written so that NaN is outside every range: a NaN floor would pass or fail everything silently
    "atol": (lambda v: v >= 0, "a tolerance >= 0 (inf: no limit)"),
    "rtol": (lambda v: v >= 0, "a tolerance >= 0 (inf: no limit)"),
    "min_cosine": (lambda v: 0 < v <= 1, "a cosine similarity in (0, 1]"),
    "min_top1": (lambda v: 0 <= v <= 1, "a fraction of samples in [0, 1]"),
    "min_snr": (lambda v: not math.isnan(v), "a number of dB"),
}
"""Ranges of the validation thresholds: a cosine floor of 2 fails every model, one of -3 passes any."""


def _family_option_types() -> dict[str, Any]:
    """The families' option types, read from their CLI flags (one definition serves both)."""
    from onnxslim.core.flags import add_family_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_family_arguments(parser)
    return {action.dest: _flag_type(action) for action in parser._actions}  # argparse has no public accessor


def _flag_type(action: argparse.Action) -> Any:
    """A switch takes true/false, a choice one of its choices, a typed flag its type; text flags a string."""
    if action.dest in RECIPE_FORMS:
        return RECIPE_FORMS[action.dest]
    if isinstance(action, argparse.BooleanOptionalAction) or (action.nargs == 0 and isinstance(action.const, bool)):
        return bool
    if action.choices is not None:
        return Literal[tuple(action.choices)]
    if action.type in (int, float):
        return action.type
    return str


def check_steps(steps: Sequence[Step]) -> None:
    """Pass names and settings checked without building the passes: what a pass needs from its
    context (calibration data) is known only when the pipeline is built (``build_passes``)."""
    for step in _expand(steps):
        if step.instance is None:
            check_pass_settings(step.name, step.options)


def plan_steps(steps: Sequence[Step], *, simplify: bool) -> list[Step]:
    """The recipe's steps with ``simplify`` added in front (or removed) as asked, then expanded."""
    steps = list(steps)
    has_simplify = any(s.name == SIMPLIFY for s in steps)
    if simplify and not has_simplify:
        steps.insert(0, Step(SIMPLIFY))
    if not simplify:
        steps = [s for s in steps if s.name != SIMPLIFY]
    return list(_expand(steps))


def _expand(steps: Iterable[Step]) -> Iterable[Step]:
    from onnxslim.passes import SIMPLIFY_PIPELINE

    for step in steps:
        if step.name == SIMPLIFY:
            if step.options:
                raise RecipeError(f"'{SIMPLIFY}' takes no settings; list its passes instead: {', '.join(SIMPLIFY_PIPELINE)}")
            yield from (Step(name) for name in SIMPLIFY_PIPELINE)
        else:
            yield step


def build_passes(steps: Sequence[Step], context: PassContext | None = None) -> list[Pass]:
    """The passes of ``steps`` with their context; a pass missing what it needs (calibration
    data) raises here, naming the recipe file its step came from."""
    return [_build(step, context) for step in _expand(steps)]


def _build(step: Step, context: PassContext | None) -> Pass:
    if step.instance is not None:
        return step.instance
    try:
        return get_pass(step.name).from_options(step.options, context)
    except OnnxSlimError as exc:
        if step.source is None or exc.path is not None:
            raise
        raise type(exc)(exc.message, path=step.source, where=exc.where) from None
