"""Command-line flags of the validation harness, shared by `onnxslim validate` and `onnxslim optimize`."""

from __future__ import annotations

import argparse
from typing import Any

from onnxslim.input_shapes import parse_input_shapes
from onnxslim.validation.options import CAPTURE_MODES, ValidationOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("validation")
    group.add_argument("--input-shape", action="append", default=[], metavar="NAME:D1,D2,...", help="fix an input's shape (repeatable)")
    group.add_argument("--data", help=".npz (one array per input name, samples along axis 0, optional 'labels'), "
                                      "a folder of .npz/.npy files, or a folder of images")
    group.add_argument("--preprocess", metavar="SPEC", help="for a folder of images, e.g. size=224x224,mean=0.485;0.456;0.406,"
                                                            "std=0.229;0.224;0.225,scale=1/255,layout=NCHW,color=RGB")
    group.add_argument("--batch-size", type=int, default=None, help="samples per run when reading --data (default 32)")
    group.add_argument("--random", type=int, default=None, metavar="N", help="random input batches when no --data (default 4)")
    group.add_argument("--seed", type=int, default=None, help="seed of the random inputs (default 0)")
    group.add_argument("--atol", type=float, default=None, help="absolute tolerance per element (default 1e-4; lossy: off)")
    group.add_argument("--rtol", type=float, default=None, help="relative tolerance per element (default 1e-4; lossy: off)")
    group.add_argument("--min-cosine", type=float, default=None, help="lowest cosine similarity per output (default 0.9999; lossy 0.99)")
    group.add_argument("--min-snr", type=float, default=None, help="lowest SNR in dB per output (default 40; lossy 17, the equivalent of cosine 0.99)")
    group.add_argument("--min-top1", type=float, default=None, help="lowest top-1 agreement of classifier outputs (default 0.99; lossy 0.9)")
    group.add_argument("--providers", default=None, metavar="LIST", help="cpu, cuda (comma-separated) or all (default cpu)")
    group.add_argument("--capture", choices=CAPTURE_MODES, default=None,
                       help="intermediate tensors for localization: auto (only when outputs diverge), always, off (default auto)")
    group.add_argument("--latency", type=int, default=None, metavar="RUNS", help="time both models RUNS times each (default: off)")
    group.add_argument("--threads", type=int, default=None, help="intra-op threads for latency runs (default min(4, CPUs))")
    group.add_argument("--html", metavar="FILE.html", help="write a self-contained HTML report with plots")
    try:
        group.add_argument("--strict", action="store_true", default=None, help="a requested provider that cannot run fails (exit 1)")
    except argparse.ArgumentError:
        pass  # `optimize` has its own --strict, which covers validation too


_SETTINGS = {"data": "data", "preprocess": "preprocess", "batch_size": "batch_size", "random_samples": "random",
             "seed": "seed", "atol": "atol", "rtol": "rtol", "min_cosine": "min_cosine", "min_snr": "min_snr",
             "min_top1": "min_top1", "providers": "providers", "capture": "capture", "latency_runs": "latency",
             "threads": "threads", "html": "html", "strict": "strict"}
"""ValidationOptions field -> argparse dest of its flag."""


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The validation settings given on the command line, and only those: every flag defaults to
    None (unset), so ``--providers cpu`` over a recipe's ``providers = "cpu,cuda"`` overrides it
    like any other value instead of reading as "left at the default"."""
    settings = {field: getattr(args, dest, None) for field, dest in _SETTINGS.items()}
    settings["input_shapes"] = parse_input_shapes(args.input_shape) or None
    return {field: value for field, value in settings.items() if value is not None}


def options_from_args(args: argparse.Namespace) -> ValidationOptions:
    """The given settings over ValidationOptions' defaults (no recipe to merge with)."""
    return ValidationOptions(**settings_from_args(args))
