"""Pass families' options: one definition serves CLI flags, API keywords and recipe [options].

A family (pruning, low rank, quantization...) declares the option names it owns and how their
values become pipeline steps. The CLI adds its flags (argparse ``dest`` = the option name),
the API accepts the same names as keywords, a recipe's ``[options]`` table the same keys.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Mapping, Sequence

from onnxslim.core.recipe import Step
from onnxslim.errors import ConfigError


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
