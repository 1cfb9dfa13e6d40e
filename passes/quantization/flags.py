"""The quantization family's options: ``--quantize dynamic|static`` and its settings."""

from __future__ import annotations

import argparse
from typing import Any, Mapping

from onnxslim.core.flags import FlagGroup
from onnxslim.core.recipe import Step
from onnxslim.errors import ConfigError
from onnxslim.passes.quantization.extra_flags import EXTRA_NAMES, add_extra_arguments, extra_steps

# calibration_cache is a core option (the CLI's calibration group, OPTION_TYPES): any pass that
# calibrates reads it, whichever way it was asked for ([[pass]] quantize-static, --pass, --quantize)
NAMES = ("quantize", "calibration_method", "quantize_per_tensor", "quantize_activations", "quantize_symmetric",
         "quantize_include", "quantize_exclude", "quantize_min_cosine", "quantize_max_accuracy_drop",
         "quantize_smoothing", "quantize_bias_correction", *EXTRA_NAMES)


def _add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--quantize", choices=("dynamic", "static", "auto"), default=None,
                       help="int8: 'static' (QDQ, needs --calibration-data), 'dynamic' (MatMul/Gemm weights only) "
                            "or 'auto' (the one measured fastest here, static only with --calibration-data)")
    group.add_argument("--calibration-method", choices=("minmax", "percentile", "entropy", "mse"), default=None,
                       help="how static activation ranges are chosen (default mse)")
    group.add_argument("--quantize-per-tensor", action="store_const", const=True, default=None,
                       help="one scale per weight tensor instead of per output channel")
    group.add_argument("--quantize-activations", choices=("uint8", "int8"), default=None,
                       help="static activation type (default uint8: fastest on x86 ONNX Runtime)")
    group.add_argument("--quantize-symmetric", action="store_const", const=True, default=None,
                       help="static: symmetric activation ranges (zero point in the middle; Relu then stays float)")
    group.add_argument("--quantize-include", metavar="NAMES", default=None,
                       help="comma-separated node names / op types: quantize only these")
    group.add_argument("--quantize-exclude", metavar="NAMES", default=None,
                       help="comma-separated node names / op types to keep float")
    group.add_argument("--quantize-min-cosine", metavar="X", type=float, default=None,
                       help="static: keep the most error-prone tensors float until the outputs' cosine "
                            "similarity to the float model reaches X (automatic mixed precision)")
    group.add_argument("--quantize-max-accuracy-drop", metavar="X", type=float, default=None,
                       help="static: keep the most error-prone tensors float until top-1 accuracy on the "
                            "labelled calibration data is at most X below float (0.01 = one point)")
    group.add_argument("--quantize-smoothing", metavar="ALPHA", type=float, default=None,
                       help="static: migration strength of activation smoothing into MatMul weights "
                            "(default 0.75; 0 turns it off)")
    group.add_argument("--quantize-bias-correction", action=argparse.BooleanOptionalAction, default=None,
                       help="static: correct the per-channel output shift caused by int8 weights (default: on)")
    add_extra_arguments(group)  # --fp16, --quantize-weights (extra_flags.py)


def _to_steps(options: Mapping[str, Any]) -> list[Step]:
    if any(options.get(name) is not None for name in EXTRA_NAMES):
        return extra_steps(options)
    mode = options.get("quantize")
    if mode is None:
        key = next(iter(options))
        raise ConfigError(f"--{key.replace('_', '-')} given without --quantize {_modes(key)}")
    if mode not in ("static", "dynamic", "auto"):
        raise ConfigError(f"--quantize: expected 'static', 'dynamic' or 'auto', got {mode!r}")
    settings: dict[str, Any] = {}
    if options.get("quantize_per_tensor"):
        settings["per_channel"] = False
    for option, key in (("quantize_include", "include"), ("quantize_exclude", "exclude")):
        if options.get(option):
            settings[key] = options[option]
    if mode == "auto":
        return [Step("expand-inner-softmax"), _auto_step(options, settings)]
    if mode == "dynamic":
        static_only = [k for k in ("calibration_method", "quantize_activations", "quantize_symmetric", "quantize_min_cosine",
                                   "quantize_max_accuracy_drop", "quantize_smoothing",
                                   "quantize_bias_correction") if options.get(k) is not None]
        if static_only:
            raise ConfigError(f"--{static_only[0].replace('_', '-')} applies to --quantize {_modes(static_only[0])} only")
        return [Step("quantize-dynamic", settings)]
    if options.get("calibration_method"):
        settings["method"] = options["calibration_method"]
    if options.get("quantize_activations"):
        settings["activations"] = options["quantize_activations"]
    if options.get("quantize_symmetric"):
        settings["symmetric_activations"] = True
    if options.get("quantize_min_cosine") is not None:
        settings["min_cosine"] = float(options["quantize_min_cosine"])
    if options.get("quantize_max_accuracy_drop") is not None:
        settings["max_accuracy_drop"] = float(options["quantize_max_accuracy_drop"])
    if options.get("quantize_smoothing") is not None:
        settings["smoothing_alpha"] = float(options["quantize_smoothing"])
    if options.get("quantize_bias_correction") is not None:
        settings["bias_correction"] = bool(options["quantize_bias_correction"])
    # int8 targets ONNX Runtime's CPU kernels, whose Softmax is 3.5x slower on an inner axis: on
    # YOLOv8n the quantized model ran 11.5 -> 8.6 ms with its DFL softmax expanded, same detections
    return [Step("expand-inner-softmax"), Step("quantize-static", settings)]


ALL_MODES = frozenset({"quantize_per_tensor", "quantize_include", "quantize_exclude"})
STATIC_AND_AUTO = ALL_MODES | {"calibration_method", "quantize_min_cosine"}


def _modes(key: str) -> str:
    """The --quantize modes a flag applies to (one error must not name a mode another refuses)."""
    return "static|dynamic|auto" if key in ALL_MODES else "static|auto" if key in STATIC_AND_AUTO else "static"


def _auto_step(options: Mapping[str, Any], settings: dict[str, Any]) -> Step:
    """``--quantize auto``: the format choice; ``--quantize-min-cosine`` is its accuracy floor."""
    static_only = [k for k in ("quantize_activations", "quantize_symmetric", "quantize_max_accuracy_drop", "quantize_smoothing",
                               "quantize_bias_correction") if options.get(k) is not None]
    if static_only:
        raise ConfigError(f"--{static_only[0].replace('_', '-')} applies to --quantize {_modes(static_only[0])} only")
    if options.get("calibration_method"):
        settings["method"] = options["calibration_method"]
    if options.get("quantize_min_cosine") is not None:
        settings["min_cosine"] = float(options["quantize_min_cosine"])
    return Step("quantize-auto", settings)


QUANTIZATION_FLAGS = FlagGroup(title="quantization", names=NAMES, add_arguments=_add_arguments, to_steps=_to_steps)
