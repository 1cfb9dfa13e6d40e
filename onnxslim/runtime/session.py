"""One ONNX Runtime session at a time, created from an in-memory model."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def make_session(model: ir.Model, *, provider: str = "cpu", threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    data = ir.serde.serialize_model(model).SerializeToString()
    return ort.InferenceSession(data, options, providers=[PROVIDERS[provider]])


def run_model(model: ir.Model, batches: Sequence[dict[str, np.ndarray]], *, provider: str = "cpu") -> dict[str, np.ndarray]:
    """Every output over all batches, concatenated along axis 0 when outputs are batched."""
    session = make_session(model, provider=provider)
    names = [o.name for o in session.get_outputs()]
    results: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in batches:
        for name, value in zip(names, session.run(names, batch)):
            results[name].append(value)
    return {n: _join(v) for n, v in results.items()}


def _join(values: list[np.ndarray]) -> np.ndarray:
    if len(values) == 1:
        return values[0]
    try:
        return np.concatenate(values, axis=0)
    except ValueError:  # scalar or unbatched outputs
        return np.stack(values)
