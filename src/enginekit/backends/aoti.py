"""The ``aoti`` backend: ``torch.export`` + AOTInductor packages (``.pt2``), run without the model's Python code.

:func:`build_aoti_package` exports a PyTorch source (dynamic dims from the symbolic dims of ``torch_inputs``,
each a ``torch.export.Dim`` of that name), compiles it with ``torch._inductor.aoti_compile_and_package``
and writes the package atomically with a manifest beside it (``model.pt2.json``: torch/CUDA versions,
device, precision, input/output specs with their dynamic dims, the source and its sha256, build time).

:class:`AotiRunner` takes either
  * an AOTInductor package (format ``aoti``): loaded with ``torch._inductor.aoti_load_package``; the
    model's Python code is never imported, but the package's shared library is loaded, so a package is run
    only with ``settings.trust_remote_code`` (``--trust-remote-code``). IO specs, device and precision come
    from the manifest (without one, IO comes from ``torch_inputs`` and a first run);
  * a PyTorch source (format ``torch``): compiled on ``load()`` into a temporary folder that ``release()``
    deletes (so ``load_s`` is the export + compile time). To keep a deployable package, call
    ``build_aoti_package`` with an output path and run the package.

Precision is compiled in: fp16/bf16 packages hold cast weights and take cast inputs (the runner casts at
the boundary, outputs come back float32). ``inductor_mode`` options apply except CUDA graphs (on CUDA the
runner can capture its calls with ``capture_cuda_graph``); ``inductor_freezing`` is an inductor option of
the compilation. ``channels_last`` converts the weights before export; inputs stay contiguous.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.backends.torch_common import (
    INDUCTOR_MODES,
    NoScope,
    Tf32Scope,
    TorchRunner,
    check_choice,
    compute_dtype,
    discover_outputs,
    file_sha256,
    flat_outputs,
    load_source,
    prepare_module,
    resolve_device,
    source_digest,
    stage_tensors,
    use_channels_last,
)
from enginekit.backends.torch_inputs import example_feed, output_specs, plan_torch_inputs
from enginekit.deps import require
from enginekit.errors import BackendError, FeedError, HardwareUnavailableError, InvalidArgumentError, ModelLoadError
from enginekit.registry import REDUCED_FLOAT_PRECISIONS, TORCH_PRECISIONS
from enginekit.sources.detect import is_aoti_package
from enginekit.sources.shapes import AxisPlan, InputPlan
from enginekit.sources.torch_load import AOTI_PACKAGE, check_trusted
from enginekit.tensors import TensorSpec

if TYPE_CHECKING:
    from enginekit.settings import BackendSettings

log = logging.getLogger(__name__)

FORMAT = "enginekit-aoti"


@dataclass(frozen=True)
class AotiPackage:
    path: Path
    manifest: dict[str, Any]


def manifest_path(package: str | Path) -> Path:
    return Path(str(package) + ".json")


def read_aoti_manifest(package: str | Path) -> dict[str, Any] | None:
    """``<package>.json`` beside the package, or None when there is none (a package built elsewhere)."""
    path = manifest_path(package)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"AOTInductor manifest {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelLoadError(f"{str(path)!r} is not an enginekit AOTInductor manifest (format {FORMAT!r}).")
    return data


def _spec(d: dict[str, Any]) -> TensorSpec:
    return TensorSpec(str(d["name"]), tuple(d["shape"]), str(d["dtype"]))


def package_io(package: Path, torch_inputs: Sequence[str] = (), *,
               trust_remote_code: bool = False) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """IO specs of an AOTInductor package: its manifest's, or (none) ``torch_inputs`` and a first run (which loads
    the package's code: only with ``trust_remote_code``)."""
    from enginekit.settings import BackendSettings

    manifest = read_aoti_manifest(package)
    if manifest is not None:
        return [_spec(d) for d in manifest["inputs"]], [_spec(d) for d in manifest["outputs"]]
    runner = AotiRunner(package, BackendSettings(torch_inputs=tuple(torch_inputs),
                                                 trust_remote_code=trust_remote_code))
    return runner.inputs(), runner.outputs()


def _plans_from_manifest(manifest: dict[str, Any]) -> list[InputPlan]:
    plans = []
    for d in manifest["inputs"]:
        shape = tuple(int(x) for x in manifest["example_shapes"][d["name"]])
        axes = tuple(AxisPlan(i, str(dim), shape[i], None, None, None)
                     for i, dim in enumerate(d["shape"]) if not isinstance(dim, int))
        plans.append(InputPlan(str(d["name"]), str(d["dtype"]), shape, axes))
    return plans


def _export_dims(plans: list[InputPlan]) -> tuple[dict[int, Any] | None, ...]:
    """``dynamic_shapes`` for torch.export: a named ``Dim`` where the spec bounds a dim, else ``Dim.DYNAMIC``.

    Unbounded dims are ``Dim.DYNAMIC`` (torch >= 2.6): export infers the range the code allows (CUDA
    convolutions cap the batch at 65535, say) instead of failing on ``Dim("batch")``'s [0, inf] range.
    """
    import torch

    dims: dict[str, Any] = {}
    specs: list[dict[int, Any] | None] = []
    hint = getattr(torch.export.Dim, "DYNAMIC", None)
    for p in plans:
        spec: dict[int, Any] = {}
        for a in p.dynamic:
            bounds = {k: v for k, v in (("min", a.min), ("max", a.max)) if v is not None}
            if hint is not None and not bounds:
                spec[a.axis] = hint
                continue
            if a.label not in dims:
                dims[a.label] = torch.export.Dim(a.label, **bounds)
            spec[a.axis] = dims[a.label]
        specs.append(spec or None)
    return tuple(specs)


def _exported_ranges(program: Any, plans: list[InputPlan]) -> dict[str, dict[str, int | None]]:
    """The range export settled on for every dynamic dim label (None: unbounded), from the program itself."""
    ranges: dict[str, dict[str, int | None]] = {
        a.label: {"min": a.min, "max": a.max} for p in plans for a in p.dynamic}
    try:
        names = list(program.graph_signature.user_inputs)
        nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        for p, name in zip(plans, names, strict=False):
            shape = nodes[name].meta["val"].shape
            for a in p.dynamic:
                expr = getattr(getattr(shape[a.axis], "node", None), "expr", None)
                vr = program.range_constraints.get(expr) if expr is not None else None
                if vr is not None:
                    ranges[a.label] = {"min": _finite(vr.lower), "max": _finite(vr.upper)}
    except Exception:  # noqa: BLE001 - informational only; keep the ranges of the spec
        log.debug("aoti: could not read the exported ranges", exc_info=True)
    return ranges


def _finite(v: Any) -> int | None:
    """An int bound, or None for sympy's (int_)oo, which int() refuses in several ways."""
    try:
        return int(v) if getattr(v, "is_finite", True) is not False else None
    except Exception:  # noqa: BLE001 - OverflowError, AttributeError ('Infinity' ... '_mpf_'), TypeError
        return None


def _first_lines(exc: BaseException, n: int = 6) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return "\n".join(lines[:n]) or type(exc).__name__


def build_aoti_package(source: str | Path, output: str | Path, settings: BackendSettings, precision: str = "fp32",
                       *, device: str | None = None) -> AotiPackage:
    """Export ``source`` and compile it into the AOTInductor package ``output`` (+ ``output.json``)."""
    from enginekit import __version__
    from enginekit.fileutil import atomic_write_text
    from enginekit.sources.detect import TORCHSCRIPT

    torch = require("torch", purpose="AOTInductor packages")
    check_choice("precision", precision, TORCH_PRECISIONS)
    check_choice("--inductor-mode", settings.inductor_mode, INDUCTOR_MODES)
    out = Path(output)
    if out.suffix != ".pt2":
        raise InvalidArgumentError(f"{str(out)!r}: AOTInductor packages are .pt2 files; use a .pt2 name.")
    device = device or resolve_device(settings.torch_device)
    if precision == "tf32" and device != "cuda":
        raise HardwareUnavailableError("tf32 is a CUDA math mode (Ampere and newer); the package targets cpu.")
    plans = plan_torch_inputs(settings.torch_inputs, settings.dynamic_shapes)
    t0 = time.perf_counter()
    module, src = load_source(source, trust_remote_code=settings.trust_remote_code)
    if src.kind == TORCHSCRIPT:
        raise ModelLoadError("TorchScript archives cannot be exported with torch.export, so AOTInductor cannot "
                             "compile them.", hint="Give the Python model (file.py:factory) or a torch.export .pt2.")
    dtype = compute_dtype(precision)
    channels_last = use_channels_last(settings.channels_last, device, module, plans)
    module = prepare_module(module, device, dtype, channels_last)
    specs = [p.spec() for p in plans]
    outputs = discover_outputs(module, plans, device, dtype, False)
    staged = stage_tensors(example_feed(plans), specs, device, dtype, False)
    args = tuple(staged[s.name] for s in specs)
    dynamic_shapes = _export_dims(plans)
    try:
        program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes if any(dynamic_shapes) else None)
    except Exception as exc:  # noqa: BLE001 - export errors explain themselves (constraint violations, ops)
        raise ModelLoadError(f"torch.export failed: {type(exc).__name__}: {_first_lines(exc)}",
                             hint="A dim the code fixes cannot be symbolic: give it as a number in --input.") from exc
    configs: dict[str, Any] = {"freezing": settings.inductor_freezing}
    if settings.inductor_mode != "default":
        from torch._inductor import list_mode_options

        configs.update({k: v for k, v in list_mode_options(settings.inductor_mode).items() if "cudagraph" not in k})
    ranges = _exported_ranges(program, plans)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Compiled under its final name (the archive's root folder is named after the file) in a temporary
    # folder beside it, then moved over the target: readers never see a half-written package.
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with Tf32Scope(precision == "tf32") if device == "cuda" else NoScope(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations (pytree LeafSpec)
            torch._inductor.aoti_compile_and_package(program, package_path=str(tmpdir / out.name),
                                                     inductor_configs=configs)
        os.replace(tmpdir / out.name, out)
    except Exception as exc:  # noqa: BLE001 - inductor/C++ compiler errors
        raise BackendError(f"AOTInductor could not compile {str(source)!r}: {type(exc).__name__}: "
                           f"{_first_lines(exc)}") from exc
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    manifest = {
        "format": FORMAT,
        "format_version": 1,
        "enginekit": __version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability())) if device == "cuda" else None,
        "platform": {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version()},
        "precision": precision,
        "compute_dtype": None if dtype is None else str(dtype).removeprefix("torch."),
        "channels_last_weights": channels_last,
        "inputs": [s.to_dict() for s in specs],
        "outputs": [s.to_dict() for s in outputs],
        "dynamic_dims": ranges,
        "example_shapes": {p.name: list(p.trace_shape) for p in plans},
        "mode": settings.inductor_mode,
        "inductor_configs": configs,
        "source": {"text": str(source), "kind": src.kind, "path": None if src.path is None else str(src.path),
                   "sha256": source_digest(src)},
        "package_sha256": file_sha256(out),
        "build_time_s": round(time.perf_counter() - t0, 3),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(manifest_path(out), json.dumps(manifest, indent=2) + "\n")
    log.info("aoti: wrote %s in %.1f s", out, manifest["build_time_s"])
    return AotiPackage(out, manifest)


class AotiRunner(TorchRunner):
    """An AOTInductor package (or a PyTorch source compiled into one on load), run without Python model code."""

    backend = "aoti"
    cuda_graph_capable = True

    def __init__(self, model: Path, settings: BackendSettings, precision: str = "fp32") -> None:
        super().__init__(model, settings, precision)
        self.is_package = is_aoti_package(model)
        self.manifest = read_aoti_manifest(model) if self.is_package else None
        self.package: Path | None = Path(model) if self.is_package else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._compiled: Any = None
        self._single: Any = None

    # io ------------------------------------------------------------------------------------------------
    def plans(self) -> list[InputPlan]:
        if self._plans is None and self.manifest is not None:
            self._plans = _plans_from_manifest(self.manifest)
        return super().plans()

    def inputs(self) -> list[TensorSpec]:
        if self._inputs is None and self.manifest is not None:
            self._inputs = [_spec(d) for d in self.manifest["inputs"]]
        return super().inputs()

    def _io_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if self.manifest is not None:
            return self.inputs(), [_spec(d) for d in self.manifest["outputs"]]
        if not self.is_package:
            return super()._io_specs()
        with self:  # a package without a manifest: its outputs are known once it ran
            return self.inputs(), list(self._outputs or [])

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """As every runner, plus: dynamic dims must lie in the range export settled on (the manifest's).

        A lower bound of 2 is export's 0/1-specialization artifact, which AOTInductor itself does not enforce
        (sizes 1 run correctly), so only bounds above 2 are checked from below.
        """
        ranges = (self.manifest or {}).get("dynamic_dims") or {}
        for spec in self.inputs():
            arr = feed.get(spec.name)
            if arr is None or spec.shape is None or arr.ndim != len(spec.shape):
                continue  # the base check names the problem
            for axis, label in spec.symbolic_dims():
                lo, hi = (ranges.get(label) or {}).get("min"), (ranges.get(label) or {}).get("max")
                size = int(arr.shape[axis])
                if (hi is not None and size > hi) or (lo is not None and lo > 2 and size < lo):
                    raise FeedError(f"{self.label} feed: input {spec.name!r} has {label}={size} at axis {axis}; the "
                                    f"package was compiled for {label} in [{lo}, {hi if hi is not None else 'inf'}].")
        return super().infer(feed)

    # lifecycle -----------------------------------------------------------------------------------------
    def _load(self) -> None:
        torch = require("torch", purpose="the 'aoti' backend")
        if self.settings.precision_plan is not None and self.precision in REDUCED_FLOAT_PRECISIONS:
            raise InvalidArgumentError(
                "The aoti backend does not apply --precision-plan: an AOTInductor package is compiled without FP32 "
                "islands.", hint="Use --backend torch or inductor with the plan (and --precision-plan-model), or "
                "ort:fp16 / onnx-reference on the ONNX export.")
        if self.is_package:  # a shared library: only with --trust-remote-code (a package built on load is ours)
            check_trusted(self.model, AOTI_PACKAGE, self.settings.trust_remote_code)
            self._load_package_setup()
        else:
            self._setup()
            self._tmp = tempfile.TemporaryDirectory(prefix="enginekit-aoti-")
            built = build_aoti_package(self.source_text, Path(self._tmp.name) / "model.pt2", self.settings,
                                       self.precision, device=self.device)
            self.package, self.manifest = built.path, built.manifest
            self._inputs = [_spec(d) for d in built.manifest["inputs"]]
            self._outputs = [_spec(d) for d in built.manifest["outputs"]]
        assert self.package is not None
        from enginekit.backends.aoti_probe import probe_load

        probe_load(self.package, self.device)  # a package whose load kills the process: SKIPPED, not a crash
        try:
            self._compiled = torch._inductor.aoti_load_package(str(self.package))
        except Exception as exc:  # noqa: BLE001 - a package for another device, torch version or machine
            raise BackendError(f"AOTInductor could not load {str(self.package)!r}: {type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
        metadata = dict(self._compiled.get_metadata()) if hasattr(self._compiled, "get_metadata") else {}
        key = str(metadata.get("AOTI_DEVICE_KEY") or self.device).split(":")[0]
        if key != self.device:
            raise InvalidArgumentError(f"{str(self.package)!r} was compiled for {key}, and this runner runs on "
                                       f"{self.device}; use --torch-device {key}.")
        self._call = self._compiled
        if self.manifest is not None:
            self._info.update({"source_kind": self.manifest["source"]["kind"],
                               "channels_last": bool(self.manifest.get("channels_last_weights"))})
        self._info.update({"package": str(self.package), "built_on_load": not self.is_package,
                           "manifest": None if self.manifest is None else {
                               k: self.manifest.get(k) for k in ("torch", "device", "precision", "dynamic_dims",
                                                                 "build_time_s", "created")}})
        feed = example_feed(self.plans())
        if self.manifest is None:  # a package built elsewhere: learn the outputs from a first run
            staged = self.stage(feed)
            with torch.inference_mode():
                flat = flat_outputs(self._call(*(staged[s.name] for s in self.inputs())))
            self._outputs = output_specs(flat, None, self.plans())
        self._infer(feed)  # warm-up: lazy CUDA initialization, and a check of the output count

    def _load_package_setup(self) -> None:
        m = self.manifest
        want = self.settings.torch_device
        if m is not None:
            if want not in ("auto", m["device"]):
                raise InvalidArgumentError(f"{str(self.model)!r} was compiled for {m['device']}; --torch-device "
                                           f"{want} cannot run it (leave it at auto).")
            if m["precision"] != self.precision:
                raise InvalidArgumentError(
                    f"{str(self.model)!r} was compiled for {m['precision']}; run it as --backend "
                    f"aoti{'' if m['precision'] == 'fp32' else ':' + m['precision']}, not {self.label}."
                )
            self._setup(str(m["device"]))
            self._dtype = compute_dtype(m["precision"])
            self._info["built_with_torch"] = m.get("torch")
            import torch

            if str(m.get("torch", "")).split("+")[0] != torch.__version__.split("+")[0]:
                log.warning("aoti: %s was built with torch %s; this is torch %s", self.model, m.get("torch"),
                            torch.__version__)
        else:
            self._setup()
        self._channels_last = False

    def _release(self) -> None:
        super()._release()
        self._compiled = self._single = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.package = None

    def capture_cuda_graph(self, staged: Any) -> Any:
        """Capture through a single-threaded instance of the package (the default one synchronizes threads)."""
        import torch

        if not self.supports_cuda_graph or self.package is None:
            return super().capture_cuda_graph(staged)
        if self._single is None:
            self._single = torch._inductor.aoti_load_package(str(self.package), run_single_threaded=True)
        default, self._call = self._call, self._single
        try:
            return super().capture_cuda_graph(staged)
        finally:
            self._call = default
