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
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from onnxslim.core.pass_base import Pass, PassContext
from onnxslim.core.registry import get_pass
from onnxslim.errors import OnnxSlimError, RecipeError

SIMPLIFY = "simplify"


@dataclasses.dataclass
class Step:
    name: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    instance: Pass | None = None
    """A pass object given through the API (tests, plugins) instead of a registered name."""


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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"not valid TOML: {exc}", path=path) from None
    return parse_recipe(data, path=path)


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
        steps.append(Step(entry["name"], settings))
    recipe = Recipe(steps, dict(options), path)
    try:
        build_passes(recipe.steps)  # bad names and settings fail before any work
    except OnnxSlimError as exc:
        error_type = type(exc) if isinstance(exc, RecipeError) else RecipeError
        raise error_type(exc.message, path=path, where=exc.where) from None
    return recipe


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
    return [step.instance or get_pass(step.name).from_options(step.options, context) for step in _expand(steps)]
