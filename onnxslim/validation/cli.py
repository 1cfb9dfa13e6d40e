"""Command-line flags of the validation harness, shared by `onnxslim validate` and `onnxslim optimize`."""

from __future__ import annotations

import argparse

from onnxslim.input_shapes import parse_input_shapes
from onnxslim.validation.harness import ValidationOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME:D1,D2,...", help="fix an input's shape (repeatable)")
    parser.add_argument("--data", help=".npz with one array per input name, samples along axis 0")
    parser.add_argument("--random", type=int, default=4, metavar="N", help="random input batches when no --data (default 4)")
    parser.add_argument("--atol", type=float, default=None, help="absolute tolerance per element")
    parser.add_argument("--rtol", type=float, default=None, help="relative tolerance per element")


def options_from_args(args: argparse.Namespace) -> ValidationOptions:
    return ValidationOptions(
        data=args.data,
        random_samples=args.random,
        input_shapes=parse_input_shapes(args.input_shape),
        atol=args.atol,
        rtol=args.rtol,
    )
