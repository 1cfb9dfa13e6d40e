"""Runs of ONNX Runtime over the user's data, and whose fault a failed run is.

``run_batch``: the user's model over calibration data. A failure is the data's (NaN or infinite
inputs, token ids past an embedding table, a size a Reshape cannot take): one DataError line
(exit 2), which the pass manager re-raises rather than rolling the pass back.

``run_candidate``: a model a pass made (a quantized, pruned or low-rank copy) over data that the
user's model already ran. A failure is the pass's bug: a RuntimeError, which the pass manager
turns into a rollback with its reason.

Both run with ``quiet()`` options: the exception is reported once, by us, without ONNX Runtime's
own raw, coloured copy of it on stderr. Every pass family's runs over calibration data go through
these two, and validation's runs use ``quiet()`` and ``ort_message`` too.
"""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort

from onnxslim.errors import DataError, brief


def run_batch(session: ort.InferenceSession, names: list[str] | None, feeds, *, source: str | None = None) -> list:
    """``session.run`` of the user's model over a calibration batch; a failure is the data's: one DataError
    line (exit 2), which the pass manager re-raises rather than rolling the pass back. NaN or infinite
    inputs are one too: ORT runs them, and every statistic taken from the run would be garbage.
    ``source``: the batch's ``DataBatch.source`` (file and samples), which the error then names."""
    check_finite(feeds, source=source)
    try:
        return session.run(names, feeds, quiet())
    except Exception as exc:
        raise DataError(f"calibration batch rejected by the model: {ort_message(exc)}", path=source) from None


def run_candidate(session: ort.InferenceSession, names: list[str] | None, feeds, *, made: str = "quantized",
                  original: str = "float") -> list:
    """``session.run`` of a model the pass made (``made``: "quantized", "pruned", "low-rank") over calibration
    data that the ``original`` model already ran (calibration, or a cache entry for the same data and model):
    a failure is the pass's bug, a RuntimeError that the pass manager turns into a rollback with its reason."""
    try:
        return session.run(names, feeds, quiet())
    except Exception as exc:
        raise RuntimeError(f"the {made} model fails on calibration data the {original} model ran: "
                           f"{ort_message(exc)}") from None


def quiet() -> ort.RunOptions:
    """Run options without ONNX Runtime's own error line on stderr (a raw, coloured copy of the
    exception's text): the exception is raised and reported once, by us. Sessions log at level 3
    (errors); a run's own level, when set, overrides the session's."""
    options = ort.RunOptions()
    options.log_severity_level = 4  # fatal only
    return options


def ort_message(exc: BaseException) -> str:
    """The message on one line without ORT's "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :" prefix,
    so that the node and the offending value fit (MiniLM's Gather: "idx=999999 must be within ...")."""
    return brief(RuntimeError(re.sub(r"^\s*\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc))))


def check_finite(feeds, *, source: str | None = None) -> None:
    """DataError naming the first float input that holds NaN or infinite values."""
    for name, array in feeds.items():
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise DataError(f"calibration input {name!r} contains NaN or infinite values", path=source)
