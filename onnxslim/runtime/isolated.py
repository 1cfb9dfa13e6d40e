"""Sessions made in a child process, for models that may crash ONNX Runtime instead of raising.

ONNX Runtime 1.32's CPU provider dies with SIGSEGV while optimizing some float16 graphs (a
``Transpose(perm=[1, 0, 2])`` feeding a MatMul with a constant weight, as torch exports
``nn.MultiheadAttention`` and GRU models): in-process, the crash took onnxslim down with it, with
no report. A pass whose models may do that is checked here first (``Pass.isolated_check``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx_ir as ir

CHILD = """
import sys
import onnxruntime as ort
options = ort.SessionOptions()
options.log_severity_level = 3
ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
"""

TIMEOUT_S = 600


def session_failure(model: ir.Model | str | Path) -> str | None:
    """Why ONNX Runtime's CPU provider cannot create a session on ``model`` (or the model file at
    that path) with its default (full) graph optimizations, tried in a child process: a crash by
    signal, or its error; None when it can."""
    with tempfile.TemporaryDirectory(prefix="onnxslim-isolated-") as folder:
        path = model if isinstance(model, ir.Model) else Path(model).resolve()  # the child runs in the temp folder
        if isinstance(model, ir.Model):
            path = Path(folder) / "model.onnx"
            ir.save(model, path, external_data="model.onnx.data")  # a child reads files: no 2 GB protobuf limit
        try:
            # cwd: whatever ORT may leave behind lands in the temporary folder
            done = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=folder, capture_output=True,
                                  text=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return f"ONNX Runtime took more than {TIMEOUT_S} s to create a session on it"
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return f"ONNX Runtime crashed ({name}) creating a CPU session with its default graph optimizations"
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return f"ONNX Runtime cannot create an optimized CPU session: {lines[-1] if lines else f'exit {done.returncode}'}"
    return None


def computes_in_float16(model: ir.Model) -> bool:
    """Whether ``model`` has float16 weights, inputs or Casts to float16: the models ONNX Runtime's
    CPU optimizers have crashed on, which the validation harness first loads in a child process."""
    half = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)
    if any(v.dtype in half for v in (*model.graph.inputs, *model.graph.initializers.values())):
        return True
    return any(node.op_type == "Cast" and node.attributes.get_int("to", 0) in (int(half[0]), int(half[1]))
               for node in model.graph.all_nodes())
