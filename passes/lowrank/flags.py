"""CLI flags / API keywords / recipe options of the low-rank family, as pipeline steps."""

from __future__ import annotations

import argparse
from typing import Any, Mapping

from onnxslim.core.flags import FlagGroup
from onnxslim.core.recipe import Step
from onnxslim.errors import ConfigError

AUTO_MIN_COSINE = 0.99
"""The floor of ``--lowrank auto`` when ``--lowrank-min-cosine`` is not given."""


def _add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--lowrank", metavar="ENERGY|auto", default=None,
                       help="split MatMul/Gemm/1x1-Conv weights keeping ENERGY (e.g. 0.95) of each one's singular-value "
                            "energy; 'auto': the largest cut meeting --lowrank-min-cosine on held-out calibration samples")
    group.add_argument("--lowrank-rank", type=int, metavar="R", default=None, help="split every weight at rank R")
    group.add_argument("--lowrank-params", type=float, metavar="FRACTION", default=None,
                       help="keep FRACTION of the splittable weights' parameters, ranks allocated per layer")
    group.add_argument("--lowrank-min-cosine", type=float, metavar="X", default=None,
                       help="with --lowrank auto (needs it): lowest mean output cosine on the held-out calibration samples, "
                            f"with each output's SNR at the level validation pairs with it (default {AUTO_MIN_COSINE}: 17 dB)")
    group.add_argument("--lowrank-method", choices=("auto", "plain", "whitened"), default=None,
                       help="whitened (activation-aware) needs --calibration-data; auto uses it when given (default)")
    group.add_argument("--lowrank-refit", choices=("none", "oneshot", "sequential"), default=None,
                       help="with calibration data, refit the factors to the original layer outputs given the split "
                            "model's own inputs (default sequential)")


def _to_steps(options: Mapping[str, Any]) -> list[Step]:
    if all(options.get(k) is None for k in ("lowrank", "lowrank_rank", "lowrank_params")):
        # a setting alone must not start a lossy split the user did not ask for
        raise ConfigError(f"{', '.join(sorted(options))} need(s) --lowrank ENERGY|auto, --lowrank-rank or --lowrank-params")
    settings: dict[str, Any] = {}
    value = options.get("lowrank")
    auto = isinstance(value, str) and value.strip().lower() == "auto"
    if value is not None and not auto:
        try:
            settings["energy"] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"lowrank: expected an energy fraction or 'auto', got {value!r}") from None
    if options.get("lowrank_rank") is not None:
        settings["rank"] = options["lowrank_rank"]
    if options.get("lowrank_params") is not None:
        settings["params"] = options["lowrank_params"]
    if auto or options.get("lowrank_min_cosine") is not None:
        given = options.get("lowrank_min_cosine")  # 0 is the user's (and refused by the pass), not "unset"
        settings["min_cosine"] = AUTO_MIN_COSINE if given is None else given
    modes = [k for k in ("energy", "rank", "params", "min_cosine") if k in settings]
    if len(modes) > 1:
        raise ConfigError(f"low rank: give one of --lowrank ENERGY|auto, --lowrank-rank, --lowrank-params (got {len(modes)})")
    if options.get("lowrank_method") is not None:
        settings["method"] = options["lowrank_method"]
    if options.get("lowrank_refit") is not None:
        settings["refit"] = options["lowrank_refit"]
    return [Step("split-lowrank", settings)]


LOWRANK_FLAGS = FlagGroup(
    title="low rank",
    names=("lowrank", "lowrank_rank", "lowrank_params", "lowrank_min_cosine", "lowrank_method", "lowrank_refit"),
    add_arguments=_add_arguments,
    to_steps=_to_steps,
)
