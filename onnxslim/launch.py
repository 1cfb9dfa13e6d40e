"""The console script's entry: the command-line module imports onnx and onnxruntime, which takes a
second; a Ctrl-C then (or in the instant before the command's own handler is in place) ends with
one line and exit 130, as it does once the command runs."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from onnxslim.cli import main as run_command

        return run_command()
    except KeyboardInterrupt:
        print("onnxslim: interrupted", file=sys.stderr)
        return 130
