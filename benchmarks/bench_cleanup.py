"""Cleanup benchmark: our "simplify" pipeline next to onnxsim and onnxslim-from-PyPI.

Usage::

    python benchmarks/bench_cleanup.py [--json FILE] [--repeat N] [--models NAME ...] [--zoo [FOLDER]]

Every tool runs in its own subprocess on the same models in the same run; only the
simplify call is timed (best of --repeat). The third-party tools live in
benchmarks/.venv-thirdparty/ (created on first use) because PyPI's ``onnxslim`` has the
same import name as ours. Each result is checked in ONNX Runtime (CPU) against the
original on seeded random inputs; ours must stay within 1e-4 and keep dynamic dims.
``--zoo`` adds the torch exports of common architectures made by benchmarks/torch_zoo.py
(needs torch), checked at batch 2.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
THIRDPARTY_VENV = ROOT / "benchmarks" / ".venv-thirdparty"
THIRDPARTY_PACKAGES = ["onnxsim", "onnxslim", "onnxruntime", "numpy"]
TOLERANCE = 1e-4
BUNDLED = ("digits_cnn", "resnet_mini", "mobilenet_mini", "vit_tiny")  # checked at batch 3, their static dims
REAL_SHAPES = {"yolov8n": (1, 3, 320, 320), "ppocr_det": (1, 3, 320, 320),
               "ppocr_rec": (1, 3, 48, 320), "ppocr_cls": (1, 3, 48, 192),
               "layout": (1, 3, 800, 608), "orientation": (2, 3, 224, 224),
               # several inputs: name -> shape, or a fixed value (the sample rate silero's branches test)
               "silero_vad": {"input": (2, 512), "state": (2, 2, 128), "sr": 16000},
               "silero_vad_half": {"input": (2, 512), "state": (2, 2, 128)}}
ZOO_FOLDER = ROOT / "benchmarks" / "out" / "zoo"
TOOLS = ("ours", "onnxsim", "onnxsim@fixed-shape", "onnxslim-pypi")
RATIOS = (("ops_after", "onnxsim"), ("ops_after", "onnxsim@fixed-shape"), ("ops_after", "onnxslim-pypi"),
          ("time_s", "onnxsim"), ("time_s", "onnxslim-pypi"))  # (row field, baseline tool): ours / baseline

RUNNER = r'''
import json, sys, time
import onnx
tool, src, dst, shapes, repeat = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5])
notes = ""
if tool == "ours":
    import onnx_ir as ir, onnxslim as lib
    def simplify(m):
        global notes
        result = lib.run(m, validate=False)
        notes = ", ".join(f"{r.name} rolled back" for r in result.pipeline.records if r.status == "rolled-back")
        return ir.serde.serialize_model(result.model)
elif tool.startswith("onnxsim"):
    import onnxsim as lib
    kwargs = {"overwrite_input_shapes": shapes} if tool.endswith("fixed-shape") else {}
    simplify = lambda m: lib.simplify(m, **kwargs)[0]
else:
    import onnxslim as lib
    simplify = lambda m: lib.slim(m)
original = onnx.load(src)
times = []
for _ in range(repeat):
    model = onnx.ModelProto()
    model.CopyFrom(original)
    start = time.perf_counter()
    out = simplify(model)
    times.append(time.perf_counter() - start)
onnx.save(out, dst)
print(json.dumps({"time_s": min(times), "version": str(lib.__version__), "notes": notes}))
'''


def load_fetcher():
    spec = importlib.util.spec_from_file_location("fetch_real_models", ROOT / "models" / "fetch_real_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ModelSpec(NamedTuple):
    path: Path
    shapes: dict[str, tuple[int, ...] | int]  # input name -> numeric-check shape (an int: that value, a scalar)
    vocab: int | None = None  # integer inputs are drawn from [0, vocab)


def collect_models() -> dict[str, ModelSpec]:
    """Bundled and real models."""
    specs = {name: (ROOT / "models" / f"{name}.onnx", None) for name in BUNDLED}
    real = load_fetcher().fetch(ROOT / "models" / ".real")
    specs.update({name: (path, REAL_SHAPES[name]) for name, path in real.items()})
    models = {}
    for name, (path, shape) in specs.items():
        if isinstance(shape, dict):
            models[name] = ModelSpec(path, shape)
            continue
        inputs = graph_inputs(onnx.load(path))
        if len(inputs) != 1:
            raise SystemExit(f"{name}: expected one graph input, found {len(inputs)}")
        dims = inputs[0].type.tensor_type.shape.dim
        models[name] = ModelSpec(path, {inputs[0].name: shape or (3, *(d.dim_value for d in dims[1:]))})
    return models


def collect_zoo(folder: Path) -> dict[str, ModelSpec]:
    """The torch_zoo.py exports in ``folder``, made first unless a complete set is already there."""
    manifest_path = folder / "zoo.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    files_there = all((folder / entry["file"]).exists() for entry in manifest.get("models", {}).values())
    if not (manifest.get("complete") and files_there):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "torch_zoo.py"), str(folder)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            raise SystemExit(f"--zoo: torch_zoo.py failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
        manifest = json.loads(manifest_path.read_text())
    return {name: ModelSpec(folder / entry["file"], {k: tuple(v) for k, v in entry["shapes"].items()}, entry["vocab"])
            for name, entry in manifest["models"].items()}


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def thirdparty_python() -> tuple[Path, str]:
    """The third-party venv's interpreter (created on demand) and an install log line."""
    python = THIRDPARTY_VENV / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(THIRDPARTY_VENV)
    missing = []
    for package in THIRDPARTY_PACKAGES:  # one at a time, so a failed onnxsim build spares the others
        check = subprocess.run([python, "-m", "pip", "show", "-q", package], capture_output=True)
        if check.returncode != 0:
            proc = subprocess.run([python, "-m", "pip", "install", "-q", package], capture_output=True, text=True)
            if proc.returncode != 0:
                missing.append(f"{package}: pip install failed: {proc.stderr.strip().splitlines()[-1:]}")
    return python, "; ".join(missing)


def run_tool(python: Path, tool: str, src: Path, dst: Path, shapes: dict, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        runner = Path(scratch) / "runner.py"
        runner.write_text(RUNNER)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        cmd = [str(python), str(runner), tool, str(src), str(dst), json.dumps(shapes), str(repeat)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=scratch, env=env, timeout=1800)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {"error": (lines[-1] if lines else f"exit {proc.returncode}")[:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compute_nodes(model: onnx.ModelProto) -> int:
    """Nodes other than Constant: onnxsim keeps folded values as Constant nodes, the others as initializers."""
    return sum(node.op_type != "Constant" for node in model.graph.node)


def dynamic_dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Positions of dims without a fixed value, per graph input."""
    return {i.name: [k for k, d in enumerate(i.type.tensor_type.shape.dim) if not d.HasField("dim_value")]
            for i in graph_inputs(model)}


def run_ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def seeded_feeds(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], vocab: int | None = None) -> dict[str, np.ndarray]:
    """Uniform [0, 1) values; integer inputs uniform in [0, vocab) when a vocabulary size is given."""
    rng = np.random.default_rng(0)
    feeds = {}
    for value in graph_inputs(model):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if isinstance(shapes[value.name], int):
            feeds[value.name] = np.array(shapes[value.name], dtype)
        elif vocab and np.issubdtype(dtype, np.integer):
            feeds[value.name] = rng.integers(0, vocab, shapes[value.name]).astype(dtype)
        else:
            feeds[value.name] = rng.random(shapes[value.name]).astype(dtype)
    return feeds


def max_abs_diff(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    if len(reference) != len(outputs):
        return float("inf")
    diffs = [np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0)
             if a.shape == b.shape else float("inf") for a, b in zip(reference, outputs)]
    return float(max(diffs, default=0.0))


def op_delta(original: onnx.ModelProto, result: onnx.ModelProto) -> dict[str, int]:
    before, after = (collections.Counter(n.op_type for n in m.graph.node) for m in (original, result))
    ops = sorted(set(before) | set(after), key=lambda op: (-abs(after[op] - before[op]), op))
    return {op: after[op] - before[op] for op in ops if after[op] != before[op]}


def measure(name: str, spec: ModelSpec, tool: str, python: Path, repeat: int, reference: list) -> dict:
    src, shapes = spec.path, spec.shapes
    original = onnx.load(src)
    row = {"model": name, "tool": tool, "nodes_before": len(original.graph.node),
           "ops_before": compute_nodes(original)}
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "out.onnx"
        fixed = {k: v for k, v in shapes.items() if not isinstance(v, int)}  # onnxsim@fixed-shape's shapes
        row.update(run_tool(python, tool.removesuffix("-pypi"), src, dst, fixed, repeat))
        if "error" in row:
            return row
        result = onnx.load(dst)
        row["nodes_after"], row["ops_after"] = len(result.graph.node), compute_nodes(result)
        row["op_delta"] = op_delta(original, result)
        row["bytes"] = dst.stat().st_size
        row["dynamic_kept"] = dynamic_dims(result) == dynamic_dims(original)
        try:
            row["max_abs_diff"] = max_abs_diff(reference, run_ort(dst, seeded_feeds(original, shapes, spec.vocab)))
        except Exception as exc:  # an output ORT cannot run is a result, not a crash
            row["max_abs_diff"], row["notes"] = float("inf"), f"ORT: {str(exc)[:120]}"
    return row


def render_rows(console: Console, rows: list[dict]) -> None:
    table = Table(title="Cleanup: nodes, time, size, dynamic dims, max |diff| vs original (ORT CPU)")
    for column in ("model", "tool", "nodes", "w/o Constant", "time s", "MB", "dyn kept", "max |diff|", "main op changes / error"):
        table.add_column(column, overflow="fold")
    for r in rows:
        if "error" in r:
            table.add_row(r["model"], r["tool"], f"{r['nodes_before']} -> -", "-", "-", "-", "-", "-", f"[red]{r['error']}")
            continue
        changes = ", ".join(f"{op} {n:+d}" for op, n in list(r["op_delta"].items())[:4])
        table.add_row(r["model"], r["tool"], f"{r['nodes_before']} -> {r['nodes_after']}",
                      f"{r['ops_before']} -> {r['ops_after']}", f"{r['time_s']:.3f}",
                      f"{r['bytes'] / 1e6:.2f}", "yes" if r["dynamic_kept"] else "no", f"{r['max_abs_diff']:.1e}",
                      (changes + ("  " + r["notes"] if r.get("notes") else "")) or "(none)")
    console.print(table)


def ratio(rows: dict, field: str, tool: str) -> str:
    ours, other = rows.get("ours", {}).get(field), rows.get(tool, {}).get(field)
    return f"{ours / other:.2f}" if ours is not None and other else "-"


def render_ratios(console: Console, rows: list[dict]) -> None:
    table = Table(title="Ours / baseline, same run (nodes without Constant; < 1: fewer nodes or faster)")
    table.add_column("model")
    for field, tool in RATIOS:
        table.add_column(f"{'nodes' if field == 'ops_after' else 'time'} / {tool}")
    by_model = collections.defaultdict(dict)
    for r in rows:
        by_model[r["model"]][r["tool"]] = r
    for model, tools in by_model.items():
        table.add_row(model, *(ratio(tools, field, tool) for field, tool in RATIOS))
    console.print(table)


def ours_failures(rows: list[dict]) -> list[str]:
    return [f"{r['model']}: {r.get('error') or r}" for r in rows if r["tool"] == "ours"
            and ("error" in r or r["max_abs_diff"] > TOLERANCE or not r["dynamic_kept"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the raw rows and versions to this file")
    parser.add_argument("--repeat", type=int, default=3, help="time each tool this many times, keep the best")
    parser.add_argument("--models", nargs="*", help="only these model names")
    parser.add_argument("--zoo", nargs="?", type=Path, const=ZOO_FOLDER, metavar="FOLDER",
                        help="also the torch exports of benchmarks/torch_zoo.py in FOLDER (default "
                             f"{ZOO_FOLDER.relative_to(ROOT)}), exported first unless a complete set is there; needs torch")
    args = parser.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=170)
    models = collect_models()
    if args.zoo:
        models.update(collect_zoo(args.zoo))
    models = {k: v for k, v in models.items() if not args.models or k in args.models}
    with console.status(f"preparing {THIRDPARTY_VENV.relative_to(ROOT)} ({', '.join(THIRDPARTY_PACKAGES)})"):
        third, install_errors = thirdparty_python()
    if install_errors:
        console.print(f"[yellow]third-party install: {install_errors}")
    rows = []
    for name, spec in models.items():
        reference = run_ort(spec.path, seeded_feeds(onnx.load(spec.path), spec.shapes, spec.vocab))
        for tool in TOOLS:
            python = Path(sys.executable) if tool == "ours" else third
            rows.append(measure(name, spec, tool, python, args.repeat, reference))
            console.log(f"{name:18s} {tool:20s} {rows[-1].get('error') or rows[-1]['nodes_after']}")
    render_rows(console, rows)
    render_ratios(console, rows)
    versions = {r["tool"]: r["version"] for r in rows if "version" in r}
    console.print(f"python {sys.version.split()[0]}, onnxruntime {ort.__version__} (check), versions: {versions}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"versions": versions, "install_errors": install_errors, "rows": rows}, indent=1))
    failures = ours_failures(rows)
    for failure in failures:
        console.print(f"[red]FAILED ours {failure}")
    console.print("[red]FAILED" if failures else "[green]PASSED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
