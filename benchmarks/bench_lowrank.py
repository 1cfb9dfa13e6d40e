"""split-lowrank on MiniLM (sentence embeddings) and the bundled ViT: parameters, size, latency, cosine.

    python benchmarks/bench_lowrank.py [--runs 20] [--skip-minilm] [--skip-vit] [--vit-base] [--quick] [--only TEXT ...]

MiniLM comes from ``python models/make_minilm.py`` (models/.real/); it is skipped when absent.
Its cosines are on two held-out sets: 63 hand-written everyday sentences and 500 sentences of
documentation prose (the calibration set is other documentation sentences + other everyday ones).
"check / fit cosine": the pass's own measurement on its held-out calibration samples / on fitted ones.
The activation covariances and per-layer sensitivities are measured once per model (and method) and
reused by the later variants: their "pass s" excludes that time.
Ratios are against the unsplit model measured in the same run; latencies are ORT CPU medians
over ``--runs`` batches, variants timed round-robin (the 2-core machine is shared: treat
differences below ~10% as noise). ``--vit-base`` also times the factorization of ViT-Base-sized
weights (12 blocks of 4x 768x768 + 768x3072 + 3072x768, random values).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from onnxslim.core.pass_base import PassContext  # noqa: E402
from onnxslim.data import open_reader  # noqa: E402
from onnxslim.passes.lowrank import factorize, plan, split_lowrank  # noqa: E402
from onnxslim.passes.lowrank.split_lowrank import Config, SplitLowRank  # noqa: E402

_COVARIANCES: dict = {}
_input_covariances = split_lowrank.input_covariances


def _cached_covariances(model, groups, batches, *, mask=None):
    """The activation covariances depend only on the model and the data: computed once per model
    for all variants (the "pass s" column of later variants excludes that time)."""
    key = (model.graph.name, tuple(g.name for g in groups), mask)
    if key not in _COVARIANCES:
        _COVARIANCES[key] = _input_covariances(model, groups, batches, mask=mask)
    return _COVARIANCES[key]


split_lowrank.input_covariances = _cached_covariances
_SENSITIVITY: dict = {}
_measure_sensitivity = plan.measure_sensitivity


def _cached_sensitivity(groups, layers, probe, multiple):
    """Per-layer sensitivities depend only on the model, the data and the factorization method:
    measured once per (model, factorization) for all variants (refit variants reuse them)."""
    key = (tuple(g.name for g in groups), tuple(round(layer.factorization.total_energy, 3) for layer in layers), multiple)
    if key not in _SENSITIVITY:
        drops = _measure_sensitivity(groups, layers, probe, multiple)
        _SENSITIVITY[key] = (drops, [layer.measured for layer in layers])
    drops, measured = _SENSITIVITY[key]
    for layer, value in zip(layers, measured):
        layer.measured = value
    return drops


plan.measure_sensitivity = _cached_sensitivity

MODELS = {
    "minilm": (REPO / "models/.real/minilm.onnx", REPO / "models/.real/minilm_calib.npz",
               {"everyday": REPO / "models/.real/minilm_eval.npz", "docs": REPO / "models/.real/minilm_eval_docs.npz"}),
    "vit_tiny": (REPO / "models/vit_tiny.onnx", REPO / "models/digits_calib.npz", {"eval": REPO / "models/digits_eval.npz"}),
}


def variants(name: str, quick: bool) -> list[tuple[str, dict]]:
    floor = 0.97 if name == "minilm" else 0.99
    out = [(f"{m} energy {e}", {"energy": e, "method": m}) for m in ("plain", "whitened") for e in (0.8, 0.9, 0.95, 0.99)]
    budgets = (0.85,) if quick else (0.85, 0.7)
    out += [(f"{m} params {p} ({a})", {"params": p, "method": m, "allocation": a})
            for p in budgets for m, a in (("plain", "error"), ("plain", "sensitivity"))]
    out += [(f"whitened params {p} (sensitivity, refit {r})", {"params": p, "method": "whitened", "refit": r})
            for p in budgets for r in ("none", "oneshot", "sequential")]
    out += [(f"whitened params {p} (sensitivity, refit sequential, search 2)",
             {"params": p, "method": "whitened", "refit": "sequential", "search": 2}) for p in budgets]
    out += [(f"whitened params {p} (sensitivity, refit sequential, no downstream)",
             {"params": p, "method": "whitened", "refit": "sequential", "downstream": False}) for p in budgets]
    out += [(f"auto cosine>={floor} (refit {r})", {"min_cosine": floor, "refit": r}) for r in ("none", "sequential")]
    return out


def session(model: ir.Model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 2, 3
    return ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString(), options, providers=["CPUExecutionProvider"])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def bench(name: str, runs: int, quick: bool, console: Console, only: list[str] | None = None) -> None:
    path, calib_path, eval_paths = MODELS[name]
    if not path.exists():
        console.print(f"[yellow]{name}: {path} missing (python models/make_minilm.py); skipped")
        return
    base = ir.load(path)
    evals = {label: dict(np.load(p)) for label, p in eval_paths.items()}
    labels = {label: data.pop("labels", None) for label, data in evals.items()}
    calibration = open_reader(calib_path, base)
    rows = {"original": (base, None, 0.0)}
    for label, settings in variants(name, quick):
        if only and not any(text in label for text in only):
            continue
        model = ir.load(path)
        started = time.perf_counter()
        result = SplitLowRank(Config(**settings), context=PassContext(calibration=calibration))(model)
        rows[label] = (model, result, time.perf_counter() - started)
        console.print(f"{name}: {label} done in {rows[label][2]:.0f} s")
    sessions = {label: session(model) for label, (model, _, _) in rows.items()}
    outputs = {label: {e: s.run(None, data)[0] for e, data in evals.items()} for label, s in sessions.items()}
    timed = next(iter(evals.values()))
    latency = {label: [] for label in rows}
    for _ in range(runs):  # round-robin
        for label, s in sessions.items():
            started = time.perf_counter()
            s.run(None, timed)
            latency[label].append(time.perf_counter() - started)
    _table(name, rows, outputs, latency, labels, console)


def _table(name, rows, outputs, latency, labels, console) -> None:
    base_model = rows["original"][0]
    matmul = _matmul_params(base_model)
    base_params = _params(base_model)
    base_ms = statistics.median(latency["original"]) * 1e3
    table = Table(title=f"split-lowrank on {name} (MatMul/Gemm weight params: {matmul:,})")
    evals = list(outputs["original"])
    columns = ["variant", "split", "weight params kept", "model params", "size MB", "latency ms (x)",
               *[f"cosine {e}" for e in evals], "top-1", "check / fit cosine", "pass s"]
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    reference = outputs["original"]
    for label, (model, result, seconds) in rows.items():
        saved = result.stats["params_saved"] if result else 0
        ms = statistics.median(latency[label]) * 1e3
        first = evals[0]
        top1 = f"{(outputs[label][first].argmax(1) == labels[first]).mean():.3f}" if labels[first] is not None else "-"
        stats = result.stats if result else {}
        check = " / ".join(f"{stats[k]:.4f}" for k in ("check_cosine", "fit_cosine") if k in stats) or "-"
        refit = f" ({stats['layers_refit']} refit)" if stats.get("layers_refit") else ""
        table.add_row(label, f"{stats['weights_split']}{refit}" if result else "-", f"{1 - saved / matmul:.3f}",
                      f"{_params(model) / base_params:.3f}", f"{_size(model) / 1e6:.1f}", f"{ms:.1f} ({ms / base_ms:.2f})",
                      *[f"{cosine(outputs[label][e], reference[e]):.4f}" for e in evals], top1, check, f"{seconds:.1f}")
    console.print(table)


def _matmul_params(model: ir.Model) -> int:
    total = 0
    for node in model.graph:
        if node.op_type in ("MatMul", "Gemm"):
            for value in node.inputs[:2]:
                if value is not None and value.const_value is not None and len(value.const_value.shape) == 2:
                    total += value.const_value.size
    return total


def _params(model: ir.Model) -> int:
    return sum(v.const_value.size for v in model.graph.initializers.values() if v.const_value is not None)


def _size(model: ir.Model) -> int:
    return ir.serde.serialize_model(model).ByteSize()


def vit_base_timing(console: Console) -> None:
    rng = np.random.default_rng(0)
    shapes = [(768, 768)] * 4 + [(768, 3072), (3072, 768)]
    weights = [rng.standard_normal(s).astype(np.float32) for _ in range(12) for s in shapes]
    count = sum(w.size for w in weights)
    for label, call in (("full SVD (energy/budget modes)", lambda w: factorize.plain(w)),
                        ("randomized SVD, rank 96", lambda w: factorize.plain(w, rank=96, randomized=True))):
        started = time.perf_counter()
        for w in weights:
            call(w)
        console.print(f"ViT-Base-sized weights ({count / 1e6:.1f}M params, 72 matrices): {label}: {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--vit-base", action="store_true")
    parser.add_argument("--quick", action="store_true", help="one parameter budget (0.85) instead of two")
    parser.add_argument("--skip-vit", action="store_true")
    parser.add_argument("--only", nargs="+", metavar="TEXT", help="only the variants whose label contains one of these")
    args = parser.parse_args()
    console = Console(width=160)
    for name in MODELS:
        if not (name == "minilm" and args.skip_minilm) and not (name == "vit_tiny" and args.skip_vit):
            bench(name, args.runs, args.quick, console, args.only)
    if args.vit_base:
        vit_base_timing(console)


if __name__ == "__main__":
    main()
