"""Runs one model over a data reader on one provider, optionally capturing intermediate tensors."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.data.readers import sample_count
from onnxslim.errors import DataRejected
from onnxslim.runtime.data_runs import ort_message, quiet
from onnxslim.runtime.session import join, make_session, session_model


@dataclasses.dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    captured: dict[str, np.ndarray]
    """Intermediate tensors of the first ``capture_batches`` batches (localization needs no more),
    with the graph outputs of those batches when anything was captured: an output that later
    nodes read can be where divergence starts."""
    labels: np.ndarray | None
    samples: int
    seconds: float
    """Session creation and all runs."""
    cpu_nodes: list[str]
    """Nodes ONNX Runtime placed on the CPU although another provider was asked for ("OpType name")."""
    first_shapes: dict[str, tuple] = dataclasses.field(default_factory=dict)
    """Each output's shape on the first batch (``outputs`` joins the batches: [8, 3] of four [2, 3])."""


def run_batches(model: ir.Model | bytes | str, batches: Iterable, *, provider: str = "cpu", capture: Sequence[str] = (),
                capture_batches: int = 1, threads: int | None = None) -> RunResult:
    """``batches`` yields DataBatch (or plain {name: array}); the session lives only inside this call.

    ``model``: an onnx-ir model, serialized bytes, or a path (from session.save_for_session).
    """
    started = time.perf_counter()
    data = session_model(model, capture) if isinstance(model, ir.Model) else model
    with tempfile.TemporaryDirectory(prefix="onnxslim-profile-") as folder:
        profile = str(Path(folder) / "run") if provider != "cpu" else None
        session = make_session(data, provider=provider, threads=threads, profile_prefix=profile)
        names = [o.name for o in session.get_outputs()]
        outputs = [n for n in names if n not in set(capture)]
        result = _run(session, batches, outputs, names, capture_batches)
        cpu_nodes = _cpu_nodes(session.end_profiling()) if profile else []
        del session
    result.cpu_nodes = cpu_nodes
    result.seconds = time.perf_counter() - started
    return result


def _run(session, batches: Iterable, outputs: list[str], names: list[str], capture_batches: int) -> RunResult:
    collected: dict[str, list[np.ndarray]] = {n: [] for n in names}
    first_outputs: dict[str, list[np.ndarray]] = {n: [] for n in outputs}
    labels, samples = [], 0
    for index, batch in enumerate(batches):
        inputs, batch_labels = (batch.inputs, batch.labels) if hasattr(batch, "inputs") else (batch, None)
        wanted = names if index < capture_batches else outputs
        try:
            values = session.run(wanted, inputs, quiet())  # reported once, by us, without ORT's raw log line
        except Exception as exc:  # ORT rejects inputs the readers' checks cannot see (dynamic dims, values)
            raise DataRejected(f"onnxruntime cannot run the model on batch {index}: {ort_message(exc)}",
                            path=getattr(batch, "source", None)) from None
        for name, value in zip(wanted, values):
            collected[name].append(value)
        if index < capture_batches and len(names) > len(outputs):
            for name in outputs:
                first_outputs[name].append(collected[name][-1])
        labels.append(batch_labels)
        samples += sample_count(batch)
    joined = {n: join(v) for n, v in collected.items() if v}
    has_labels = bool(labels) and all(item is not None for item in labels)
    captured = {n: v for n, v in joined.items() if n not in outputs}
    captured.update({n: join(v) for n, v in first_outputs.items() if v})
    return RunResult(
        outputs={n: joined[n] for n in outputs if n in joined},
        captured=captured,
        labels=np.concatenate(labels) if has_labels else None,
        samples=samples, seconds=0.0, cpu_nodes=[],
        first_shapes={n: np.shape(collected[n][0]) for n in outputs if collected[n] and not isinstance(collected[n][0], list)},
    )




def _cpu_nodes(profile_path: str) -> list[str]:
    """Nodes of the profile that ran on CPUExecutionProvider, in first-run order."""
    events = json.loads(Path(profile_path).read_text())
    found: dict[str, None] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and args.get("provider") == "CPUExecutionProvider":
            name = event.get("name", "").removesuffix("_kernel_time")
            found[f"{args.get('op_name', '?')} {name}"] = None
    return list(found)
