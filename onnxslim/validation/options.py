"""What the harness checks and how: ValidationOptions (also settable from a recipe's [options.validation])."""

from __future__ import annotations

import dataclasses

from onnxslim.errors import ConfigError
from onnxslim.validation.compare import LOSSLESS, LOSSY, Tolerances

CAPTURE_MODES = ("auto", "always", "off")


@dataclasses.dataclass
class ValidationOptions:
    data: str | None = None
    """.npz file, folder of .npz/.npy, or folder of images (with ``preprocess``); None: random inputs."""
    random_samples: int = 4
    seed: int = 0
    input_shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    atol: float | None = None
    """None: the default for the pipeline (near-exact after lossless passes, looser after lossy ones)."""
    rtol: float | None = None
    lossy: bool = False
    """Set by the pass manager's report: a lossy pass (quantization, pruning, low rank) ran."""
    lossy_reason: str | None = None
    """Why the lossy defaults apply, for the report (which passes ran, what the model holds)."""
    min_cosine: float | None = None
    min_snr: float | None = None
    min_top1: float | None = None
    preprocess: str | None = None
    """Image preprocessing spec, see onnxslim.data.images."""
    batch_size: int = 32
    providers: str = "cpu"
    """Comma-separated: cpu, cuda; or all."""
    strict: bool = False
    """A requested provider that cannot run fails the validation instead of being skipped."""
    capture: str = "auto"
    """Intermediate tensors: auto (captured again only when outputs diverge), always (in the main run), off."""
    latency_runs: int = 0
    """Timed runs per variant (0: no latency measurement)."""
    latency_warmup: int = 5
    threads: int | None = None
    """Intra-op threads for latency runs (None: min(4, CPUs))."""
    html: str | None = None
    """Write the self-contained HTML report here."""

    def __post_init__(self) -> None:
        if self.capture not in CAPTURE_MODES:
            raise ConfigError(f"capture must be one of {', '.join(CAPTURE_MODES)}, got {self.capture!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("random_samples", "latency_runs", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    def tolerances(self) -> tuple[float, float]:
        base = self.thresholds()
        return base.atol, base.rtol

    def thresholds(self) -> Tolerances:
        """The defaults for the pipeline's kind (compare.LOSSLESS or LOSSY) with the given overrides."""
        base = LOSSY if self.lossy else LOSSLESS
        if self.lossy and (self.atol is None) != (self.rtol is None):
            base = dataclasses.replace(base, atol=0.0, rtol=0.0)  # one given: the other must not stay infinite
        given = {"atol": self.atol, "rtol": self.rtol, "min_cosine": self.min_cosine, "min_snr": self.min_snr,
                 "min_top1": self.min_top1}
        return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
