"""The Python API: one function per command, building the same settings objects as the CLI.

``enginekit.inspect``, ``enginekit.export``, ``enginekit.run``, ``enginekit.compare``, ``enginekit.bench``,
``enginekit.optimize`` and ``enginekit.load`` are these functions (``enginekit/__init__.py`` exposes them
lazily). Every function also takes the stage's settings object itself (``ExportSettings``, ``RunSettings``,
``BenchSettings``, ``OptimizeSettings``, ``CompareSettings``); keyword options are the command's options, as
values. Bad input raises the typed errors of :mod:`enginekit.errors`; a backend that fails or cannot run here
becomes a row of the result (as in the CLI), except in :func:`load`, which raises.

The heavy layers (pipeline, bench, multirun, export, backends) are imported inside the functions, so that
importing this module costs little more than numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

from enginekit.errors import (
    BackendError,
    EnginekitError,
    FeedError,
    InvalidArgumentError,
    MissingDependencyError,
    ModelLoadError,
    UnknownNameError,
    did_you_mean,
)

if TYPE_CHECKING:
    from enginekit.backends.base import Runner
    from enginekit.bench.result import BenchResult
    from enginekit.compare import CompareResult, CompareSettings, Tolerances
    from enginekit.data import InputShape, ValueRange
    from enginekit.export.verify import ExportResult
    from enginekit.graph.inspect import ModelInfo
    from enginekit.multirun import RunResult
    from enginekit.pipeline import OptimizeResult
    from enginekit.settings import (
        BackendSettings,
        BenchSettings,
        DynamicDim,
        ExportSettings,
        OptimizeSettings,
        RunSettings,
    )
    from enginekit.tensors import TensorSpec

__all__ = ["LoadedModel", "bench", "compare", "export", "inspect", "load", "optimize", "run"]

PathLike = str | Path
Feeds = Mapping[str, npt.ArrayLike]
if TYPE_CHECKING:
    #: ``1e-4`` (every output), ``"logits:1e-3"`` or ``["1e-4", "logits:1e-3"]`` (the CLI's --atol/--rtol
    #: values), ``{"logits": 1e-3}`` (per output, the default otherwise), or a ``Tolerances``.
    ToleranceLike: TypeAlias = float | str | Sequence[str] | Mapping[str, float] | Tolerances

PACKAGE_FILE = "package.json"
DEFAULT_OBJECTIVE = "min_latency"
# The backend that runs each model format when load() is given no backend.
DEFAULT_BACKEND = {"onnx": "ort", "engine": "tensorrt", "torch": "torch", "aoti": "aoti", "paddle": "paddle"}


# inspect -----------------------------------------------------------------------------------------------------
def inspect(model: PathLike, *, check: bool = True) -> ModelInfo:
    """What `enginekit inspect MODEL` prints: IO with symbolic dims, opsets, ops, parameters, INT64 weights,
    external data (``.to_dict()`` is its ``--json``). ``check``: run the ONNX checker first."""
    from enginekit.graph.inspect import inspect_model

    return inspect_model(_path(model, "model"), check=check)


# export ------------------------------------------------------------------------------------------------------
def export(
    source: PathLike | ExportSettings,
    output: PathLike | None = None,
    *,
    inputs: Sequence[str] = (),
    dynamic: Sequence[str | DynamicDim] = (),
    output_names: Sequence[str] = (),
    weights: PathLike | None = None,
    exporter: str = "auto",
    opset: int | str | None = "auto",
    target: str = "ort",
    verify: bool = True,
    seed: int = 1,
    val_ranges: Sequence[str | ValueRange] = (),
    atol: ToleranceLike | None = None,
    rtol: ToleranceLike | None = None,
    trust_remote_code: bool = False,
) -> ExportResult:
    """`enginekit export SOURCE -o OUTPUT`: a PyTorch/Paddle model to ONNX, verified against the source.

    ``source`` is what the command takes (``file.py:factory``, TorchScript, ``.pt2``, a Paddle model), or a whole
    ``ExportSettings`` (then give no other argument). ``inputs``: ``NAME:DIMS[:DTYPE]`` with symbolic dims
    (``x:batch,3,32,32``); ``dynamic``: ``x:0=batch[1..32]``; ``val_ranges``: ``x:0,1``. Raises
    VerificationError when the ONNX does not match the source (the model is then written to ``NAME.failed.onnx``).
    """
    from enginekit.export.api import export_model
    from enginekit.settings import ExportSettings

    if isinstance(source, ExportSettings):
        if output is not None or _given(inputs, dynamic, output_names, val_ranges) or weights is not None \
                or atol is not None or rtol is not None:
            raise InvalidArgumentError("export(): give an ExportSettings alone, or a source and its options.")
        return export_model(source)
    from enginekit.data import check_seed, parse_value_range
    from enginekit.fileutil import check_output_file
    from enginekit.settings import EXPORT_TOLERANCE, DynamicDim
    from enginekit.sources.shapes import parse_dynamic, parse_opset

    if output is None:
        raise InvalidArgumentError("export(): give the .onnx file to write (output=...).")
    out = _path(output, "output")
    check_output_file(out, "output")
    check_seed(seed)
    settings = ExportSettings(
        source=str(_path(source, "source")),
        output=out,
        inputs=_strings(inputs, "inputs"),
        dynamic=tuple(d if isinstance(d, DynamicDim) else parse_dynamic(d) for d in _items(dynamic, "dynamic")),
        output_names=_strings(output_names, "output_names"),
        weights=None if weights is None else _path(weights, "weights"),
        exporter=exporter,
        opset=opset if isinstance(opset, int) and not isinstance(opset, bool) else parse_opset(str(opset or "auto")),
        target=target,
        verify=verify,
        seed=seed,
        val_ranges=_value_ranges(val_ranges, parse_value_range),
        compare=_compare_settings(None, atol, rtol, default=EXPORT_TOLERANCE),
        trust_remote_code=trust_remote_code,
    )
    return export_model(settings)


# run ---------------------------------------------------------------------------------------------------------
def run(
    model: PathLike | RunSettings,
    feeds: Feeds | None = None,
    *,
    backends: str | Sequence[str] = ("ort",),
    reference: str | None = None,
    inputs: Sequence[str | InputShape] = (),
    seed: int = 1,
    val_ranges: Sequence[str | ValueRange] = (),
    allow_nonfinite: bool = False,
    compare: CompareSettings | None = None,
    atol: ToleranceLike | None = None,
    rtol: ToleranceLike | None = None,
    backend: BackendSettings | None = None,
    check: bool = True,
    trust_remote_code: bool = False,
) -> RunResult:
    """`enginekit run MODEL --backend ...`: the same feeds on every backend, each compared with the reference.

    ``feeds``: ``{input name: array}`` in memory; without them, seeded random data at ``inputs`` shapes
    (``x:1x3x224x224``, needed for symbolic dims). ``backends``: candidate labels ``NAME[:PRECISION][/KEY=VALUE]``
    (``"ort"``, ``"openvino"``, ``"ort:fp16"``); ``reference``: one of them (default the first). ``compare``: a
    CompareSettings, or ``atol``/``rtol`` alone. Candidates below FP32 are judged by the per-precision rule, as
    in the CLI. ``model`` may also be a whole ``RunSettings`` (then ``feeds`` may still be given).

    Returns the RunResult: ``.passed``, ``.rows`` (one per candidate: status, reason, comparison, outputs),
    ``.outputs_of(label)`` (arrays by output name), ``.feed``, ``.to_dict()`` (the ``--json`` document). A backend
    that fails or is not installed is a row (error/skipped), not an exception.
    """
    from enginekit.data import check_seed, parse_input_shape, parse_value_range
    from enginekit.multirun import run_backends
    from enginekit.settings import FeedSettings, RunSettings
    from enginekit.sources.detect import model_format

    if isinstance(model, RunSettings):
        if _given(inputs, val_ranges) or compare is not None or atol is not None or rtol is not None \
                or backend is not None or reference is not None or tuple(_items(backends, "backends")) != ("ort",) \
                or trust_remote_code or seed != 1 or allow_nonfinite or not check:
            raise InvalidArgumentError("run(): give a RunSettings alone (with feeds=... if you have them), or a "
                                       "model and its options.")
        settings = model
    else:
        check_seed(seed)
        path = _path(model, "model")
        backend_settings = _backend_settings(backend, trust_remote_code)
        texts = [s if isinstance(s, str) else s.to_arg() for s in _items(inputs, "inputs")]
        if texts and not backend_settings.torch_inputs and model_format(path) == "torch":
            from enginekit.backends.torch_inputs import feed_shapes

            # as `run` does: the export-style spec for the runners (x:batch,3,224,224), concrete feed shapes
            backend_settings = dataclasses.replace(backend_settings, torch_inputs=tuple(texts))
            texts = feed_shapes(texts)
        settings = RunSettings(
            model=path,
            backends=_backend_labels(backends),
            reference=reference,
            feeds=FeedSettings(inputs=tuple(parse_input_shape(t) for t in texts), seed=seed,
                               val_ranges=_value_ranges(val_ranges, parse_value_range),
                               allow_nonfinite=allow_nonfinite),
            backend=backend_settings,
            compare=_compare_settings(compare, atol, rtol),
            check_model=check,
        )
    arrays = None if feeds is None else _arrays(feeds, "feeds")
    settings = _torch_run_inputs(settings, arrays)
    if arrays is None:
        return run_backends(settings)
    if settings.feeds.inputs or settings.feeds.load_inputs is not None:
        raise InvalidArgumentError("run(): give feeds or input shapes (inputs=...), not both.")
    return run_backends(settings, arrays)  # checked and judged exactly as a feed the CLI loads


def _torch_run_inputs(settings: RunSettings, feeds: dict[str, np.ndarray] | None) -> RunSettings:
    """A PyTorch source's runners take its inputs as specs (``BackendSettings.torch_inputs``): given feeds
    make them from the arrays (as `run --load-inputs` does); a RunSettings with concrete feed shapes, from those."""
    from enginekit.sources.detect import model_format

    if settings.backend.torch_inputs or model_format(settings.model) != "torch":
        return settings
    if feeds is not None:
        specs = tuple(f"{k}:{'x'.join(map(str, v.shape))}:{v.dtype}" for k, v in feeds.items())
    else:
        specs = tuple(s.to_arg() for s in settings.feeds.inputs)
    return dataclasses.replace(settings, backend=dataclasses.replace(settings.backend, torch_inputs=specs))


# compare -----------------------------------------------------------------------------------------------------
def compare(
    reference: Feeds | PathLike,
    candidate: Feeds | PathLike,
    *,
    atol: ToleranceLike | None = None,
    rtol: ToleranceLike | None = None,
    check_error_stat: str = "elemwise",
    validate: bool = False,
    equal_nan: bool = False,
    settings: CompareSettings | None = None,
) -> CompareResult:
    """`enginekit compare REFERENCE CANDIDATE`: Polygraphy's rule, an element fails where abs > atol AND
    rel > rtol (relative to ``reference``). Each side is ``{output name: array}`` or a saved .npz/.json file.

    Returns the CompareResult: ``.passed``, ``.outputs`` (per output: errors, failed elements, reason),
    ``.to_dict()``. ``settings`` replaces atol/rtol/check_error_stat/validate/equal_nan.
    """
    from enginekit.compare import CompareSettings, compare_outputs

    if settings is None:
        settings = dataclasses.replace(_compare_settings(None, atol, rtol), check_error_stat=check_error_stat,
                                       validate=validate, equal_nan=equal_nan)
    elif atol is not None or rtol is not None or check_error_stat != "elemwise" or validate or equal_nan:
        raise InvalidArgumentError("compare(): give settings=CompareSettings(...) or its options, not both.")
    if not isinstance(settings, CompareSettings):
        raise InvalidArgumentError(f"compare(): settings must be a CompareSettings, not {type(settings).__name__}.")
    return compare_outputs(_outputs(reference, "reference"), _outputs(candidate, "candidate"), settings)


def _outputs(value: Feeds | PathLike, what: str) -> dict[str, np.ndarray]:
    if isinstance(value, str | Path):
        from enginekit.data import load_arrays

        return load_arrays(value)
    return _arrays(value, what)


# bench -------------------------------------------------------------------------------------------------------
def bench(
    model: PathLike,
    backends: str | Sequence[str] = ("ort",),
    *,
    batches: Sequence[int] = (),
    shapes: Sequence[str | Sequence[InputShape]] = (),
    inputs: Sequence[str | InputShape] = (),
    settings: BenchSettings | None = None,
    backend: BackendSettings | None = None,
    warmup_s: float | None = None,
    duration_s: float | None = None,
    iterations: int | None = None,
    baseline: str | None = None,
    streams: int | None = None,
    with_transfers: bool | None = None,
    cuda_graph: bool | None = None,
    seed: int | None = None,
    trust_remote_code: bool = False,
) -> BenchResult:
    """`enginekit bench MODEL --backend ...`: one timing protocol for every candidate at every shape point.

    ``batches`` sweeps the leading dim of every input (``[1, 8, 32]``); ``shapes`` sweeps shape sets
    (``"x:1x3x224x224"`` or a tuple of InputShape each); ``inputs`` are the base shapes for symbolic dims (for a
    PyTorch source, its ``NAME:DIMS[:DTYPE]`` specs). ``settings`` is a BenchSettings to start from (default
    ``BenchSettings()``: 0.5 s warm-up, 3 s measured); the keyword options given replace its fields.

    Returns the BenchResult: ``.rows`` (one per candidate and point: ``timing`` median/p90/p99..., status),
    ``.passed``, ``.to_dict()``. A backend that fails or is not installed is a row (error/skipped).
    """
    from enginekit.bench.points import parse_shape_set
    from enginekit.bench.sweep import benchmark
    from enginekit.data import check_seed, parse_input_shape
    from enginekit.settings import BenchSettings
    from enginekit.sources.detect import model_format

    base = settings if settings is not None else BenchSettings()
    if not isinstance(base, BenchSettings):
        raise InvalidArgumentError(f"bench(): settings must be a BenchSettings, not {type(base).__name__}.")
    changes: dict[str, Any] = {k: v for k, v in (
        ("warmup_s", warmup_s), ("duration_s", duration_s), ("iterations", iterations), ("baseline", baseline),
        ("streams", streams), ("with_transfers", with_transfers), ("cuda_graph", cuda_graph), ("seed", seed),
    ) if v is not None}
    if batches:
        changes["batches"] = tuple(_positive_int(b, "batches") for b in _items(batches, "batches"))
    if shapes:
        changes["shapes"] = tuple(parse_shape_set(s) if isinstance(s, str) else tuple(s)
                                  for s in _items(shapes, "shapes"))
    bench_settings = dataclasses.replace(base, **changes)
    check_seed(bench_settings.seed)
    path = _path(model, "model")
    backend_settings = _backend_settings(backend, trust_remote_code)
    texts = [s if isinstance(s, str) else s.to_arg() for s in _items(inputs, "inputs")]
    if texts and model_format(path) == "torch" and not backend_settings.torch_inputs:
        from enginekit.backends.torch_inputs import feed_shapes

        backend_settings = dataclasses.replace(backend_settings, torch_inputs=tuple(texts))
        texts = feed_shapes(texts)
    return benchmark(path, _backend_labels(backends), bench_settings, backend_settings,
                     tuple(parse_input_shape(t) for t in texts))


# optimize ----------------------------------------------------------------------------------------------------
def optimize(
    model_or_settings: PathLike | OptimizeSettings | None = None,
    *,
    command: Sequence[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    **options: Any,
) -> OptimizeResult:
    """`enginekit optimize [MODEL]`: every available backend and precision, compared, timed, evaluated, reported.

    Give an OptimizeSettings, or a model (None: the bundled digits example) with the command's options as
    keywords, as :func:`enginekit.pipeline.plan_optimize` takes them (``inputs=["x:4x3x224x224"]``,
    ``backends=["ort", "openvino"]``, ``target="tensorrt"``, ``report_dir=Path("report")``, ...). Writes the
    report folder and returns the OptimizeResult (``.passed``, ``.candidates``, ``.steps``, ``.to_dict()``).
    ``progress(what, done, total)`` follows a dataset: "reading images", then "scoring LABEL" per candidate.
    """
    from enginekit.pipeline import optimize as run_optimize
    from enginekit.pipeline import plan_optimize
    from enginekit.settings import OptimizeSettings

    if isinstance(model_or_settings, OptimizeSettings):
        if options:
            raise InvalidArgumentError(f"optimize(): give an OptimizeSettings alone, or a model and its options "
                                       f"(got {', '.join(sorted(options))} too).")
        return run_optimize(model_or_settings, command, progress)
    import inspect as _inspect

    params = {n: p for n, p in _inspect.signature(plan_optimize).parameters.items() if n != "model"}
    for name, value in options.items():
        if name not in params:
            raise InvalidArgumentError(f"optimize(): unknown option {name!r}{did_you_mean(name, list(params))}",
                                       hint=f"Options: {', '.join(params)}.")
        if isinstance(value, str) and "Path" in str(params[name].annotation):  # report_dir="report"
            options[name] = _path(value, name)
    from enginekit.compare import CompareSettings
    from enginekit.settings import BackendSettings

    for name, cls in (("backend", BackendSettings), ("compare", CompareSettings)):
        if options.get(name) is not None and not isinstance(options[name], cls):
            raise InvalidArgumentError(f"optimize(): {name} must be a {cls.__name__}, not "
                                       f"{type(options[name]).__name__} (backends=[...] lists the backends).")
    model = None if model_or_settings is None else _path(model_or_settings, "model")
    return run_optimize(plan_optimize(model, **options), command, progress)


# load --------------------------------------------------------------------------------------------------------
class LoadedModel:
    """A model loaded on one backend: call it with ``{input name: array}`` (or ``name=array``) to get
    ``{output name: array}``. Use it in a ``with`` block, or call :meth:`close` to release the backend."""

    def __init__(self, runner: Runner, *, label: str, source: Path, package: dict[str, Any] | None = None,
                 objective: str | None = None) -> None:
        self._runner: Runner | None = runner
        self.label = label  # the candidate: NAME[:PRECISION][/KEY=VALUE...]
        self.backend = runner.backend
        self.precision = runner.precision
        self.source = source  # the file (or package folder) given to load()
        self.model_path = runner.model  # what the runner loaded
        self.package = package  # package.json, for a package
        self.objective = objective  # the package engine's objective
        self.inputs: list[TensorSpec] = runner.inputs()
        self.outputs: list[TensorSpec] = runner.outputs()

    @property
    def closed(self) -> bool:
        return self._runner is None

    @property
    def runner(self) -> Runner:
        """The backend's Runner (raises once closed)."""
        if self._runner is None:
            raise InvalidArgumentError(f"The model {self.label} on {str(self.source)!r} is closed.")
        return self._runner

    def __call__(self, feeds: Feeds | None = None, /, **arrays: npt.ArrayLike) -> dict[str, np.ndarray]:
        if feeds is not None and arrays:
            raise InvalidArgumentError("Give the inputs as one mapping or as keywords, not both.")
        feed = _arrays(feeds if feeds is not None else arrays, "feeds")
        try:
            return self.runner.infer(feed)
        except EnginekitError:
            raise
        except Exception as exc:  # the runtime's own failure, typed (its message kept)
            raise BackendError(f"{self.label} failed on {str(self.source)!r}: {type(exc).__name__}: {exc}") from exc

    def describe(self) -> dict[str, object]:
        """Facts the backend reports about the loaded model (version, device, actual precision)."""
        return self.runner.describe()

    def close(self) -> None:
        """Release the backend (sessions, compiled models, device memory). Closing twice does nothing."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.release()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "loaded"
        return f"<enginekit.LoadedModel {self.label} {str(self.source)!r} ({state})>"


def load(
    model: PathLike,
    backend: str | None = None,
    *,
    precision: str | None = None,
    inputs: Sequence[str] = (),
    settings: BackendSettings | None = None,
    objective: str = DEFAULT_OBJECTIVE,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a model on one backend, ready to call: ``with enginekit.load("m.onnx") as m: out = m({"x": x})``.

    ``model``: an ONNX model, a TensorRT engine, a PyTorch source (``file.py:factory``, TorchScript, ``.pt2``,
    an AOTInductor package; ``inputs`` give its ``NAME:DIMS[:DTYPE]``), a Paddle model, or a package folder
    (docs/PACKAGE.md: its engine for ``objective``, ``min_latency`` or ``max_throughput``, with the backend
    settings and candidate options it was verified with). ``backend``: a candidate label
    ``NAME[:PRECISION][/KEY=VALUE...]``; default: the format's runtime (onnx: ort, engine: tensorrt, torch: torch,
    aoti: aoti, paddle: paddle). ``settings``: backend options. Raises MissingDependencyError /
    HardwareUnavailableError when the backend cannot run here, ModelLoadError for a bad model or package.
    """
    from enginekit.multirun import Candidate
    from enginekit.registry import check_format, get_backend
    from enginekit.sources.detect import model_format

    source = _path(model, "model")
    if source.is_dir() and (source / PACKAGE_FILE).exists():
        if backend is not None or precision is not None or inputs:
            raise InvalidArgumentError(f"{str(source)!r} is a package: its engine comes with its backend, precision "
                                       "and inputs; give no backend, precision or inputs.")
        return _load_package(source, objective, settings, trust_remote_code)
    fmt = model_format(source)
    label = backend if backend is not None else DEFAULT_BACKEND.get(fmt, "ort")
    if not isinstance(label, str):
        raise InvalidArgumentError(f"load(): backend must be a name such as 'ort', not {type(label).__name__}.")
    name = get_backend(label.partition("/")[0].partition(":")[0]).name
    cand = Candidate.parse(label, precision or "fp32")
    if precision is not None and ":" in label.partition("/")[0] and cand.precision != precision:
        raise InvalidArgumentError(f"load(): backend {label!r} and precision {precision!r} disagree.")
    check_format(get_backend(name), fmt)
    if fmt == "onnx":  # missing, unreadable or not ONNX: ModelLoadError, before a runtime says it its way
        from enginekit.graph.load import load_model

        load_model(source, load_external_data=False, check=False)
    elif fmt == "engine" and not source.is_file():
        raise ModelLoadError(f"Engine file {str(source)!r} does not exist.")
    base = _backend_settings(settings, trust_remote_code, what="settings")
    if inputs:
        base = dataclasses.replace(base, torch_inputs=_strings(inputs, "inputs"))
    return _open(cand, source, source, cand.settings(base))


def _open(cand: Any, model: Path, source: Path, settings: BackendSettings, *,
          package: dict[str, Any] | None = None, objective: str | None = None) -> LoadedModel:
    """Create and load the runner (the same registry call as `run`); refuse a backend that cannot run here."""
    from enginekit.deps import KNOWN, is_installed
    from enginekit.errors import HardwareUnavailableError
    from enginekit.registry import get_backend

    info = get_backend(cand.backend)
    avail = info.available()
    if not avail.ok:
        missing = next((m for m in info.requires if not is_installed(m)), None)
        if missing is not None:
            dist, extra = KNOWN.get(missing, (missing, None))
            raise MissingDependencyError(dist, extra=extra, purpose=f"the {info.name} backend")
        raise HardwareUnavailableError(f"Backend {info.name!r} cannot run here: {avail.reason}")
    runner = info.create_runner(model, settings, cand.precision)
    try:
        runner.load()
        return LoadedModel(runner, label=cand.label, source=source, package=package, objective=objective)
    except EnginekitError:
        runner.release()
        raise
    except Exception as exc:  # the runtime's own failure, typed (its message kept)
        runner.release()
        raise BackendError(f"{cand.label} could not load {str(model)!r}: {type(exc).__name__}: {exc}") from exc


def _load_package(folder: Path, objective: str, settings: BackendSettings | None, trusted: bool) -> LoadedModel:
    """The engine of ``objective`` in a package folder (docs/PACKAGE.md), run as `optimize` verified it."""
    from enginekit.deploy.package import backend_settings_from_json, package_member, read_package
    from enginekit.multirun import Candidate

    doc = read_package(folder)
    engines = doc["engines"]
    if objective not in engines:
        raise UnknownNameError(f"The package {str(folder)!r} has no engine for objective {objective!r}"
                               f"{did_you_mean(objective, list(engines))}",
                               hint=f"Objectives in it: {', '.join(engines)}.")
    engine = engines[objective]
    if not isinstance(engine, dict) or not isinstance(engine.get("candidate"), str):
        raise ModelLoadError(f"{str(folder / PACKAGE_FILE)!r}: engines.{objective} has no candidate label.")
    cand = Candidate.parse(engine["candidate"])
    for key, value in (("backend", cand.backend), ("precision", cand.precision)):
        if engine.get(key) not in (None, value):
            raise ModelLoadError(f"{str(folder / PACKAGE_FILE)!r}: engines.{objective}.{key} is "
                                 f"{engine.get(key)!r}, but its candidate {engine['candidate']!r} says {value!r}.")
    file = engine.get("file")
    model = package_member(folder, file if file is not None else doc.get("model"),
                           f"engines.{objective}.file" if file is not None else "model")
    base = (_backend_settings(settings, False, what="settings") if settings is not None
            else backend_settings_from_json(doc.get("backend_settings"), folder))
    # trust comes from the caller, never from the package's own file
    base = dataclasses.replace(base, trust_remote_code=trusted)
    return _open(cand, model, folder, cand.settings(base), package=doc, objective=objective)


# helpers -----------------------------------------------------------------------------------------------------
def _backend_settings(value: object, trust_remote_code: bool, what: str = "backend") -> BackendSettings:
    """``value`` (a BackendSettings, or None for the defaults) with the trust switch set when asked."""
    from enginekit.settings import BackendSettings

    if value is None:
        value = BackendSettings()
    if not isinstance(value, BackendSettings):
        raise InvalidArgumentError(f"{what} must be a BackendSettings (backend options), not {value!r}"
                                   + ("; backends=[...] names the backends." if what == "backend" else "."))
    return dataclasses.replace(value, trust_remote_code=trust_remote_code or value.trust_remote_code)


def _path(value: object, what: str) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str) and value:
        return Path(value)
    raise InvalidArgumentError(f"{what} must be a path (str or pathlib.Path), not {value!r}.")


def _given(*values: Sequence[object]) -> bool:
    return any(len(v) for v in values)


def _items(values: Sequence[Any], what: str) -> list[Any]:
    """A sequence of options; a lone string is one value (``inputs="x:1x3"``)."""
    if isinstance(values, str):
        return [values]
    if not isinstance(values, Sequence):
        raise InvalidArgumentError(f"{what} must be a list of values, not {type(values).__name__}.")
    return list(values)


def _strings(values: Sequence[str], what: str) -> tuple[str, ...]:
    items = _items(values, what)
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise InvalidArgumentError(f"{what} must be strings, got {bad[0]!r}.")
    return tuple(items)


def _backend_labels(backends: str | Sequence[str]) -> tuple[str, ...]:
    labels = _strings(backends, "backends")
    if not labels:
        raise InvalidArgumentError("Give at least one backend (backends=['ort']).")
    return labels


def _positive_int(value: object, what: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or int(value) < 1:
        raise InvalidArgumentError(f"{what}: {value!r} is not a positive integer.")
    return int(value)


def _value_ranges(values: Sequence[str | ValueRange], parse: Any) -> tuple[ValueRange, ...]:
    return tuple(parse(v) if isinstance(v, str) else v for v in _items(values, "val_ranges"))


def _arrays(feeds: object, what: str) -> dict[str, np.ndarray]:
    """``{name: array}`` from a mapping of array-likes; FeedError for anything else."""
    if not isinstance(feeds, Mapping):
        raise FeedError(f"{what} must be a mapping {{input name: numpy array}}, not {type(feeds).__name__}.")
    out: dict[str, np.ndarray] = {}
    for name, value in feeds.items():
        if not isinstance(name, str):
            raise FeedError(f"{what}: keys are tensor names (str), got {name!r}.")
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise FeedError(f"{what}[{name!r}] is not an array: {exc}") from exc
        if array.dtype.hasobject:
            raise FeedError(f"{what}[{name!r}] holds Python objects ({array.dtype}), not numbers.")
        out[name] = array
    return out


def _tolerances(value: ToleranceLike | None, default: float, kind: str) -> Tolerances:
    from enginekit.compare import Tolerances, parse_tolerances

    if value is None:
        return Tolerances(default)
    if isinstance(value, Tolerances):
        return value
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{kind} must be a number, not {value!r}.")
    if isinstance(value, int | float):
        return Tolerances(float(value), default_given=True)
    if isinstance(value, Mapping):
        pairs = []
        for name, tol in value.items():
            if not isinstance(name, str) or isinstance(tol, bool) or not isinstance(tol, int | float):
                raise InvalidArgumentError(f"{kind}: per-output tolerances map output names to numbers, got "
                                           f"{name!r}: {tol!r}.")
            pairs.append((name, float(tol)))
        return Tolerances(default, tuple(pairs))
    return parse_tolerances(list(_strings(value, kind)), default, kind)


def _compare_settings(settings: CompareSettings | None, atol: ToleranceLike | None, rtol: ToleranceLike | None,
                      *, default: float | None = None) -> CompareSettings:
    from enginekit.compare import DEFAULT_ATOL, DEFAULT_RTOL, CompareSettings

    if settings is not None:
        if atol is not None or rtol is not None:
            raise InvalidArgumentError("Give compare=CompareSettings(...) or atol/rtol, not both.")
        if not isinstance(settings, CompareSettings):
            raise InvalidArgumentError(f"compare must be a CompareSettings, not {type(settings).__name__}.")
        return settings
    return CompareSettings(atol=_tolerances(atol, DEFAULT_ATOL if default is None else default, "atol"),
                           rtol=_tolerances(rtol, DEFAULT_RTOL if default is None else default, "rtol"))
