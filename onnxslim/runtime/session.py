"""ONNX Runtime sessions for onnx-ir models: one live session at a time, optional extra outputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxslim.errors import first_line
from onnxslim.proto import weights_detached
from onnxslim.runtime.providers import PROVIDERS, ProviderUnavailable, unavailable_reason


def model_bytes(model: ir.Model, extra_outputs: Iterable[str] = (), *, sizes: Mapping[str, str] | None = None,
                probes: Sequence[onnx.NodeProto] = ()) -> bytes:
    """The serialized model; ``extra_outputs`` (intermediate tensor names) become graph outputs too,
    each ``sizes`` entry (output name -> tensor name) an output holding that tensor's element count,
    and each ``probes`` node is added with its output as a graph output (calibration's in-graph
    reductions, ``passes/quantization/probes.py``)."""
    return serialize(model, extra_outputs, sizes=sizes, probes=probes)[0]


def serialize(model: ir.Model, extra_outputs: Iterable[str] = (), *, sizes: Mapping[str, str] | None = None,
              probes: Sequence[onnx.NodeProto] = ()) -> tuple[bytes, int]:
    """(serialized model with ``extra_outputs``, ``sizes`` and ``probes`` added, size in bytes of the model as saved without them)."""
    data = ir.serde.serialize_model(model).SerializeToString()
    names = list(extra_outputs)
    nodes = [onnx.helper.make_node("Size", [tensor], [name]) for name, tensor in (sizes or {}).items()] + list(probes)
    if not names and not nodes:
        return data, len(data)
    # Protobuf merges concatenated messages (repeated fields append): the 100 MB body is not re-encoded.
    extra = onnx.ModelProto(graph=onnx.GraphProto(
        node=nodes, output=[onnx.ValueInfoProto(name=n) for n in (*names, *(node.output[0] for node in nodes))]))
    return data + extra.SerializeToString(), len(data)


_NUMPY_TYPES = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.INT8, ir.DataType.INT16,
                ir.DataType.INT32, ir.DataType.INT64, ir.DataType.UINT8, ir.DataType.UINT16, ir.DataType.UINT32,
                ir.DataType.UINT64, ir.DataType.BOOL}
"""Element types whose numpy arrays ONNX Runtime takes as they are (no bfloat16 / float8 / int4 / strings)."""


@dataclasses.dataclass(frozen=True)
class SessionModel:
    """A model for ``make_session``: the serialized graph, its large weights as arrays beside it."""

    data: bytes
    weights: dict[str, np.ndarray]


def session_model(model: ir.Model, extra_outputs: Iterable[str] = (), *, sizes: Mapping[str, str] | None = None,
                  probes: Sequence[onnx.NodeProto] = ()) -> SessionModel:
    """``model`` serialized as ``model_bytes`` does, except that the main graph's large initializers
    are external-data placeholders and travel as arrays, which ORT copies in
    (``SessionOptions.add_external_initializers``). On all-MiniLM-L6-v2 (90 MB) serializing plus
    creating a session took 0.45-0.50 s with the weights encoded, 0.17-0.22 s this way."""
    # unused initializers stay inline: ORT drops them at load, and then refuses to replace them
    with weights_detached(model, lambda value: value.const_value.dtype in _NUMPY_TYPES and bool(value.uses())) as weights:
        data = serialize(model, extra_outputs, sizes=sizes, probes=probes)[0]
    return SessionModel(data, {name: np.ascontiguousarray(tensor.numpy()) for name, tensor in weights.items()})


def save_for_session(model: ir.Model, folder: Path, stem: str, extra_outputs: Iterable[str] = ()) -> tuple[str, int]:
    """Writes ``model`` with its weights as external data (no protobuf re-encoding of large tensors).

    Returns the path for make_session and the model's serialized size (graph + weights).
    """
    path = Path(folder) / f"{stem}.onnx"
    ir.save(model, path, external_data=f"{stem}.onnx.data")
    # the files as written: If/Loop bodies' weights go to the data file too (silero VAD's all do)
    data = path.with_name(f"{stem}.onnx.data")
    size = path.stat().st_size + (data.stat().st_size if data.exists() else 0)
    names = list(extra_outputs)
    if names:
        proto = onnx.load(str(path), load_external_data=False)
        proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
        onnx.save(proto, str(path))
    return str(path), size


def make_session(model: ir.Model | SessionModel | bytes | str, *, extra_outputs: Iterable[str] = (),
                 sizes: Mapping[str, str] | None = None, probes: Sequence[onnx.NodeProto] = (),
                 provider: str = "cpu", threads: int | None = None,
                 profile_prefix: str | None = None, memory_pattern: bool = True,
                 optimize: bool = True) -> ort.InferenceSession:
    """A session on ``provider`` only; raises ProviderUnavailable rather than silently running on CPU.

    An onnx-ir ``model`` goes through ``session_model`` with ``extra_outputs``, ``sizes`` and ``probes`` (see
    ``model_bytes``); bytes and paths are used as they are.

    ``optimize=False``: no graph optimizations (a load check, not a session to run).

    ``memory_pattern=False`` for a few runs with many outputs (calibration): ORT then skips planning
    a memory pattern on the first run, which made the second run as slow as the first."""
    reason = unavailable_reason(provider)
    if reason:
        raise ProviderUnavailable(reason)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_mem_pattern = memory_pattern
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if isinstance(model, ir.Model):
        model = session_model(model, extra_outputs, sizes=sizes, probes=probes)
    data, weights = model, []
    if isinstance(model, SessionModel):
        # ORT copies these in while the session is created; until then they point into model.weights
        data, weights = model.data, [ort.OrtValue.ortvalue_from_numpy(a) for a in model.weights.values()]
        if weights:
            options.add_external_initializers(list(model.weights), weights)
    wanted = PROVIDERS[provider]
    try:
        session = ort.InferenceSession(data, options, providers=[wanted])
    except Exception as exc:
        if provider == "cpu":
            raise
        raise ProviderUnavailable(f"{wanted} failed to start: {first_line(exc)}") from None
    if wanted not in session.get_providers():
        raise ProviderUnavailable(f"{wanted} failed to start (onnxruntime fell back to {session.get_providers()[0]})")
    return session


def run_model(model: ir.Model, batches: Sequence[dict[str, np.ndarray]], *, provider: str = "cpu") -> dict[str, np.ndarray]:
    """Every output over all batches, concatenated along axis 0 when outputs are batched."""
    session = make_session(model, provider=provider)
    names = [o.name for o in session.get_outputs()]
    results: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in batches:
        for name, value in zip(names, session.run(names, batch)):
            results[name].append(value)
    return {n: join(v) for n, v in results.items()}


def join(values: list) -> np.ndarray:
    """One array from an output's per-batch values, for comparison: concatenated along the batch
    axis; stacked when unbatched (scalars); else, when a non-batch dim depends on the data (NonZero's
    count, a TopK of a dynamic k), the values raveled in order. A sequence output (ORT gives a list)
    counts as its elements stacked (raveled in order when their shapes differ), an empty optional as
    no values."""
    values = [_as_array(v) for v in values]
    if len(values) == 1:
        return values[0]
    try:
        return np.concatenate(values, axis=0)
    except ValueError:
        pass
    try:
        return np.stack(values)
    except ValueError:
        return np.concatenate([v.ravel() for v in values])


def _as_array(value) -> np.ndarray:
    if isinstance(value, list):  # a sequence: its elements stacked, so their shapes count too
        items = [np.asarray(item) for item in value]
        if not items:
            return np.zeros(0, np.float32)
        if len({item.shape for item in items}) == 1:
            return np.stack(items)
        return np.concatenate([item.ravel() for item in items])
    if value is None:
        return np.zeros(0, np.float32)
    return np.asarray(value)
