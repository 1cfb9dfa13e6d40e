"""Checks of a request before any work: the API's options, the input model's loadability in ONNX
Runtime, settings that cannot take effect, two models' interfaces. Each failure is one typed error
naming what it concerns (exit 2 from the CLI), raised before anything is written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import onnx_ir as ir

from onnxslim import io
from onnxslim.core.checks import ModelCheckError, check_model, io_contract
from onnxslim.core.recipe import check_options
from onnxslim.errors import ConfigError, DataError, ModelLoadError, OutputPathError
from onnxslim.validation import ValidationOptions


def checked_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """The API's keyword options checked as a recipe's [options] are: a wrongly typed value is a
    ConfigError, never read by its truthiness (``strict="false"``) or written into the model
    (``input_shapes={"x": [1, -5]}``)."""
    options = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in given.items() if v is not None}
    data = options.get("calibration_data")
    if data is not None and not isinstance(data, str):
        # the data layer reads files only; say so rather than print a dict of arrays as "got ..."
        raise ConfigError(f"expected a path (str or os.PathLike) to a .npz file, a folder of .npz/.npy files or a "
                          f"folder of images, got {type(data).__name__} (save arrays in memory with numpy.savez first)",
                          where="calibration_data")
    return check_options(options, label="", flag_text=True)


def load_runnable(src: io.ModelSource) -> ir.Model:
    model = io.load(src)
    check_runnable(model, model, {}, src)
    return model


def check_runnable(original: ir.Model, model: ir.Model, shapes: Mapping[str, tuple[int, ...]],
                    src: io.ModelSource, *, runtime: bool = True,
                    shapes_from: tuple[str, str | os.PathLike | None] = ("--input-shape", None)) -> None:
    """One check (onnx's checker, ONNX Runtime's loader) of the model the pipeline starts from,
    before any work. A model ORT cannot load (an IR version newer than it knows, two nodes of one
    name) is the input's problem, exit 2, not an internal error halfway through. A pinned shape the
    graph cannot compute (YOLOv8 at a height not a multiple of 32: its upsampled and skip branches
    no longer concatenate) is the shape's, said now rather than as every pass rolled back and an
    output that does not load; the original is checked only then, to tell the two apart.
    ``shapes_from``: where the shapes were given: (flag or recipe key, recipe file or None)."""
    path = src if isinstance(src, (str, os.PathLike)) else None
    _check_weights_present(original)
    try:
        check_model(model, runtime=runtime)
        return
    except ModelCheckError as exc:
        problem = exc.message
    if shapes:
        try:
            check_model(original, runtime=runtime)
        except ModelCheckError:
            pass
        else:
            given = " ".join(f"{name}:{','.join(map(str, dims))}" for name, dims in shapes.items())
            label, recipe = shapes_from
            raise ConfigError(f"the model cannot run at this shape ({problem})", path=recipe or path, where=f"{label} {given}")
    raise ModelLoadError(f"not a model ONNX Runtime can run: {problem}", path=path)


def _check_weights_present(model: ir.Model) -> None:
    """Every external weight's file is there. A path's were checked when it was loaded; a ModelProto
    loaded with ``load_external_data=False`` reads its weights relative to the working folder (its
    own is unknown), where they are usually not: a bare FileNotFoundError in the checks otherwise."""
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor) and not Path(tensor.path).is_file():
                raise ModelLoadError(f"external data file {tensor.location!r} not found (looked in "
                                     f"{Path(tensor.path).parent.resolve()}); load the model with its weights "
                                     f"(onnx.load without load_external_data=False) or pass its path",
                                     where=f"tensor {value.name!r}")


def check_requests(options: Mapping[str, Any], checks: ValidationOptions) -> None:
    """Settings that cannot take effect are errors before any work (and before anything is written)."""
    if checks.html and not options.get("validate", True):
        raise ConfigError("an HTML report needs validation: drop --no-validate (validate: false), or --html")
    if checks.html:
        check_writable_folder(checks.html, what="HTML report")
    if options.get("calibration_cache"):
        if options.get("calibration_data") is None:  # its statistics are keyed by the data they came from
            raise ConfigError("--calibration-cache needs --calibration-data (calibration_data)")
        check_writable_folder(options["calibration_cache"], what="calibration cache")
    if options.get("calibration_samples") is not None and options.get("calibration_data") is None:
        raise ConfigError("--calibration-samples needs --calibration-data (calibration_data)")
    if options.get("lowrank_refit") not in (None, "none") and options.get("calibration_data") is None:
        raise ConfigError(f"--lowrank-refit {options['lowrank_refit']} needs --calibration-data (calibration_data)")


def check_run_paths(src: Any, dst: str | Path | None, options: Mapping[str, Any], checks: ValidationOptions,
                    other_outputs: Mapping[str, str | os.PathLike | None], *, overwrite_input: bool,
                    external_data: bool | None, recipe: str | os.PathLike | None = None,
                    weights: set[Path] = frozenset()) -> None:
    """Before any work: no output replaces an input or another output (a --report naming the input
    model would turn it into JSON, a --calibration-cache naming the output would be overwritten by it)."""
    reads = {"input model": src if isinstance(src, (str, os.PathLike)) else None, "recipe": recipe,
             "calibration data": options.get("calibration_data"), "validation data": checks.data,
             **{f"input model's external data {path.name}": path for path in sorted(weights)}}
    writes = {"output model": dst,
              # written beside the model when external data is on (or automatic, above 2 GB)
              "output model's external data": f"{dst}.data" if dst is not None and external_data is not False else None,
              "calibration cache": options.get("calibration_cache"), "HTML report": checks.html, **other_outputs}
    # the output over the input is io.check_output_path's (allowed with overwrite_input)
    check_distinct_paths(writes, reads, allowed=[("output model", "input model")])


def model_files(src: Any, label: str, model: ir.Model | None = None) -> dict[str, Path]:
    """What a model reads (``label`` names it: "original model"): its file when given as a path,
    and its external-data files (``model``: the loaded model, else it is loaded), for
    ``check_distinct_paths``: a report written over the weights file left a model without weights
    (``onnxslim validate m.onnx m.onnx --report w.bin``)."""
    files = {label: Path(src)} if isinstance(src, (str, os.PathLike)) else {}
    if model is None and files and Path(src).is_file():
        model = io.load(src)
    if model is not None:
        files.update({f"{label}'s external data {path.name}": path for path in sorted(io.referenced_files(model))})
    return files


def check_writable_folder(path: str | os.PathLike, *, what: str) -> None:
    """The folder a file will be written into exists and takes new files: else the run would fail
    after all its work (the calibration cache is saved after the pipeline), with nothing written."""
    folder = Path(path).parent
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{what} folder {str(folder)!r} is a file", path=path)
    if not folder.is_dir():
        raise OutputPathError(f"{what} folder does not exist", path=path)
    if not os.access(folder, os.W_OK | os.X_OK) or not _takes_files(folder):
        raise OutputPathError(f"{what} folder is not writable", path=path)


def _takes_files(folder: Path) -> bool:
    """Whether a file can be created in ``folder``: os.access says yes to root for any folder not
    on a read-only mount, /proc and /sys included, where creating the file then fails (exit 3 after
    all the work). The probe is removed at once."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".onnxslim-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def check_distinct_paths(writes: Mapping[str, str | os.PathLike | None], reads: Mapping[str, str | os.PathLike | None],
                         *, allowed: Sequence[tuple[str, str]] = ()) -> None:
    """No file a run writes (keyed by what it is: "JSON report", "output model"...) is another one it
    writes or one it reads: a report named like the input model would replace the model with JSON,
    a cache named like the output would be overwritten by it. ``allowed``: (written, read) pairs
    checked elsewhere (the output over the input, with --overwrite-input)."""
    taken = {role: (Path(path), _resolved(path)) for role, path in reads.items() if path is not None}
    for role, path in writes.items():
        if path is None:
            continue
        if Path(path).is_dir():  # else an IsADirectoryError after all the work (exit 3)
            raise OutputPathError(f"the {role} path is a folder; give a file name", path=path)
        target = _resolved(path)
        for other, (shown, resolved) in taken.items():
            if resolved == target and (role, other) not in allowed:
                raise OutputPathError(f"the {role} would overwrite the {other} ({shown}); give it another path", path=path)
        taken[role] = (Path(path), target)


def _resolved(path: str | os.PathLike) -> Path:
    """Symlinks and '..' resolved, so two spellings of one file compare equal."""
    return Path(path).resolve()


def interface_difference(original: ir.Model, optimized: ir.Model) -> str | None:
    """How the optimized model's inputs/outputs differ from the original's (names, order, dtypes,
    ranks, fixed dims; a dynamic dim may be pinned), or None: the application's contract."""
    def agree(a: tuple, b: tuple) -> bool:
        if a[:3] != b[:3] or (a[3] is None) != (b[3] is None):
            return False
        return a[3] is None or (len(a[3]) == len(b[3]) and all(
            not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a[3], b[3])))

    def show(row: tuple) -> str:
        return f"{row[0]} {row[1]!r} {row[2]} {list(row[3]) if row[3] is not None else '?'}"

    before, after = io_contract(original), io_contract(optimized)
    if len(before) != len(after) or not all(agree(a, b) for a, b in zip(before, after)):
        differ = next((f"{show(a)} vs {show(b)}" for a, b in zip(before, after) if not agree(a, b)),
                      f"{len(before)} vs {len(after)} inputs and outputs")
        return f"not the same inputs and outputs as the original: {differ}"
    return None
