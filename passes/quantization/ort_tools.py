"""Running onnxruntime's model converters (float16, MatMulNBits) on an onnx-ir model, safely.

ONNX Runtime's tools take a ``ModelProto`` and may write scratch files to the working folder;
``in_scratch_folder`` runs them chdir'ed into a temporary folder that is removed afterwards.
``to_proto`` hands them the model with its weights inline (externally stored weights would be
looked for in that folder); ``replace_contents`` copies a converted model into the pass's model
object (passes are in place).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from typing import Iterator

import onnx
import onnx_ir as ir

from onnxslim.proto import external_data_loaded
from onnxslim.core.stats import iter_weights


_CWD_LOCK = threading.Lock()
"""The working folder is the process's: two threads converting at once would restore each other's."""


@contextlib.contextmanager
def in_scratch_folder() -> Iterator[str]:
    """Chdir into a fresh temporary folder for the duration; the old working folder is restored.
    One at a time per process (``_CWD_LOCK``); other threads' relative paths still resolve against
    the scratch folder meanwhile, so an application optimizing models on several threads should
    give absolute paths (docs/quantization.md)."""
    with _CWD_LOCK:
        previous = os.getcwd()
        with tempfile.TemporaryDirectory(prefix="onnxslim-ort-") as folder:
            os.chdir(folder)
            try:
                yield folder
            finally:
                os.chdir(previous)


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """The model with every weight inline: the tools read external data relative to the working
    folder (the scratch folder here), not to the folder of the model the weights came from."""
    with external_data_loaded(model):
        return ir.serde.serialize_model(model)


def replace_contents(model: ir.Model, proto: onnx.ModelProto) -> None:
    """Make ``model`` (the object the pass manager holds) the converted ``proto``."""
    new = ir.serde.deserialize_model(proto)
    new.graph.sort()  # onnxruntime's converters may append nodes out of order
    model.graph = new.graph
    model.ir_version = new.ir_version
    model.functions.clear()
    model.functions.update(new.functions)


def float_weight_bytes(model: ir.Model, dtype: ir.DataType) -> int:
    """Bytes of the ``dtype`` weights the report counts (``iter_weights``: initializers and Constant
    nodes, which carry Paddle's weights when the cleanup that lifts them is off)."""
    return sum(tensor.nbytes for _, tensor in iter_weights(model) if tensor.dtype == dtype)


def import_quietly(module: str):
    """Import an onnxruntime tool module without letting it reconfigure the application's logging.

    ``onnxruntime.quantization.matmul_nbits_quantizer`` calls ``logging.basicConfig(level=INFO)``
    when imported, which would route every library's INFO messages to the terminal; the root
    logger's handlers and level are restored, and the module's own logger is limited to warnings.
    """
    import importlib

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        loaded = importlib.import_module(module)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    logging.getLogger(module).setLevel(logging.WARNING)
    return loaded
