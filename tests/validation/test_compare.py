"""Per-output metrics and tolerances."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from onnxslim.validation import ValidationOptions
from onnxslim.validation.compare import (LOSSLESS, LOSSY, OutputComparison, _failures, accuracy, compare_arrays,
                                         is_classifier)

RNG = np.random.default_rng(0)
LOGITS = RNG.standard_normal((64, 10)).astype(np.float32)


def test_identical_is_exact():
    c = compare_arrays("y", LOGITS, LOGITS.copy(), LOSSLESS)
    assert c.passed and c.max_abs == c.mean_abs == c.rel_l2 == 0.0 and c.cosine == 1.0 and c.snr_db == math.inf
    assert c.top1 == 1.0 and c.top5 == 1.0 and c.failures == []


def test_metrics_match_their_definitions():
    noise = np.float32(0.01) * RNG.standard_normal(LOGITS.shape).astype(np.float32)
    c = compare_arrays("y", LOGITS, LOGITS + noise, LOSSLESS)
    r, g = LOGITS.astype(np.float64).ravel(), (LOGITS + noise).astype(np.float64).ravel()
    assert c.max_abs == pytest.approx(np.abs(r - g).max())
    assert c.rel_l2 == pytest.approx(np.linalg.norm(r - g) / np.linalg.norm(r))
    assert c.snr_db == pytest.approx(10 * np.log10((r ** 2).sum() / ((r - g) ** 2).sum()))
    assert c.cosine == pytest.approx(r @ g / np.linalg.norm(r) / np.linalg.norm(g))
    assert not c.passed and any("atol" in f for f in c.failures)
    assert compare_arrays("y", LOGITS, LOGITS + noise, LOSSY).passed  # 40 dB SNR, cosine 0.9999: fine when lossy


def test_top1_agreement_counts_changed_argmax():
    got = LOGITS.copy()
    got[:8] = -got[:8]  # flips the argmax of 8 of 64 rows
    c = compare_arrays("y", LOGITS, got, LOSSY)
    assert c.top1 == pytest.approx(56 / 64) and not c.passed and any("top-1" in f for f in c.failures)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_fails_even_with_loose_tolerances(bad):
    got = LOGITS.copy()
    got[3, 4] = bad
    c = compare_arrays("y", LOGITS, got, LOSSY)
    assert c.nonfinite == 1 and not c.passed and "NaN/Inf" in c.failures[0]


@pytest.mark.parametrize("same", [True, False])
def test_a_reference_without_any_finite_value_fails_whatever_the_other_gives(same):
    # two broken models agree on NaN everywhere; nothing was compared, so nothing passes
    ref = np.full((4, 8), np.nan, np.float32)
    got = ref.copy() if same else RNG.standard_normal((4, 8)).astype(np.float32)
    c = compare_arrays("y", ref, got, LOSSY)
    assert not c.passed and any("nothing was compared" in f for f in c.failures)
    partly = LOGITS.copy()
    partly[0, 0] = np.nan  # the finite rest is still compared
    assert compare_arrays("y", partly, partly.copy(), LOSSY).passed


def test_shape_mismatch_fails():
    c = compare_arrays("y", LOGITS, LOGITS[:, :5], LOSSLESS)
    assert not c.passed and "shape" in c.failures[0]


def test_thresholds_defaults_and_overrides():
    assert ValidationOptions().thresholds() == LOSSLESS
    assert ValidationOptions(lossy=True).thresholds() == LOSSY
    assert ValidationOptions(lossy=True, atol=0.1).tolerances() == (0.1, 0.0)
    assert ValidationOptions(min_snr=10).thresholds().min_snr == 10


def test_accuracy_uses_labels():
    labels = np.argmax(LOGITS, axis=1)
    labels[:16] = (labels[:16] + 1) % 10
    assert accuracy({"y": LOGITS}, labels) == ("y", pytest.approx(48 / 64))
    assert accuracy({"y": LOGITS}, None) is None


def test_lossy_tolerances_skip_the_elementwise_check_without_numpy_warnings():
    import warnings

    ref = np.array([0.0, 1.0, -2.0, 0.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inf * 0 used to raise "invalid value encountered in multiply"
        result = compare_arrays("y", ref, ref + np.float32(0.001), LOSSY)
    assert result.passed and not result.failures


def test_normalized_embeddings_are_not_held_to_top1():
    embedding = RNG.standard_normal((32, 384))
    embedding = (embedding / np.linalg.norm(embedding, axis=1, keepdims=True)).astype(np.float32)
    noisy = embedding + np.float32(0.005) * RNG.standard_normal(embedding.shape).astype(np.float32)
    c = compare_arrays("sentence_embedding", embedding, noisy, LOSSY)
    assert c.top1 is None and c.passed, c.failures  # cosine ~0.995: a good int8 embedding
    probabilities = np.zeros((32, 10), np.float32)
    probabilities[:, 3] = 1.0  # a confident softmax has unit-norm rows too, but no negative value
    assert compare_arrays("probs", probabilities, probabilities, LOSSY).top1 == 1.0


def test_lossy_snr_floor_matches_the_cosine_floor():
    """An uncorrelated error at cosine just above 0.99 passes both floors; just below fails both."""
    ref = RNG.standard_normal(200_000)
    for scale, passes in ((0.135, True), (0.150, False)):
        got = ref + scale * RNG.standard_normal(ref.shape)
        c = compare_arrays("y", ref.astype(np.float32)[:, None], got.astype(np.float32)[:, None], LOSSY)
        assert (c.cosine >= 0.99) is passes and (c.snr_db >= LOSSY.min_snr) is passes, (c.cosine, c.snr_db)


def test_integer_outputs_are_judged_by_agreement_not_by_label_numbers():
    # an ArgMax output: one changed prediction in 20 failed or passed on its label numbers' SNR
    ref = np.arange(20, dtype=np.int64) % 10
    for changed in (3, 9):  # 3 -> 4 and 9 -> 0: the same one mistake
        got = ref.copy()
        got[changed] = (ref[changed] + 1) % 10
        c = compare_arrays("label", ref, got, LOSSY)
        assert c.passed and c.top1 == 0.95, c.failures
    got = (ref + 1) % 10
    got[:10] = ref[:10]  # half the labels changed
    c = compare_arrays("label", ref, got, LOSSY)
    assert not c.passed and c.top1 == 0.5 and c.failures == ["equal values 0.500 < 0.9 (integer output: judged by agreement)"]
    one = ref.copy()
    one[0] = 1
    assert not compare_arrays("label", ref, one, LOSSLESS).passed  # lossless: every value equal


def test_a_reference_within_atol_of_zero_is_judged_elementwise():
    # PP-OCRv4 det on random pixels outputs ~1e-10 everywhere: a lossless cleanup failed on cosine 0.92
    from onnxslim.validation.compare import LOSSLESS, LOSSY

    ref = (RNG.standard_normal((4, 100)) * 1e-10).astype(np.float32)
    got = (ref + RNG.standard_normal((4, 100)).astype(np.float32) * 4e-11).astype(np.float32)
    c = compare_arrays("maps", ref, got, LOSSLESS)
    assert c.cosine < 0.99 and c.passed, c.failures
    assert not compare_arrays("maps", ref, got + np.float32(1e-3), LOSSLESS).passed  # beyond atol still fails
    assert not compare_arrays("maps", ref, got, LOSSY).passed  # no elementwise floor: cosine decides


def test_a_non_finite_value_agrees_only_with_the_same_one():
    ref = np.array([np.inf, -np.inf, np.nan, 1.0], np.float32)
    assert compare_arrays("y", ref, ref.copy(), LOSSLESS).passed  # NaN with NaN, +Inf with +Inf
    for position, value in ((0, -np.inf), (0, np.nan), (1, np.inf), (2, np.inf)):
        got = ref.copy()
        got[position] = value
        c = compare_arrays("y", ref, got, LOSSY)
        assert not c.passed and "1 value(s) NaN/Inf in one model but not the other" in c.failures[0], (position, value)


def test_integers_are_compared_as_integers_under_lossless_tolerances():
    ref = np.full((4, 100), 30000, np.int64)  # token ids: rtol 1e-4 x 30000 allowed +-3
    got = ref.copy()
    got[0, 0] += 1
    c = compare_arrays("ids", ref, got, LOSSLESS)
    assert not c.passed and c.failures[0].startswith("1 element(s) beyond atol 0.0001 (max abs 1)"), c.failures
    big = np.full(8, 2**60, np.int64)  # float64 cannot tell 2**60 + 1 from 2**60
    c = compare_arrays("ids", big, big + 1, LOSSLESS)
    assert not c.passed and c.max_abs == 1.0


def test_huge_outputs_keep_their_metrics(recwarn):
    ref = np.random.default_rng(0).standard_normal(64) * 1e200
    c = compare_arrays("y", ref, -ref, LOSSY)  # sums of squares overflow float64
    assert not c.passed and c.cosine == -1.0 and c.snr_db < 0, c
    assert compare_arrays("y", ref, ref * (1 + 1e-7), LOSSY).passed
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_nan_metric_fails():
    c = OutputComparison("y", 0.0, 0.0, math.nan, 0, True, snr_db=math.nan)
    failures = _failures(c, np.zeros(3), np.ones(3), 0, LOSSY)
    assert failures == ["cosine nan < 0.99", "SNR nan < 17 dB"]


def test_text_outputs_are_compared_for_equality():
    ref = np.array(["a", "b", "c", "d"], dtype=object)
    got = ref.copy()
    got[2] = "g"
    c = compare_arrays("words", ref, got, LOSSY)
    assert not c.passed and c.top1 == 0.75
    assert compare_arrays("words", ref, ref.copy(), LOSSLESS).passed


def test_a_failing_metric_is_printed_below_its_floor():
    c = OutputComparison("y", 0.0, 0.0, 1.0, 0, True, snr_db=39.96)
    assert _failures(c, np.zeros(3), np.ones(3), 0, LOSSLESS) == ["SNR 39.96 < 40 dB"]


def test_infinite_rows_are_no_unit_rows(recwarn):
    scores = np.array([[np.inf, 1.0, -2.0], [1e300, 1e300, 3.0]], np.float64)
    assert is_classifier(scores) and not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_integers_far_apart_do_not_wrap_into_agreement():
    # int64 subtraction wrapped: 2**63 apart read as a difference below atol
    ref = np.array([2**63 + 5, 1, 2], np.uint64)
    got = np.array([5, 1, 2], np.uint64)
    c = compare_arrays("h", ref, got, LOSSLESS)
    assert not c.passed and c.max_abs >= 9e18
    low = np.array([np.iinfo(np.int64).min, 0], np.int64)
    assert not compare_arrays("h", low, np.zeros(2, np.int64), LOSSLESS).passed


def test_each_floor_fails_on_its_own():
    """A cosine floor above what the output reaches fails it even when SNR and top-1 pass (and so
    for SNR alone), naming only the check that failed."""
    embedding = RNG.standard_normal((32, 16)).astype(np.float32)  # [N, 16] rows: held to top-1 too, turned off below
    got = embedding + np.float32(0.05) * RNG.standard_normal(embedding.shape).astype(np.float32)  # cosine ~0.9988, 26 dB
    loose = dataclasses.replace(LOSSY, min_top1=0.0)
    c = compare_arrays("y", embedding, got, dataclasses.replace(loose, min_cosine=0.9999, min_snr=0.0))
    assert 0.998 < c.cosine < 0.9999 and c.snr_db > 20
    assert c.failures == [f"cosine {c.cosine:.6f} < 0.9999"] and not c.passed
    assert compare_arrays("y", embedding, got, dataclasses.replace(loose, min_cosine=0.998, min_snr=0.0)).passed
    c = compare_arrays("y", embedding, got, dataclasses.replace(loose, min_cosine=0.0, min_snr=40.0))
    assert c.failures == [f"SNR {c.snr_db:.1f} < 40 dB"] and not c.passed


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def test_per_position_distributions_are_judged_by_top1_per_position():
    # a CTC text recognizer's [N, T, C] softmax: a quantized model that changes characters at a
    # quarter of the positions kept cosine 0.99 and passed, with no top-1 check on 3-D outputs
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 20, 30)) * 4
    ref = _softmax(logits)
    swapped = logits.copy()
    top = logits.argmax(axis=-1)
    flip = rng.random((4, 20)) < 0.25
    n, t = np.nonzero(flip)
    swapped[n, t, top[n, t]] = logits[n, t].min() - 1  # the top class drops to the bottom there
    c = compare_arrays("probs", ref, _softmax(swapped), LOSSY)
    assert c.top1 == pytest.approx(1 - flip.mean())
    assert "top-1 agreement" in " ".join(c.failures)
    assert compare_arrays("probs", ref, ref.copy(), LOSSLESS).top1 == 1.0


def test_three_d_outputs_that_are_not_distributions_have_no_top1():
    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((2, 7, 16)).astype(np.float32)  # hidden states, box maps
    assert compare_arrays("h", hidden, hidden + 1e-3, LOSSY).top1 is None
    assert not is_classifier(np.abs(hidden))  # non-negative but not summing to one
