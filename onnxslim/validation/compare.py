"""Per-output metrics and the tolerances that decide pass or fail.

Default tolerances (docs/validation.md explains them):

============  ===========================  =========================================
check         lossless pipeline (cleanup)  a lossy pass ran (quantize, prune, lowrank)
============  ===========================  =========================================
atol, rtol    1e-4, 1e-4 (per element)     not checked (inf): judged by the rows below
min cosine    0.9999                       0.99
min SNR       40 dB                        17 dB
min top-1     0.99                         0.90  (classifier-like outputs only)
============  ===========================  =========================================

The lossy SNR floor is the cosine floor's equivalent: an error uncorrelated with the output gives
``SNR = -10 log10(2 (1 - cosine))``, 17.0 dB at cosine 0.99. At 20 dB (cosine 0.995) the SNR floor
alone failed all-MiniLM-L6-v2 quantized statically (cosine 0.9925, 18.2 dB), the very result the
quantization targets call good.

An output whose reference lies within atol of zero everywhere is judged by atol/rtol alone (its
cosine and SNR would measure float rounding). A non-finite value (NaN, Inf) agrees only with the
same one (NaN with NaN, +Inf with +Inf): anything else there always fails; so does an output whose
reference has no finite value at all (nothing was compared), and a metric that comes out NaN. An
integer, bool or text output (class indices, masks, token ids, labels) is judged by the share of
equal values against the top-1 floor, plus atol alone when it is finite (no rtol: id 30000 is not
"about" 30003), not by cosine or SNR.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tolerances:
    atol: float
    rtol: float
    min_cosine: float
    min_snr: float
    min_top1: float


LOSSLESS = Tolerances(atol=1e-4, rtol=1e-4, min_cosine=0.9999, min_snr=40.0, min_top1=0.99)
LOSSY = Tolerances(atol=math.inf, rtol=math.inf, min_cosine=0.99, min_snr=17.0, min_top1=0.90)


@dataclasses.dataclass
class OutputComparison:
    name: str
    max_abs: float
    mean_abs: float
    cosine: float
    nonfinite: int
    """Non-finite values in the optimized model's output."""
    passed: bool
    rel_l2: float = 0.0
    snr_db: float = math.inf
    top1: float | None = None
    top5: float | None = None
    ref_nonfinite: int = 0
    shape: list[int] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    """Which checks failed, in words."""


def is_classifier(array: np.ndarray) -> bool:
    """2-D [N, C] float with C > 1: scores or logits per class; not L2-normalized signed rows,
    which are embeddings (a sentence embedding's argmax is no class, yet all-MiniLM-L6-v2's
    ``[N, 384]`` output was held to top-1 agreement). Softmax rows of a confident classifier
    have unit norm too, but no negative value."""
    if array.ndim == 3 and array.shape[-1] > 1 and np.issubdtype(array.dtype, np.floating) and array.size:
        return _distributions(array)
    if not (array.ndim == 2 and array.shape[1] > 1 and np.issubdtype(array.dtype, np.floating)) or not len(array):
        return False
    finite = np.nan_to_num(array.astype(np.float64, copy=False), posinf=0.0, neginf=0.0)
    with np.errstate(over="ignore"):  # huge rows have norm inf: not unit rows, no warning on stderr
        norms = np.sqrt(np.sum(finite * finite, axis=1))
    return not (np.allclose(norms, 1.0, atol=1e-3) and bool((finite < 0).any()))


def _distributions(array: np.ndarray) -> bool:
    """``[N, T, C]`` rows that are probability distributions over C (a softmax per position: a CTC
    text recognizer, a token classifier): judged per position by top-1 agreement. Other 3-D
    outputs (hidden states, box maps) have no class axis to agree on."""
    rows = array.reshape(-1, array.shape[-1]).astype(np.float64)
    if not np.isfinite(rows).all() or rows.min() < -1e-6:
        return False
    return bool(np.allclose(rows.sum(axis=1), 1.0, atol=1e-3))


def compare_arrays(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerances, *, classify: bool = True) -> OutputComparison:
    """All metrics of ``got`` against the reference ``ref``; ``failures`` lists the checks it misses.

    ``classify``: top-1/top-5 agreement for classifier-like arrays (off for intermediate tensors).
    """
    if ref.shape == got.shape and ref.dtype == got.dtype and np.array_equal(ref, got, equal_nan=_inexact(ref)):
        top = (1.0, 1.0 if ref.shape[-1] > 5 else None) if classify and is_classifier(ref) else (None, None)
        result = OutputComparison(name, 0.0, 0.0, 1.0, _nonfinite(got), True, 0.0, math.inf, *top,
                                  ref_nonfinite=_nonfinite(ref), shape=list(got.shape))
        result.failures = _nothing_compared(ref)
        result.passed = not result.failures
        return result
    if ref.shape != got.shape:
        return OutputComparison(name, math.inf, math.inf, 0.0, _nonfinite(got), False, math.inf, -math.inf,
                                shape=list(got.shape), failures=[f"shape {list(got.shape)} != reference {list(ref.shape)}"])
    ref_ok, got_ok = _finite(ref), _finite(got)
    both = ref_ok & got_ok
    diff = _abs_diff(ref[both], got[both])
    r, g = _scaled(ref[both], got[both])
    result = OutputComparison(
        name, float(diff.max(initial=0.0)), float(diff.mean()) if diff.size else 0.0, _cosine(r, g),
        int((~got_ok).sum()), True, _rel_l2(r, g), _snr_db(r, g),
        ref_nonfinite=int((~ref_ok).sum()), shape=list(got.shape),
    )
    if classify and is_classifier(ref):
        result.top1, result.top5 = _top_k_agreement(ref, got)
    categorical = not _inexact(ref)
    if categorical:  # class indices, masks, counts: the share of equal values, not a cosine of label numbers
        result.top1 = float(np.mean(ref == got)) if ref.size else 1.0
    ref_abs = np.zeros(diff.shape) if ref.dtype.kind in "OUSb" else np.abs(ref[both].astype(np.float64))
    result.failures = _nothing_compared(ref) + _failures(result, diff, ref_abs, _nonfinite_mismatch(ref, got, ref_ok, got_ok),
                                                         tol, categorical=categorical)
    result.passed = not result.failures
    return result


def _nonfinite_mismatch(ref: np.ndarray, got: np.ndarray, ref_ok: np.ndarray, got_ok: np.ndarray) -> int:
    """Positions where one value is NaN/Inf and the other is not, or both are but differ (+Inf
    against -Inf or NaN): a non-finite value agrees only with the same one."""
    mismatch = int((ref_ok != got_ok).sum())
    neither = ~ref_ok & ~got_ok
    if neither.any():
        a, b = ref[neither], got[neither]
        mismatch += int((~((a == b) | (np.isnan(a) & np.isnan(b)))).sum())
    return mismatch


def _abs_diff(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """|ref - got| per element, as float64; integers subtracted as integers (ids near 2**60 lose
    their last digits in float64, and a +1 read as 0), text as 0 where equal and 1 where not."""
    if ref.dtype.kind in "OUSb":
        return (ref != got).astype(np.float64)
    if ref.dtype.kind in "iu":
        # |a - b| in uint64 arithmetic, which wraps mod 2**64 like int64 does: exact for any two int64
        # or uint64 values (int64 subtraction overflowed, and 2**63 apart read as agreement)
        unsigned = ref.dtype.kind == "u" and got.dtype.kind == "u"
        a, b = (ref.astype(np.uint64), got.astype(np.uint64)) if unsigned else (ref.astype(np.int64), got.astype(np.int64))
        au, bu = a.astype(np.uint64), b.astype(np.uint64)
        return np.where(a >= b, au - bu, bu - au).astype(np.float64)
    return np.abs(ref.astype(np.float64) - got.astype(np.float64))


def _scaled(ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64, divided by the larger magnitude: cosine, SNR and relative L2 do not change,
    and their sums of squares no longer overflow (from ~1e154 on they came out NaN and passed)."""
    if ref.dtype.kind in "OUS":  # text: equal or not; its metrics come from the equality mask
        return np.ones(ref.shape), (ref == got).astype(np.float64)
    r, g = ref.astype(np.float64), got.astype(np.float64)
    largest = max(float(np.abs(r).max(initial=0.0)), float(np.abs(g).max(initial=0.0)))
    if 0.0 < largest < math.inf:
        r /= largest
        g /= largest
    return r, g


def _nothing_compared(ref: np.ndarray) -> list[str]:
    """A reference that is NaN/Inf everywhere leaves nothing to compare: two broken models would
    agree (MiniLM on random attention masks of 0..7 is NaN throughout; a pruned copy that lost its
    accuracy passed at cosine 1.0)."""
    if ref.size and not _finite(ref).any():
        return ["the original model's output is NaN/Inf everywhere on this data: nothing was compared "
                "(validate on realistic inputs: --data)"]
    return []


def _failures(c: OutputComparison, diff: np.ndarray, ref_abs: np.ndarray, nonfinite_mismatch: int, tol: Tolerances,
              *, categorical: bool = False) -> list[str]:
    """``categorical`` (an integer or bool output): judged by the share of equal values against the
    top-1 floor; a cosine or SNR of an ArgMax's label numbers would fail 3 -> 4 less than 0 -> 9."""
    failures = []
    if nonfinite_mismatch:
        failures.append(f"{nonfinite_mismatch} value(s) NaN/Inf in one model but not the other")
    # an infinite atol or rtol turns the elementwise check off (lossy passes: inf x 0 would warn); an
    # integer is held to atol alone (rtol 1e-4 let token id 30000 come back as 30003)
    rtol = 0.0 if categorical else tol.rtol
    beyond = 0 if math.isinf(tol.atol) or math.isinf(tol.rtol) else int((diff > tol.atol + rtol * ref_abs).sum())
    if beyond:
        bound = f"atol {tol.atol:g}" if categorical else f"atol {tol.atol:g} + rtol {tol.rtol:g} x |ref|"
        failures.append(f"{beyond} element(s) beyond {bound} (max abs {c.max_abs:.3g})")
    if categorical:
        if c.top1 is not None and c.top1 < tol.min_top1:
            failures.append(f"equal values {_below(c.top1, tol.min_top1, 3)} (integer output: judged by agreement)")
        return failures
    if not math.isinf(tol.atol) and not beyond and float(ref_abs.max(initial=0.0)) <= tol.atol:
        # the whole reference lies within atol of 0 (PP-OCRv4 det on random pixels: ~1e-10): cosine and
        # SNR of values below the tolerance measure float rounding, and failed a lossless cleanup
        return failures
    # `not >=`: a metric that came out NaN fails instead of passing every comparison
    if not c.cosine >= tol.min_cosine:
        failures.append(f"cosine {_below(c.cosine, tol.min_cosine, 6)}")
    if not c.snr_db >= tol.min_snr:
        failures.append(f"SNR {_below(c.snr_db, tol.min_snr, 1)} dB")
    if c.top1 is not None and not c.top1 >= tol.min_top1:
        failures.append(f"top-1 agreement {_below(c.top1, tol.min_top1, 3)}")
    return failures


def _below(value: float, floor: float, digits: int) -> str:
    """``value < floor`` with ``digits`` decimals, or as many more as it takes to show that it is
    below ("SNR 40.0 dB < 40 dB" read as a pass)."""
    while digits < 12 and f"{value:.{digits}f}" == f"{floor:.{digits}f}":
        digits += 1
    return f"{value:.{digits}f} < {floor:g}"


def _inexact(array: np.ndarray) -> bool:
    return bool(np.issubdtype(array.dtype, np.inexact))


def _finite(array: np.ndarray) -> np.ndarray:
    return np.isfinite(array) if np.issubdtype(array.dtype, np.inexact) else np.ones(array.shape, bool)


def _nonfinite(array: np.ndarray) -> int:
    return int((~_finite(array)).sum())


# Plain sums instead of np.linalg.norm / dot: BLAS threads on busy machines cost milliseconds per call.
def _cosine(r: np.ndarray, g: np.ndarray) -> float:
    norms = math.sqrt(float(np.sum(r * r)) * float(np.sum(g * g)))
    if norms == 0.0:
        return 1.0 if np.array_equal(r, g) else 0.0
    return float(np.clip(float(np.sum(r * g)) / norms, -1.0, 1.0))


def _rel_l2(r: np.ndarray, g: np.ndarray) -> float:
    err, ref = math.sqrt(float(np.sum((r - g) ** 2))), math.sqrt(float(np.sum(r * r)))
    if err == 0.0:
        return 0.0
    return err / ref if ref else math.inf


def _snr_db(r: np.ndarray, g: np.ndarray) -> float:
    noise, signal = float(np.sum((r - g) ** 2)), float(np.sum(r * r))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal else -math.inf


def _top_k_agreement(ref: np.ndarray, got: np.ndarray) -> tuple[float, float | None]:
    """Top-1: same argmax. Top-5: the reference's top class is among the optimized model's top 5."""
    ref, got = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])  # [N, T, C]: per position
    ref_top = np.argmax(np.nan_to_num(ref), axis=1)
    top1 = float(np.mean(ref_top == np.argmax(np.nan_to_num(got), axis=1)))
    if ref.shape[1] <= 5:
        return top1, None
    top5 = np.argsort(-np.nan_to_num(got), axis=1)[:, :5]
    return top1, float(np.mean((top5 == ref_top[:, None]).any(axis=1)))


def accuracy(outputs: dict[str, np.ndarray], labels: np.ndarray | None) -> tuple[str, float] | None:
    """(output name, top-1 accuracy) for the first classifier-like output with one row per label."""
    if labels is None:
        return None
    for name, array in outputs.items():
        if array.ndim == 2 and is_classifier(array) and len(array) == len(labels):  # one label per row
            return name, float(np.mean(np.argmax(array, axis=1) == labels))
    return None
