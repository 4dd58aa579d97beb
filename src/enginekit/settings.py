"""Settings: frozen dataclasses, one per stage. The CLI and the Python API build the same objects.

Comparison settings live with the comparison code (``enginekit.compare.CompareSettings``) and are
re-exported here so that every stage's settings can be imported from one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from enginekit.compare import CompareSettings, Tolerances
from enginekit.data import InputShape, ValueRange

# Export compares two different runtimes (PyTorch/Paddle vs onnxruntime) in FP32: kernels differ in
# summation order, so the default is looser than the 1e-5 used between runs of one model.
EXPORT_TOLERANCE = 1e-4

__all__ = [
    "BackendSettings",
    "CompareSettings",
    "DebugSettings",
    "DynamicDim",
    "ExportSettings",
    "FeedSettings",
    "LintSettings",
    "OptimizeSettings",
    "PrepareSettings",
    "RunSettings",
    "SearchSettings",
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
    trt_profiles: tuple[str, ...] = ()  # TensorRT built from ONNX by `run`: NAME:MIN:OPT:MAX
    ort_graph_optimization: str = "all"  # all | extended | basic | disable
    ort_optimized_model: Path | None = None  # save the model onnxruntime optimized (and load it next time)
    ort_inter_op_threads: int = 0
    ort_cuda_fp16: bool = False  # TensorRT EP: trt_fp16_enable
    ort_trt_cache_dir: Path | None = None  # TensorRT EP: engine + timing cache folder
    ort_trt_profiles: tuple[str, ...] = ()  # TensorRT EP: NAME:MIN:OPT:MAX (explicit shape ranges)
    torch_inputs: tuple[str, ...] = ()  # PyTorch sources: NAME:DIMS[:DTYPE] per forward() argument
    torch_device: str = "auto"  # auto (cuda when available) | cpu | cuda
    inductor_mode: str = "default"  # default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    inductor_freezing: bool = True
    channels_last: str = "auto"  # auto (4-D image inputs on CUDA) | on | off
    dynamic_shapes: str = "static"  # static | dynamic (mark batch dynamic) | auto (torch.compile's default)
    # torch / aoti on CUDA: the runner captures its call in a CUDA graph per input signature and replays it
    cuda_graph: bool = False
    # torch / inductor / aoti on CUDA: torch.backends.cudnn.benchmark while the runner runs (cuDNN times its
    # convolution algorithms per shape and keeps the fastest; off leaves the process's setting as it is)
    cudnn_benchmark: bool = False
    # torch / inductor / aoti: False turns off nn.TransformerEncoderLayer's fused inference fast path (one native op
    # torch.compile cannot look into) in this model, so that inductor fuses around the matmuls (fastpath=off)
    transformer_fastpath: bool = True
    # torch / inductor: off | fp8 | int8. nn.Linear layers (and self-attention projections) run as 8-bit matmuls:
    # FP8 e4m3 (torch._scaled_mm, bf16 only) or int8 (torch._int_mm); the activations are quantized on the fly (per
    # row), the weights once (per output channel); output in the compute dtype (backends/torch_quant.py)
    quantized_linear: str = "off"
    # plan.json (ONNX nodes kept in FP32), applied by runners at fp16/bf16: ort:fp16 and onnx-reference (node block
    # list of the conversion), TensorRT built from the ONNX (into the build), torch and inductor (the PyTorch
    # modules holding those nodes); ignored at fp32
    precision_plan: Path | None = None
    # torch/inductor: the ONNX the plan was made for, as the dynamo exporter wrote it (its node metadata names the
    # PyTorch module of every node); not needed by the ONNX runners, which run that model themselves
    precision_plan_model: Path | None = None
    # load model files that run code when loaded (TorchScript, .pt2 programs, AOTInductor packages); the same
    # switch as ExportSettings.trust_remote_code, set from the one --trust-remote-code option
    trust_remote_code: bool = False


@dataclass(frozen=True)
class TimingSettings:
    """One timed loop, declared once: warm-up, then measurement. These defaults are the short loop of `optimize`;
    `enginekit bench` (BenchSettings, a TimingSettings) measures longer with the same fields."""

    warmup_s: float = 0.2  # warm-up by time (and at least warmup_iterations), excluded from the samples
    warmup_iterations: int = 3
    duration_s: float = 0.5  # measure at least this long ...
    iterations: int = 20  # ... and at least this many iterations
    max_iterations: int = 100_000
    max_time_s: float | None = 10.0  # stop early (after at least one run) for very slow backends; None: never
    unstable_cv: float = 0.1  # coefficient of variation above which a run is flagged unstable


@dataclass(frozen=True)
class BenchSettings(TimingSettings):
    """`enginekit bench`: one timing protocol for every backend (trtexec-like statistics)."""

    warmup_s: float = 0.5
    duration_s: float = 3.0
    max_iterations: int = 1_000_000
    max_time_s: float | None = None  # a benchmark runs as long as asked
    batches: tuple[int, ...] = ()  # sweep the leading dim of every input
    shapes: tuple[tuple[InputShape, ...], ...] = ()  # sweep explicit shape sets
    baseline: str | None = None  # candidate label the speed-up is measured against (default: the first)
    with_transfers: bool = False  # include host<->device copies in the timed region
    cuda_graph: bool = False
    streams: int = 1  # concurrent requests (threads, each with its own stream on GPU)
    seed: int = 1


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
    check_model: bool = True  # ONNX checker first: an invalid graph is a user error (exit 2), as in `inspect`


@dataclass(frozen=True)
class SearchSettings:
    """`optimize`'s configuration search on a PyTorch source (enginekit.pipeline.search): every candidate at every
    batch size, verified against eager FP32 and timed with the bench protocol."""

    batches: tuple[int, ...] = ()  # empty: the comparison feed's batch
    candidates: tuple[str, ...] = ()  # NAME:PRECISION/KEY=VALUE...; empty: the default set for the device
    precisions: tuple[str, ...] = ()  # of the default set; empty: fp16, bf16 on CUDA, fp32 (+bf16) on CPU
    warmup_s: float = 0.5
    duration_s: float = 1.0
    auto: bool = False  # not asked for (--torch-device cuda alone): skipped, not failed, when it cannot run
    # a configuration whose compilation (its first call at a batch size) runs longer is skipped there and at the
    # larger batches; None: no limit
    compile_limit_s: float | None = 300.0


@dataclass(frozen=True)
class OptimizeSettings:
    """`enginekit optimize`: every available backend and precision, compared, timed, evaluated, reported."""

    model: Path | None = None  # ONNX model; None (and no export): the bundled digits example and its test split
    export: ExportSettings | None = None  # framework source: export (and verify) first, to export.output
    prepare: PrepareSettings | None = None  # graph passes on the (exported) model, written to prepare.output
    backends: tuple[str, ...] = ()  # NAME or NAME:PRECISION; empty: every available backend and precision
    reference: str | None = None  # default: ort fp32
    feeds: FeedSettings = field(default_factory=FeedSettings)
    backend: BackendSettings = field(default_factory=BackendSettings)
    compare: CompareSettings = field(default_factory=CompareSettings)
    timing: TimingSettings = field(default_factory=TimingSettings)
    builds: tuple[BuildSettings, ...] = ()  # TensorRT engines to build from the model (one candidate each)
    # .npz with model inputs (and "labels"), an ImageFolder (ROOT/CLASS/*.png), or (other tasks) a folder of images
    dataset: Path | None = None
    batch_size: int = 0  # dataset batch size; 0: whole dataset at once when the model allows it
    preprocess: tuple[str, ...] = ()  # image folders: KEY=VALUE (size, mean, std, scale, layout, ...)
    preprocess_file: Path | None = None  # image folders: the same keys in a YAML file (options override it)
    limit: int = 0  # evaluate at most this many samples (0: all)
    gates: tuple[str, ...] = ()  # METRIC>=VALUE[pp|%] | METRIC>=abs:VALUE, against the reference (enginekit.eval.gates)
    task: str = "classification"  # classification | segmentation | ctc | detection: the metrics of the predictions
    # segmentation: foreground above this probability (one-channel outputs); detection without labels: the
    # reference's detections scoring at least this are the ground truth
    threshold: float = 0.5
    ctc_blank: int = 0  # ctc: the blank index
    # FILE.py:FUNCTION (or module:FUNCTION) mapping one batch's outputs {name: array} to the task's predictions
    # (an array with the samples on axis 0); default: the first output as it is
    postprocess: str | None = None
    masks: Path | None = None  # segmentation: label-map PNGs named like the images of the --dataset folder
    annotations: Path | None = None  # detection: a COCO JSON naming the images of the --dataset folder
    report_dir: Path = Path("enginekit-report")
    search: SearchSettings | None = None  # PyTorch sources: the configuration search (default with --torch-device cuda)


@dataclass(frozen=True)
class DebugSettings:
    """`enginekit debug precision`: the FP32 islands that make an FP16/BF16/INT8 model pass (also run by
    `optimize` on a low-precision candidate that failed verification)."""

    precision: str = "fp16"  # fp16 | bf16 | int8 (Q/DQ; the plan lists nodes left out of quantization)
    backend: str | None = None  # runs the candidates: onnx-reference | ort; None: per precision (int8: ort)
    reference: str = "fp32"  # fp32 (onnxruntime) | fp64 (the model widened to float64, reference evaluator)
    calibration: Path | None = None  # int8: calibration feeds (.npz or a folder); None: the debug feeds
    calib_method: str = "minmax"  # int8: minmax | entropy | percentile
    compare: CompareSettings = field(default_factory=CompareSettings)  # scale-aware per precision
    check: str | None = None  # judge candidates with this command instead ($MODEL / {model}; exit 0 = good)
    max_evaluations: int = 200
    range_analysis: bool = True  # start from range analysis' risky nodes (else from bisection)
    # pass even when the reference is near-constant or saturated on the feeds (else the verdict is inconclusive)
    allow_weak_reference: bool = False


@dataclass(frozen=True)
class DynamicDim:
    """``--dynamic NAME:AXIS=LABEL[MIN..MAX]``: axis AXIS of input NAME is dynamic, named LABEL."""

    input: str
    axis: int
    label: str
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class ExportSettings:
    """`enginekit export SOURCE -o model.onnx`: framework model → verified ONNX."""

    source: str  # file.py:factory, package.module:factory, TorchScript .pt, torch.export .pt2, Paddle model
    output: Path
    inputs: tuple[str, ...] = ()  # raw NAME:DIMS[:DTYPE] with symbolic dims allowed (x:batch,3,h,w)
    dynamic: tuple[DynamicDim, ...] = ()
    output_names: tuple[str, ...] = ()
    weights: Path | None = None  # state dict loaded with weights_only=True
    exporter: str = "auto"  # dynamo | torchscript | auto
    opset: int | None = None  # None: chosen from the target
    target: str = "ort"  # tensorrt==8.5|8.6|10|11, tensorrt-rtx, ort, openvino
    verify: bool = True
    seed: int = 1
    val_ranges: tuple[ValueRange, ...] = ()
    compare: CompareSettings = field(default_factory=lambda: CompareSettings(
        atol=Tolerances(EXPORT_TOLERANCE), rtol=Tolerances(EXPORT_TOLERANCE)))
    external_data_threshold: int = 2**31 - 1  # bytes; larger models are saved with external data
    # load a TorchScript or .pt2 SOURCE, which runs code it carries (BackendSettings.trust_remote_code's switch)
    trust_remote_code: bool = False


@dataclass(frozen=True)
class PrepareSettings:
    """`enginekit prepare MODEL -o out.onnx`: ONNX graph passes, each verified with onnxruntime."""

    output: Path
    passes: tuple[str, ...] = ("unique-dim-names", "shape-inference", "simplify", "int64-to-int32")
    target_opset: int | None = None  # adds an "opset" pass when set
    fix_input_shapes: tuple[InputShape, ...] = ()  # adds a "fix-input-shapes" pass when set
    verify: bool = True
    feeds: FeedSettings = field(default_factory=FeedSettings)
    compare: CompareSettings = field(default_factory=CompareSettings)


@dataclass(frozen=True)
class LintSettings:
    """`enginekit lint MODEL --target tensorrt[==VERSION]`."""

    target: str = "tensorrt"  # tensorrt, tensorrt-rtx, ort, openvino
    target_version: str | None = None  # None: the installed one, else the newest in the support table
    parse: bool = True  # also run the real ONNX parser when tensorrt / tensorrt_rtx is installed
    # (input, shape) the model will see (each profile's MIN/OPT/MAX, or feeds): dims sharing a name that differ
    # here are errors (TensorRT forces dims with one name equal)
    profile_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class BuildSettings:
    """`enginekit build MODEL.onnx --backend tensorrt|tensorrt-rtx`: an engine plan and its manifest.

    ``ARTIFACT_FIELDS`` lists the settings that change the engine (and so the cache key); the others
    (where to write, the cache, the timing cache) do not.
    """

    backend: str = "tensorrt-rtx"  # tensorrt | tensorrt-rtx
    output: Path | None = None  # plan file; None: only the cache
    profiles: tuple[str, ...] = ()  # NAME:MIN:OPT:MAX; a repeated name starts the next profile
    profile_from: Path | None = None  # .npz feeds or a folder of them
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8 | best
    precision_plan: Path | None = None  # plan.json: ONNX nodes kept in FP32
    calib_data: Path | None = None  # .npz or folder of .npz feeds for INT8
    calib_method: str = "minmax"  # minmax | entropy (min-max was the better of the two on the bundled CNN)
    calib_cache: Path | None = None  # weak-typing INT8: calibration cache file (read and written)
    workspace_mib: int | None = None
    optimization_level: int | None = None  # builder optimization level 0-5
    timing_cache: Path | None = None  # loaded when present, saved after the build
    version_compatible: bool = False
    hardware_compatibility: str | None = None  # ampere-plus | same-compute-capability
    compute_capabilities: tuple[str, ...] = ()  # e.g. ("8.6", "12.0"); where the library can target them
    cache_dir: Path | None = None
    use_cache: bool = True
    # rename input dims TensorRT would tie (shared "?" names; shared names the profiles give different sizes);
    # the renames are part of the cache key when there are any
    unique_dim_names: bool = True

    ARTIFACT_FIELDS = (
        "backend", "profiles", "precision", "calib_method", "workspace_mib", "optimization_level",
        "version_compatible", "hardware_compatibility", "compute_capabilities",
    )
