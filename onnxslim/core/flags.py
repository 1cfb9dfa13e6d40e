"""Pass families' options: one definition serves CLI flags, API keywords and recipe [options].

A family (pruning, low rank, quantization...) declares the option names it owns and how their
values become pipeline steps. The CLI adds its flags (argparse ``dest`` = the option name),
the API accepts the same names as keywords, a recipe's ``[options]`` table the same keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any, Callable, Mapping, Sequence

from onnxslim.core.recipe import Step
from onnxslim.errors import ConfigError, OnnxSlimError


@dataclasses.dataclass(frozen=True)
class FlagGroup:
    title: str
    names: tuple[str, ...]
    """Option names, as API keywords and recipe keys; CLI flags use the same names with dashes."""
    add_arguments: Callable[[argparse._ArgumentGroup], None]
    """Adds the flags; every flag must default to None (unset)."""
    to_steps: Callable[[Mapping[str, Any]], list[Step]]
    """The steps the given (non-None) options ask for, in the order they must run."""


def family_groups() -> tuple[FlagGroup, ...]:
    from onnxslim.passes import FLAG_GROUPS

    return FLAG_GROUPS


def option_names() -> set[str]:
    return {name for group in family_groups() for name in group.names}


def family_steps(options: Mapping[str, Any]) -> list[Step]:
    """Steps of every family whose options were given, in the families' fixed order."""
    unknown = sorted(set(options) - option_names())
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}")
    steps: list[Step] = []
    for group in family_groups():
        given = {k: options[k] for k in group.names if options.get(k) is not None}
        if given:
            steps.extend(group.to_steps(given))
    return steps


def add_family_arguments(parser: argparse.ArgumentParser) -> None:
    for group in family_groups():
        group.add_arguments(parser.add_argument_group(group.title))


def family_values(args: argparse.Namespace, groups: Sequence[FlagGroup] | None = None) -> dict[str, Any]:
    return {name: getattr(args, name) for group in (groups or family_groups()) for name in group.names}


def recipe_family_steps(options: Mapping[str, Any], recipe: Any, given: Mapping[str, Any]) -> list[Step]:
    """The families' steps. Their errors are worded with CLI flags ("--calibration-method applies to
    --quantize static only"); one that concerns an option the recipe set (and the caller did not
    override) names the recipe and that key, as errors in its [[pass]] tables do."""
    try:
        return family_steps({k: v for k, v in options.items() if k in option_names()})
    except OnnxSlimError as exc:
        key = _recipe_key_named(exc.message, recipe, given) if exc.path is None else None
        if key is None:
            raise
        raise type(exc)(exc.message, path=recipe.path, where=f"[options] {key}") from None


def _recipe_key_named(message: str, recipe: Any, given: Mapping[str, Any]) -> str | None:
    """The first family option in ``message`` (as its flag) that came from ``recipe``; when the
    message names none, the recipe's first family option if the caller gave none."""
    if recipe is None:
        return None
    from_recipe = [k for k in recipe.options if k in option_names() and given.get(k) is None]
    mentioned = [(match.start(), k) for k in from_recipe
                 if (match := re.search(rf"--{re.escape(k.replace('_', '-'))}(?![\w-])", message))]
    if mentioned:
        return min(mentioned)[1]
    caller_gave = any(given.get(k) is not None for k in option_names())
    return from_recipe[0] if from_recipe and not caller_gave else None
