"""Pass lookup by name."""

from __future__ import annotations

from typing import Any, Mapping

from onnxslim.core.config import build_config
from onnxslim.core.pass_base import Pass
from onnxslim.errors import UnknownPassError


def all_passes() -> dict[str, type[Pass]]:
    from onnxslim.passes import ALL_PASSES

    return {cls.name: cls for cls in ALL_PASSES}


def get_pass(name: str) -> type[Pass]:
    registry = all_passes()
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise UnknownPassError(f"unknown pass {name!r} (available: {known})") from None


def check_pass_settings(name: str, options: Mapping[str, Any]) -> None:
    """Raises when ``name`` is no registered pass or ``options`` are not valid settings of it
    (unknown keys, wrong types, values its config rejects). Builds no pass: what a pass needs
    from its context (calibration data) is checked when it is built."""
    build_config(get_pass(name).Config, options, where=f"pass {name}")
