"""Pass lookup by name."""

from __future__ import annotations

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
