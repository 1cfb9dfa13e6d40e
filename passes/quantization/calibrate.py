"""Streamed calibration: one ONNX Runtime session whose extra outputs are the tensors to range.

Each batch updates per-tensor statistics and is dropped, so memory does not grow with the
number of samples. Bad data stops the run with one DataError: no samples, NaN/inf inputs,
or a batch the model rejects. Every run of ONNX Runtime over calibration data in this package
goes through ``run_batch`` (the user's model: a failure is the data's) or ``run_candidate`` (a
model the pass made, on data the user's model already ran: a failure is the pass's), both from
``onnxslim.runtime.data_runs`` and importable from here.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.data.readers import sample_count
from onnxslim.errors import DataError, first_line
from onnxslim.input_shapes import batch_axis_is_dynamic, batch_length, split_batch
from onnxslim.passes.quantization.cache import cache_key
from onnxslim.passes.quantization.derived import apply, derivable
from onnxslim.passes.quantization.hard_swish import HardSwishUse, hard_swish_use
from onnxslim.passes.quantization.probes import (MAX_POOLED_AXES, Probe, is_float, max_probe, reduce_into, sample_probe,
                                                 size_probe, spatial_rank)
from onnxslim.passes.quantization.plan import feeds_only_silu
from onnxslim.passes.quantization.rescaled import RescaledStats, Rescaling
from onnxslim.passes.quantization.statistics import TensorStats
from onnxslim.runtime.data_runs import check_finite, run_batch, run_candidate  # noqa: F401 - run_candidate: re-exported
from onnxslim.runtime.session import make_session

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]


PART_BYTES = 128 << 20
"""Fetched bytes per calibration run. A batch whose fetched tensors would take more runs in parts
along its batch axis, so that the first run pages in one sample's tensors instead of a whole
batch's (PP-OCRv4 det: 330 MB per batch of 8) and a worker thread can reduce one part while ORT
runs the next without doubling a large set of output buffers. The part size comes from the first
run, which takes one sample. Paired A/B at 256 samples (phase x float floor, unsplit / 32 MB /
128 MB): PP-OCRv4 rec 1.92 / 1.85 / 1.56, det 1.70 / 1.97 / 1.35; one-sample parts cost rec throughput."""


class Statistics(dict):
    """Tensor name -> ``TensorStats``, and ``samples``: how many calibration samples they cover;
    ``cache``: what became of the calibration cache, in words ("" without one)."""

    def __init__(self, stats: Mapping[str, TensorStats], *, samples: int, cache: str = ""):
        super().__init__(stats)
        self.samples, self.cache = samples, cache


def collect_statistics(model: ir.Model, batches: Iterable, tensors: Sequence[str], *,
                       progress: Progress | None = None, histograms: Collection[str] | None = None,
                       probes: Sequence[Probe] = (), rescaled: Mapping[str, Rescaling] | None = None
                       ) -> tuple[dict[str, TensorStats], int]:
    """Statistics of ``tensors`` (graph inputs or intermediate values) over all batches; (stats, samples).

    ``histograms``: the tensors that need a histogram (all when None); the others get min/max only,
    which is what the minmax method uses (the histogram update is most of calibration's own cost).
    ``probes``: in-graph reductions of other intermediate tensors, fetched instead of them
    (``probes.py``): their stats hold what the probes give (an element count, a maximum, or
    statistics of a strided sample).
    ``rescaled``: fetched tensors whose statistics are those of the tensor divided per channel by
    divisors decided by its first ``Rescaling.samples`` samples (``rescaled.py``); a batch holding
    that sample runs in two pieces, cut after it, when its batch axis allows.

    A worker thread reduces each part's outputs while ONNX Runtime runs the next part."""
    collector = _Collector(model, tensors, histograms=histograms, probes=probes, rescaled=rescaled or {})
    with ThreadPoolExecutor(1, thread_name_prefix="onnxslim-calibrate") as reducer:
        for batch in batches:
            collector.add(batch, reducer)
            if progress:
                progress(collector.samples)
        collector.finish()
    if collector.samples == 0:
        raise DataError("calibration data has no samples")
    logger.info("calibrated %d tensors on %d samples", len(collector.stats), collector.samples)
    return collector.stats, collector.samples


class _Collector:
    """One calibration's session, what it fetches, and the statistics each run's values update."""

    def __init__(self, model: ir.Model, tensors: Sequence[str], *, histograms: Collection[str] | None,
                 probes: Sequence[Probe], rescaled: Mapping[str, Rescaling]):
        names = list(dict.fromkeys(tensors))
        outputs = {v.name for v in model.graph.outputs}
        self.inputs = [t for t in names if _is_input(model, t)]
        session = make_session(model, extra_outputs=[t for t in names if t not in outputs and t not in self.inputs],
                               probes=[probe.node for probe in probes], memory_pattern=False)
        self.fetched = [t for t in names if t not in self.inputs] + [probe.output for probe in probes]
        self.histograms = histograms
        self.stats = {t: TensorStats() for t in (*names, *(probe.tensor for probe in probes))}
        self.by_output = {probe.output: probe for probe in probes}
        self.deferred = {name: RescaledStats(rescaling, self.stats[name], histogram=self.wants_histogram(name))
                         for name, rescaling in rescaled.items() if name in self.fetched}
        self.parts = _PartRuns(session, self.fetched, batch_axis_is_dynamic(model))
        self.samples, self.pending = 0, None

    def wants_histogram(self, name: str) -> bool:
        return self.histograms is None or name in self.histograms

    def add(self, batch, reducer: ThreadPoolExecutor) -> None:
        """Runs one batch of the reader (cut where a rescaled tensor's divisors are decided) and ranges it."""
        feeds = batch.inputs if hasattr(batch, "inputs") else batch
        # the reader knows which inputs are passed whole (scalars, no batch axis); a bare dict: the first input
        size = sample_count(batch)
        for piece, weight in _cut_at(feeds, _next_decision(self.deferred.values(), self.samples) - self.samples,
                                     self.parts.splittable):
            self._feed(piece, weight, getattr(batch, "source", None), reducer)
            self.samples += round(size * weight)
            if any(not d.decided and self.samples >= d.rescaling.samples for d in self.deferred.values()):
                _settled(self.pending)  # the reducer is idle while the divisors are decided
                for held in self.deferred.values():
                    if self.samples >= held.rescaling.samples:
                        held.decide()
        for name in self.inputs:  # whole batches, as when none is cut: a cut must not move their histograms
            self.stats[name].update(np.asarray(feeds[name], dtype=np.float32), histogram=self.wants_histogram(name))

    def finish(self) -> None:
        _settled(self.pending)
        for held in self.deferred.values():  # fewer samples than asked for
            held.decide()

    def _feed(self, feeds, weight: float, source: str | None, reducer: ThreadPoolExecutor) -> None:
        """Runs and reduces ``feeds``, which are ``weight`` of a batch from ``source``."""
        if not self.fetched:  # else run_batch checks each part it runs
            check_finite(feeds, source=source)
        for values, share, whole in self.parts(feeds, source) if self.fetched else ():
            _settled(self.pending)
            self.pending = reducer.submit(self._reduce, values, share * weight)
            if whole:  # an unsplit batch: alive during the next run, it would double ORT's output buffers
                self.pending.result()
            values = None

    def _reduce(self, values: list, share: float) -> None:
        for name, value in zip(self.fetched, values):
            if name in self.deferred:
                self.deferred[name].update(np.asarray(value, dtype=np.float32), share)
            elif name in self.by_output:
                reduce_into(self.stats[self.by_output[name].tensor], self.by_output[name], value, share)
            else:
                self.stats[name].update(np.asarray(value, dtype=np.float32), histogram=self.wants_histogram(name), share=share)


def _next_decision(deferred: Iterable[RescaledStats], samples: int) -> int:
    """The sample count at which the next rescaled tensor's divisors are decided (0: none left)."""
    return min((d.rescaling.samples for d in deferred if not d.decided and d.rescaling.samples > samples), default=0)


def _cut_at(feeds: dict, at: int, splittable: bool) -> list[tuple[dict, float]]:
    """``feeds`` as pieces (with their fraction of the batch): cut after ``at`` samples when that
    falls inside the batch, so that divisors are decided on exactly that many samples (as if the
    data had been cut there)."""
    pieces = split_batch(feeds, at, splittable)
    if pieces is None:
        return [(feeds, 1.0)]
    share = at / batch_length(feeds)
    return [(pieces[0], share), (pieces[1], 1 - share)]


def _settled(pending) -> None:
    if pending is not None:
        pending.result()


class _PartRuns:
    """Runs a batch whole, or in parts of about ``PART_BYTES`` fetched bytes when its batch axis allows."""

    def __init__(self, session, names: list[str], splittable: bool):
        self.session, self.names, self.splittable, self.part = session, names, splittable, None

    def __call__(self, feeds, source: str | None = None) -> Iterator[tuple[list, float, bool]]:
        """(fetched values, fraction of the batch, whether the batch ran unsplit) per run; an error
        names ``source`` (the batch's file and samples)."""
        size = batch_length(feeds) if self.splittable else None
        if size is None:
            yield run_batch(self.session, self.names, feeds, source=source), 1.0, True
            return
        start = 0
        while start < size:
            stop = start + self._next_length(size - start)
            values = run_batch(self.session, self.names, {k: v[start:stop] for k, v in feeds.items()}, source=source)
            if self.part is None:  # the first run took one sample
                self.part = max(1, PART_BYTES // max(1, sum(np.asarray(v).nbytes for v in values)))
            yield values, (stop - start) / size, False
            values = None
            start = stop

    def _next_length(self, left: int) -> int:
        """Samples in the next run: one until the part size is known, then ``left`` in as few runs
        of at most ``part`` as possible, of near-equal length (8 in parts of 7: 4 + 4, not 7 + 1).
        Warm, ORT takes the same time either way (32 samples: YOLOv8n 0.51 / 0.51 s, PP-OCRv4 rec
        0.42 s for 7 + 1, 0.39 s for 4 + 4), and the largest set of live outputs is smaller."""
        if self.part is None:
            return 1
        return -(-left // -(-left // self.part))


def tensor_statistics(model: ir.Model, calibration: Iterable, tensors: Sequence[str], *, minmax_only: bool = False,
                      cache=None, progress: Callable[[str], None] | None = None,
                      rescaled: Mapping[str, Rescaling] | None = None) -> Statistics:
    """Statistics of ``tensors``: from ``cache`` when it holds them all for this data and model
    (``cache.py``: the key is the data's identity and a fingerprint of ``model``), else calibrated.

    Sigmoid / SiLU / HardSigmoid / HardSwish outputs, shape-only ops' outputs and Concat outputs
    are derived from their inputs' statistics instead of fetched (``derived.py``). ``minmax_only``:
    histograms only where ranging still reads them (SiLU inputs, whose lower bound is searched);
    derived min/max need none, and a hard swish's input is ranged from its output's maximum
    (``hard_swish.py``). Such partial statistics are never cached, since another method would
    silently read them as minmax.

    ``rescaled`` (see ``collect_statistics``) are fetched whole. Their settings join the cache's
    key, and the cache keeps the channel maxima that decided their divisors: a cached run decides
    the same divisors (calls each ``divisor``) without reading the data.
    """
    source, rescaled = describe(calibration), dict(rescaled or {})
    key = cache_key(model, calibration, _variant(rescaled)) if cache is not None else None
    found = cache.lookup(key, tensors, rescaled) if key is not None else None
    if found is not None:
        logger.info("calibration statistics reused from the cache (%s)", source)
        for name, rescaling in rescaled.items():
            if cache.magnitudes[name].size:
                rescaling.divisor(cache.magnitudes[name])
        return Statistics(found, samples=cache.samples, cache="reused")
    verdict = ""
    if cache is not None:
        verdict = ("not used: the data has no identity to check it against" if key is None
                   else f"not used: {cache.miss(key, tensors, rescaled)}")
        logger.info("calibration cache %s", verdict)
    magnitudes: dict[str, np.ndarray] = {}
    rescaled = {name: dataclasses.replace(r, divisor=_recorded(r.divisor, magnitudes, name)) for name, r in rescaled.items()}
    report = (lambda n: progress(f"quantize-static: calibrating, {n} samples")) if progress else None
    stats, samples, histograms = _calibrated(model, calibration, tensors, minmax_only=minmax_only, rescaled=rescaled,
                                             progress=report)
    if key is not None and histograms is None:
        empty = np.zeros(0, np.float32)  # none seen: no divisor
        cache.store(key, source, samples, stats, {name: magnitudes.get(name, empty) for name in rescaled})
        verdict += "; calibrated and stored"
    elif key is not None:
        verdict += "; minmax statistics are partial and not stored"
    return Statistics(stats, samples=samples, cache=verdict)


def _calibrated(model: ir.Model, calibration: Iterable, tensors: Sequence[str], *, minmax_only: bool,
                rescaled: Mapping[str, Rescaling], progress: Progress | None):
    """(stats, samples, the tensors given histograms (None: all)) from one calibration run over
    ``calibration``: derivable tensors derived, probes where ``minmax_only`` allows them."""
    wanted = set(tensors)
    computed = {name: d for name, d in derivable(model.graph, wanted).items() if name not in rescaled}
    fetched = wanted - set(computed)
    histograms, pooled, sampled = None, {}, {}
    if minmax_only:
        histograms = {v.name for node in model.graph for v in node.outputs if v.name in wanted and feeds_only_silu(v)}
        pooled = _pooled_hard_swish_inputs(model.graph, fetched - histograms - set(rescaled))
        sampled = _sampled_silu_inputs(model.graph, (fetched & histograms) - set(rescaled))
    # copies whose size the shapes do not give are counted: a Concat's union weighs its parts by size
    counted = [size_probe(name) for name, d in computed.items() if d.function is None and d.size is None]

    def run_calibration(pooled: dict, sampled: dict):
        probes = counted + [max_probe(use.output.name) for use in pooled.values()]
        probes += [probe for value, spatial in sampled.items() for probe in (max_probe(value.name), sample_probe(value, spatial))]
        skipped = set(pooled) | {value.name for value in sampled}
        return collect_statistics(model, calibration, [t for t in tensors if t not in computed and t not in skipped],
                                  histograms=histograms, probes=probes, progress=progress, rescaled=rescaled)

    try:
        stats, samples = run_calibration(pooled, sampled)
    except Exception as exc:  # noqa: BLE001 - retried without probes, which re-raises whatever is not theirs
        if not pooled and not sampled:
            raise
        # a probe ONNX Runtime refuses or cannot run would read as bad data or a broken pass
        logger.info("calibration probes failed (%s); fetching the tensors instead", first_line(exc))
        pooled, sampled = {}, {}
        stats, samples = run_calibration(pooled, sampled)
    for name, use in pooled.items():
        high = use.input_maximum(stats[use.output.name].maximum)
        stats[name] = TensorStats(min(use.lower_bound(high), high), high)
    for name, derivation in computed.items():  # graph order: a derivation's sources are ready
        stats[name] = apply(derivation, stats, histogram=histograms is None or name in histograms,
                            elements=stats[name].elements if name in stats else 0)
    return stats, samples, histograms


def _variant(rescaled: Mapping[str, Rescaling]) -> str:
    """What rescaled tensors' statistics depend on besides the graph and the data (the cache's key)."""
    return ";".join(f"{name}:{r.samples}:{r.label}" for name, r in sorted(rescaled.items()))


def _recorded(divisor: Callable, magnitudes: dict, name: str) -> Callable:
    """``divisor``, keeping the channel maxima it is given in ``magnitudes[name]`` (for the cache)."""
    def decide(magnitude: np.ndarray):
        magnitudes[name] = magnitude
        return divisor(magnitude)
    return decide


def _pooled_hard_swish_inputs(graph: ir.Graph, names: set[str]) -> dict[str, HardSwishUse]:
    """Tensors among ``names`` read only by a hard swish, whose maximum its output's ``GlobalMaxPool``
    gives (``hard_swish.py``). Their minimum is taken to be where their range stops when they reach
    below the saturation point (``HardSwishUse.lower_bound``); one that never does gets that wider
    range too (the probe cannot see its true minimum: docs/quantization.md)."""
    found = {}
    for node in graph:
        for value in node.outputs:
            if (value.name in names and is_float(value) and spatial_rank(value) is not None
                    and (use := hard_swish_use(value)) is not None):
                found[value.name] = use
    return found


def _sampled_silu_inputs(graph: ir.Graph, names: set[str]) -> dict[ir.Value, int]:
    """SiLU inputs among ``names`` that are ``N, C, ...`` maps (value -> spatial axes): their exact
    maximum comes from a ``GlobalMaxPool``, their histogram and minimum from a strided sample
    (``probes.py``). The minimum only bounds ``silu_low``'s search, which clips far above it (SiLU
    is within 0.015 of 0 below -6), and the derived Sigmoid / SiLU output ranges do not move with it."""
    found = {}
    for node in graph:
        for value in node.outputs:
            if value.name in names and is_float(value) and not value.is_graph_output():
                spatial = spatial_rank(value)
                if spatial is not None and 1 <= spatial <= MAX_POOLED_AXES:
                    found[value] = spatial
    return found


def describe(reader) -> str:
    return reader.describe() if hasattr(reader, "describe") else type(reader).__name__


def _is_input(model: ir.Model, name: str) -> bool:
    return any(v.name == name for v in model.graph.inputs)
