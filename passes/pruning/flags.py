"""``--prune`` and friends: one definition for CLI flags, API keywords and recipe [options]."""

from __future__ import annotations

import argparse
from typing import Any, Mapping

from onnxslim.core.flags import FlagGroup
from onnxslim.core.recipe import Step
from onnxslim.errors import ConfigError

METHODS = {"magnitude": "prune-magnitude", "nm": "prune-nm", "channel": "prune-channels"}
NAMES = ("prune", "prune_method", "prune_skip", "prune_first_last", "prune_overrides", "prune_scope",
         "prune_pattern", "prune_importance", "reconstruct")


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--prune", type=float, default=None, metavar="AMOUNT",
                       help="prune this fraction of weights (magnitude) or channels (channel), 0 <= AMOUNT < 1")
    group.add_argument("--prune-method", choices=sorted(METHODS), default=None,
                       help="magnitude: unstructured L1; nm: N:M sparsity (see --prune-pattern); channel: remove "
                            "whole channels, shrinking tensors (default magnitude)")
    group.add_argument("--prune-skip", default=None, metavar="NAMES",
                       help="comma-separated node names (or regular expressions) never pruned")
    group.add_argument("--prune-first-last", action="store_true", default=None,
                       help="also prune the first and last prunable layers (skipped by default)")
    group.add_argument("--prune-overrides", default=None, metavar="NAME=AMOUNT,...",
                       help="per-layer amounts; NAME may be a regular expression (nm: NAME=0 leaves a layer dense, "
                            "another amount prunes it N:M)")
    group.add_argument("--prune-scope", choices=("layer", "global"), default=None,
                       help="magnitude: one threshold per layer (default) or one for all layers")
    group.add_argument("--prune-pattern", default=None, metavar="N:M", help="nm: keep N of every M weights (default 2:4)")
    group.add_argument("--prune-importance", choices=("auto", "magnitude", "activation"), default=None,
                       help="rank by weight magnitude or by activation-weighted magnitude (auto: activation "
                            "when --calibration-data is given)")
    group.add_argument("--reconstruct", action="store_true", default=None,
                       help="refit pruned layers by least squares to the original outputs (needs --calibration-data)")


def to_steps(options: Mapping[str, Any]) -> list[Step]:
    if options.get("prune") is None:
        raise ConfigError(f"{', '.join(sorted(options))} need(s) --prune AMOUNT")
    method = options.get("prune_method") or "magnitude"
    if method not in METHODS:
        raise ConfigError(f"prune_method: expected one of {', '.join(METHODS)}, got {method!r}")
    settings: dict[str, Any] = {"amount": options["prune"]}
    renames = {"prune_skip": "skip", "prune_overrides": "overrides", "prune_importance": "importance",
               "reconstruct": "reconstruct", "prune_scope": "scope"}
    settings.update({new: options[old] for old, new in renames.items() if options.get(old) is not None})
    if options.get("prune_first_last"):
        settings["skip_first_last"] = False
    if "scope" in settings and method != "magnitude":
        raise ConfigError("prune_scope applies to prune_method 'magnitude' only")
    if options.get("prune_pattern") is not None:
        if method != "nm":
            raise ConfigError("prune_pattern applies to prune_method 'nm' only")
        settings.update(parse_pattern(str(options["prune_pattern"])))
    return [Step(METHODS[method], settings)]


def parse_pattern(text: str) -> dict[str, int]:
    n, sep, m = text.partition(":")
    if not sep or not n.strip().isdigit() or not m.strip().isdigit():
        raise ConfigError(f"prune_pattern: expected N:M such as 2:4, got {text!r}")
    return {"n": int(n), "m": int(m)}


PRUNING_FLAGS = FlagGroup(title="pruning", names=NAMES, add_arguments=add_arguments, to_steps=to_steps)
