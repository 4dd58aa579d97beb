"""Settings: frozen dataclasses, one per stage. The CLI and the Python API build the same objects.

Comparison settings live with the comparison code (``enginekit.compare.CompareSettings``) and are
re-exported here so that every stage's settings can be imported from one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from enginekit.compare import CompareSettings
from enginekit.data import InputShape, ValueRange

__all__ = [
    "BackendSettings",
    "CompareSettings",
    "FeedSettings",
    "OptimizeSettings",
    "RunSettings",
    "TimingSettings",
]


@dataclass(frozen=True)
class FeedSettings:
    """Where input data comes from: a file, or seeded random data of given shapes."""

    inputs: tuple[InputShape, ...] = ()
    load_inputs: Path | None = None
    seed: int = 1
    val_ranges: tuple[ValueRange, ...] = ()
    allow_nonfinite: bool = False


@dataclass(frozen=True)
class BackendSettings:
    """Options of individual backends (each ignored by the others)."""

    ort_providers: tuple[str, ...] = ()  # empty: CPUExecutionProvider
    ort_intra_op_threads: int = 0  # 0: onnxruntime's default
    openvino_device: str = "CPU"
    openvino_precision: str = "fp32"  # used by `run`; `optimize` sweeps the precisions itself


@dataclass(frozen=True)
class TimingSettings:
    """The short timed loop of `optimize` (the full benchmark protocol is `enginekit bench`)."""

    warmup_s: float = 0.2
    warmup_runs: int = 3
    min_runs: int = 20
    min_time_s: float = 0.5
    max_runs: int = 100_000
    max_time_s: float = 10.0  # stop early (after at least one run) for very slow backends


@dataclass(frozen=True)
class RunSettings:
    """`enginekit run`: same feeds on several backends, compared with the reference."""

    model: Path
    backends: tuple[str, ...] = ("ort",)
    reference: str | None = None  # default: the first backend
    feeds: FeedSettings = field(default_factory=FeedSettings)
    backend: BackendSettings = field(default_factory=BackendSettings)
    compare: CompareSettings = field(default_factory=CompareSettings)
    save_inputs: Path | None = None
    save_outputs: Path | None = None
    report_dir: Path | None = None


@dataclass(frozen=True)
class OptimizeSettings:
    """`enginekit optimize`: every available backend and precision, compared, timed, evaluated, reported."""

    model: Path | None = None  # None: the bundled digits example (with its test split as dataset)
    backends: tuple[str, ...] = ()  # NAME or NAME:PRECISION; empty: every available backend and precision
    reference: str | None = None  # default: ort fp32
    feeds: FeedSettings = field(default_factory=FeedSettings)
    backend: BackendSettings = field(default_factory=BackendSettings)
    compare: CompareSettings = field(default_factory=CompareSettings)
    timing: TimingSettings = field(default_factory=TimingSettings)
    dataset: Path | None = None  # .npz with model inputs and "labels"
    batch_size: int = 0  # dataset batch size; 0: whole dataset at once when the model allows it
    report_dir: Path = Path("enginekit-report")
