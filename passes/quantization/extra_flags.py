"""Options of the float16 and weight-only passes, merged into the quantization FlagGroup (flags.py)."""

from __future__ import annotations

import argparse
from typing import Any, Mapping

from onnxslim.core.recipe import Step
from onnxslim.errors import ConfigError

EXTRA_NAMES = ("fp16", "fp16_keep_float", "quantize_weights", "quantize_block_size")


def add_extra_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--fp16", action="store_const", const=True, default=None,
                       help="float16 weights and activations (GPU targets); graph inputs/outputs stay float32")
    group.add_argument("--fp16-keep-float", metavar="OPS", default=None,
                       help="with --fp16: comma-separated op types / node names kept float32 "
                            "(default: onnxruntime's list plus Exp, Pow, Reduce*, Log, Sqrt...)")
    group.add_argument("--quantize-weights", choices=("int4", "int8"), default=None,
                       help="weight-only block-wise MatMul quantization (ONNX Runtime's MatMulNBits)")
    group.add_argument("--quantize-block-size", metavar="N", type=int, default=None,
                       help="with --quantize-weights: rows of K sharing one scale (16, 32, 64, 128 or 256; default 32)")


def extra_steps(options: Mapping[str, Any]) -> list[Step]:
    """Steps for --fp16 / --quantize-weights; each excludes --quantize and the other."""
    if options.get("quantize") is not None:  # name the flag that was given
        given = [name for name in EXTRA_NAMES if options.get(name) is not None and options.get(name) is not False]
        extra = "--" + (given[0] if given else "quantize_weights").replace("_", "-")
        raise ConfigError(f"{extra} cannot be combined with --quantize {options['quantize']}")
    fp16 = options.get("fp16") or options.get("fp16_keep_float") is not None
    if fp16 and options.get("quantize_weights"):
        raise ConfigError("--fp16 and --quantize-weights cannot be combined (MatMulNBits weights are already packed)")
    if fp16:
        if not options.get("fp16"):
            raise ConfigError("--fp16-keep-float given without --fp16")
        unrelated = [k for k in options if k not in ("fp16", "fp16_keep_float")]
        if unrelated:
            raise ConfigError(f"--{unrelated[0].replace('_', '-')} does not apply to --fp16")
        settings = {"keep_float": options["fp16_keep_float"]} if options.get("fp16_keep_float") else {}
        return [Step("convert-fp16", settings)]
    if not options.get("quantize_weights"):
        raise ConfigError("--quantize-block-size given without --quantize-weights int4|int8")
    if options["quantize_weights"] not in ("int4", "int8"):
        raise ConfigError(f"--quantize-weights: expected 'int4' or 'int8', got {options['quantize_weights']!r}")
    settings: dict[str, Any] = {"bits": 4 if options["quantize_weights"] == "int4" else 8}
    if options.get("quantize_block_size") is not None:
        settings["block_size"] = int(options["quantize_block_size"])
    for option, key in (("quantize_include", "include"), ("quantize_exclude", "exclude")):
        if options.get(option):
            settings[key] = options[option]
    unrelated = [k for k in options if k not in ("quantize_weights", "quantize_block_size", "quantize_include",
                                                  "quantize_exclude")]
    if unrelated:
        raise ConfigError(f"--{unrelated[0].replace('_', '-')} does not apply to --quantize-weights")
    return [Step("quantize-weights", settings)]
