"""What the PyTorch-native backends (torch eager, inductor, aoti) share: sources, IO, precision, device.

A PyTorch source is what ``enginekit export`` takes (``file.py:factory``, ``package.module:factory``, a
TorchScript archive, a ``torch.export`` program ``.pt2``); an AOTInductor package (also a ``.pt2`` zip)
is told apart by its ``data/aotinductor/`` entries. Inputs come from ``BackendSettings.torch_inputs``
(``NAME:DIMS[:DTYPE]``, symbolic dims allowed, parsed like export's ``--input``); outputs are named like
the exporter names them (``output``, or ``output_0..N`` for nested tuples/lists/dicts, flattened in order).

Precision is the candidate's: ``fp32`` (IEEE: TF32 is switched off on CUDA, cuDNN convolutions included),
``tf32`` (CUDA only), ``fp16`` / ``bf16`` (the model's floating weights and floating inputs are cast, as
deployed; no autocast); with ``--precision-plan`` the modules holding the plan's ONNX nodes stay float32
(:mod:`enginekit.backends.torch_plan`). At the runner boundary inputs and outputs stay as the feed gives
them: reduced float outputs come back as float32, so every candidate compares with an fp32 reference. TF32 flags are
set around each call and restored afterwards, so nothing leaks into the rest of the process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.backends.base import Runner
from enginekit.backends.torch_inputs import example_feed, output_specs, plan_torch_inputs, probe_sizes
from enginekit.errors import BackendError, HardwareUnavailableError, InvalidArgumentError, ModelLoadError
from enginekit.tensors import PRECISION_DTYPES, TensorSpec
from enginekit.variants import CHANNELS_LAST as CHANNELS_LAST
from enginekit.variants import INDUCTOR_MODES as INDUCTOR_MODES

if TYPE_CHECKING:
    from enginekit.settings import BackendSettings
    from enginekit.sources.detect import Source
    from enginekit.sources.shapes import InputPlan

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
DYNAMIC_POLICIES = ("static", "dynamic", "auto")
_REDUCED = {p: PRECISION_DTYPES[p] for p in ("fp16", "bf16")}  # precision -> torch dtype name


def check_choice(flag: str, value: str, choices: Sequence[str]) -> str:
    """``value`` when it is one of ``choices``; else InvalidArgumentError listing them (and the closest)."""
    from enginekit.errors import did_you_mean

    if value not in choices:
        raise InvalidArgumentError(
            f"{flag} {value!r}: choose one of {', '.join(choices)}{did_you_mean(value, choices)}")
    return value


# sources ---------------------------------------------------------------------------------------------
def load_source(text: str | Path, *, trust_remote_code: bool = False) -> tuple[Any, Source]:
    """The source model in eval mode (the module of a torch.export program), on CPU, and what it is.

    TorchScript and ``.pt2`` files load only with ``trust_remote_code`` (:mod:`enginekit.sources.torch_load`)."""
    from enginekit.sources.detect import EXPORTED_PROGRAM, detect_source
    from enginekit.sources.torch_load import load_torch_model

    src = detect_source(str(text))
    if src.framework != "torch":
        raise ModelLoadError(f"{str(text)!r} is not a PyTorch source ({src.kind}); the torch backends take "
                             "file.py:factory, package.module:factory, a TorchScript file or a torch.export .pt2.")
    model = load_torch_model(src, None, trust_remote_code=trust_remote_code)
    if src.kind == EXPORTED_PROGRAM:
        model = model.module()  # an unlifted GraphModule; it refuses eval() and is already in inference form
    return model, src


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_digest(src: Source) -> str | None:
    """sha256 of the source file (archive, or the factory's .py file); None for package.module:factory."""
    return file_sha256(src.path) if src.path is not None and src.path.is_file() else None


def resolve_device(setting: str) -> str:
    """``cpu`` or ``cuda`` (``auto``: cuda when torch sees a GPU); HardwareUnavailableError for absent CUDA."""
    import torch

    check_choice("--torch-device", setting, DEVICES)
    if setting == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if setting == "cuda":
        raise HardwareUnavailableError("--torch-device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() "
                                       f"is False; torch {torch.__version__}).")
    return "cpu"


def compute_dtype(precision: str) -> Any:
    """The torch dtype weights and floating inputs are cast to, or None (fp32 / tf32: keep them as they are)."""
    import torch

    name = _REDUCED.get(precision)
    return None if name is None else getattr(torch, name)


def has_conv(module: Any) -> bool:
    """Whether the model holds 2-D convolutions (modules, scripted modules, or conv nodes of a GraphModule)."""
    import torch

    if any(isinstance(m, torch.nn.Conv2d) or getattr(m, "original_name", "") == "Conv2d" for m in module.modules()):
        return True
    nodes = getattr(getattr(module, "graph", None), "nodes", ())
    return any(k in str(getattr(n, "target", "")) for n in nodes for k in ("convolution", "conv2d"))


def use_channels_last(setting: str, device: str, module: Any, plans: Sequence[InputPlan]) -> bool:
    """``auto``: on CUDA, for conv models with a 4-D floating input (where NHWC kernels help)."""
    check_choice("--channels-last", setting, CHANNELS_LAST)
    if setting != "auto":
        return setting == "on"
    image = any(len(p.trace_shape) == 4 and np.issubdtype(np.dtype(p.dtype), np.floating) for p in plans)
    return device == "cuda" and image and has_conv(module)


def prepare_module(module: Any, device: str, dtype: Any, channels_last: bool, keep_fp32: Sequence[str] = ()) -> Any:
    """Cast (fp16/bf16), move and re-layout the model's weights; returns the module.

    ``keep_fp32``: qualified names of submodules that stay float32 inside the cast model (a precision plan).
    """
    import torch

    module = module.to(device)
    if dtype is not None and keep_fp32:
        from enginekit.backends.torch_plan import cast_keeping_fp32

        cast_keeping_fp32(module, dtype, keep_fp32)
    elif dtype is not None:
        module = module.to(dtype)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module


class Tf32Scope:
    """Set TF32 for cuBLAS matmuls and cuDNN convolutions on enter, restore on exit (CUDA runners only); with
    ``cudnn_benchmark``, also ``torch.backends.cudnn.benchmark`` (cuDNN times its algorithms for each new
    convolution shape and keeps the fastest, instead of its heuristics' first choice).

    Uses the legacy ``allow_tf32`` flags, which torch 2.11 and 2.13 both honour and inductor reads; when the
    process already set TF32 with the newer ``fp32_precision`` API, reading the legacy flags raises, and the
    scope switches to that API (mixing the two is what torch refuses). The flags are process-wide: nested or
    concurrent scopes (one runner called from several threads) share one saved state, restored by the last
    scope to exit.
    """

    _lock = threading.Lock()
    _depth = 0
    _saved: list[tuple[Any, str, Any]] = []

    def __init__(self, enabled: bool, cudnn_benchmark: bool = False) -> None:
        self.enabled = enabled
        self.cudnn_benchmark = cudnn_benchmark

    def __enter__(self) -> None:
        import torch

        mm: Any = torch.backends.cuda.matmul
        cudnn: Any = torch.backends.cudnn
        targets: list[tuple[Any, str, Any]]
        with Tf32Scope._lock:
            try:
                targets = [(mm, "allow_tf32", self.enabled), (cudnn, "allow_tf32", self.enabled)]
                saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in targets]
            except RuntimeError:  # "mix of the legacy and new APIs": stay with the new one
                new = "tf32" if self.enabled else "ieee"
                targets = [(mm, "fp32_precision", new)]
                conv = getattr(cudnn, "conv", None)
                if conv is not None and hasattr(conv, "fp32_precision"):
                    targets.append((conv, "fp32_precision", new))
                saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in targets]
            saved.append((cudnn, "benchmark", cudnn.benchmark))  # whichever scope sets it, the last exit restores it
            if self.cudnn_benchmark:
                targets.append((cudnn, "benchmark", True))
            if Tf32Scope._depth == 0:
                Tf32Scope._saved = saved
            Tf32Scope._depth += 1
            for obj, attr, value in targets:
                setattr(obj, attr, value)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with Tf32Scope._lock:
            Tf32Scope._depth -= 1
            if Tf32Scope._depth == 0:
                for obj, attr, value in reversed(Tf32Scope._saved):
                    setattr(obj, attr, value)
                Tf32Scope._saved = []


#: (precision, channels-last) -> the cudnn.benchmark setting under which CUDA convolutions first ran in this process
_CUDNN_MODES: dict[tuple[str, bool], bool] = {}
_CUDNN_MODES_LOCK = threading.Lock()


def claim_cudnn_mode(precision: str, channels_last: bool, benchmark: bool,
                     modes: dict[tuple[str, bool], bool] | None = None) -> str | None:
    """None when a runner may run CUDA convolutions at ``precision`` and layout with cudnn.benchmark = ``benchmark``
    in this process; else why its timings could not be trusted.

    cuDNN keeps one plan cache per process, keyed by shapes, dtype, layout and TF32 but not by the benchmark flag,
    and fills it with whatever algorithm the first call picked (heuristics, or timed under benchmark). A later
    runner of the same model at the same precision and layout, with the other setting, would silently reuse those
    plans: the "autotuned" row would run the heuristics' algorithms, or the plain row the autotuned ones. So one
    process measures one setting per precision and layout, and a row that would mix them is refused (SKIPPED).
    """
    table = _CUDNN_MODES if modes is None else modes
    with _CUDNN_MODES_LOCK:
        first = table.setdefault((precision, channels_last), benchmark)
    if first == benchmark:
        return None
    layout = "channels-last" if channels_last else "NCHW"
    if benchmark:
        return (f"cudnn_benchmark=on: {precision} {layout} convolutions already ran in this process without it, and "
                "cuDNN's plan cache (keyed by shape, dtype, layout and TF32, not by the flag) would hand this row "
                "their heuristic algorithms; measure it in a process of its own (e.g. enginekit bench SOURCE "
                "--input ... -b LABEL)")
    return (f"{precision} {layout} convolutions already ran in this process with cudnn_benchmark=on, and cuDNN's "
            "plan cache (keyed by shape, dtype, layout and TF32, not by the flag) would hand this row those "
            "autotuned algorithms; measure the cudnn_benchmark=on rows in a process of their own")


class NoScope:
    """A do-nothing context manager (CPU runners have no TF32 flags to scope)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def flat_outputs(result: Any) -> list[Any]:
    from enginekit.sources.torch_load import flatten_outputs

    return flatten_outputs(result)


class TorchRunner(Runner):
    """Shared runner of PyTorch-native backends: IO from ``torch_inputs``, device, precision, CUDA hooks.

    ``outputs()`` before ``load()`` runs the source model once (or twice, for dynamic dims) eagerly on CPU
    in fp32 to learn the output names and shapes; after ``load()`` they come from the loaded model itself.
    Benchmarking hooks: ``stage`` copies the feed into torch tensors on the device (cast to the compute
    precision, channels-last when chosen), ``run_staged`` calls the model under ``inference_mode`` and
    returns device tensors, ``fetch`` copies them back as numpy (reduced floats as float32).
    """

    cuda_graph_capable = False  # subclasses whose calls may be captured by torch.cuda.graph

    def __init__(self, model: Path, settings: BackendSettings, precision: str = "fp32") -> None:
        super().__init__(model, settings, precision)
        check_choice("--torch-device", settings.torch_device, DEVICES)
        check_choice("--channels-last", settings.channels_last, CHANNELS_LAST)
        check_choice("--dynamic-shapes", settings.dynamic_shapes, DYNAMIC_POLICIES)
        self.source_text = str(model)
        self.device = "cpu"  # resolved on load
        self.supports_cuda_graph = False
        self._plans: list[InputPlan] | None = None
        self._call: Callable[..., Any] | None = None
        self._dtype: Any = None
        self._channels_last = False
        self._scope: Tf32Scope | NoScope = NoScope()
        self._graphs: list[Any] = []
        self._info: dict[str, object] = {}
        self._graphed = False  # settings.cuda_graph on CUDA: run_staged replays a graph per input signature
        self._replays: dict[tuple[Any, ...], tuple[dict[str, Any], Callable[[], dict[str, Any]]]] = {}

    @property
    def graphs_itself(self) -> bool:
        """Whether ``run_staged`` already replays a CUDA graph (``cuda_graph`` on): the bench protocol must not
        capture another around it."""
        return self._graphed

    # io ----------------------------------------------------------------------------------------------
    def plans(self) -> list[InputPlan]:
        if self._plans is None:
            self._plans = plan_torch_inputs(self.settings.torch_inputs, self.settings.dynamic_shapes)
        return self._plans

    def inputs(self) -> list[TensorSpec]:
        if self._inputs is None:
            self._inputs = [p.spec() for p in self.plans()]
        return self._inputs

    def _io_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        inputs = self.inputs()
        module, _ = load_source(self.source_text, trust_remote_code=self.settings.trust_remote_code)
        return inputs, discover_outputs(module, self.plans(), "cpu", None, False)

    # loading helpers ---------------------------------------------------------------------------------
    def _setup(self, device: str | None = None) -> None:
        """Resolve the device and the precision; refuse tf32 off CUDA."""
        import torch

        self.device = device or resolve_device(self.settings.torch_device)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise HardwareUnavailableError(f"{self.label} needs a CUDA GPU, and torch sees none here.")
        if self.precision == "tf32" and self.device != "cuda":
            raise HardwareUnavailableError("tf32 is a CUDA math mode (Ampere and newer); this runner is on cpu.")
        self._dtype = compute_dtype(self.precision)
        self._scope = (Tf32Scope(self.precision == "tf32", self.settings.cudnn_benchmark) if self.device == "cuda"
                       else NoScope())
        self.supports_cuda_graph = self.cuda_graph_capable and self.device == "cuda"
        self._info = {"torch": torch.__version__, "device": self.device}
        if self.settings.cudnn_benchmark:
            if self.device != "cuda":
                raise HardwareUnavailableError(f"cudnn_benchmark=on needs CUDA; {self.label} runs on {self.device}.")
            self._info["cudnn_benchmark"] = True
        if self.device == "cuda":
            self._info["gpu"] = torch.cuda.get_device_name()
        if self.settings.cuda_graph:
            if not self.cuda_graph_capable:
                raise InvalidArgumentError(f"cuda_graph=on: the {self.backend} backend does not capture CUDA graphs "
                                           "itself (inductor: use mode=reduce-overhead).")
            if self.device != "cuda":
                raise HardwareUnavailableError(f"cuda_graph=on needs CUDA; {self.label} runs on {self.device}.")
            self._info["cuda_graph"] = True
        self._graphed = self.settings.cuda_graph
        self._replays = {}

    def _prepared_source(self) -> tuple[Any, Source]:
        """The source model on the device at the compute precision (channels-last when chosen), the modules of
        the precision plan (when one applies) kept in float32."""
        import torch

        from enginekit.backends.torch_plan import torch_plan_for

        module, src = load_source(self.source_text, trust_remote_code=self.settings.trust_remote_code)
        self._channels_last = use_channels_last(self.settings.channels_last, self.device, module, self.plans())
        plan = torch_plan_for(self.settings, self.precision, src.kind, module)
        keep = plan.module_names() if plan is not None else ()
        module = prepare_module(module, self.device, self._dtype, self._channels_last, keep_fp32=keep)
        self._info.update({"source_kind": src.kind, "channels_last": self._channels_last})
        if self.device == "cuda" and has_conv(module):
            benchmark = self.settings.cudnn_benchmark or bool(torch.backends.cudnn.benchmark)
            why = claim_cudnn_mode(self.precision, self._channels_last, benchmark)
            if why is not None:
                raise HardwareUnavailableError(why)
        if not self.settings.transformer_fastpath:
            from enginekit.backends.torch_quant import turn_off_transformer_fast_path

            if not turn_off_transformer_fast_path(module):
                raise InvalidArgumentError("fastpath=off: the model has no nn.TransformerEncoderLayer or "
                                           "TransformerDecoderLayer whose fast path could be turned off.")
            self._info["transformer_fastpath"] = False
        if self.settings.quantized_linear != "off":
            from enginekit.backends.torch_quant import swap_quantized_linears

            kind = self.settings.quantized_linear
            swapped = swap_quantized_linears(module, kind, self.device, self._dtype or torch.float32)
            self._info["quantized_linear"] = {"kind": kind, "layers": len(swapped), "names": swapped[:20]}
        if plan is not None:
            self._info["precision_plan"] = plan.to_dict()
        return module, src

    def _discover(self, module: Any) -> None:
        """Output specs from eager runs of the prepared model (before any compilation)."""
        with self._scope:  # cuDNN keeps the algorithms it picks here: under this runner's flags
            self._outputs = discover_outputs(module, self.plans(), self.device, self._dtype, self._channels_last)
        self._inputs = [p.spec() for p in self.plans()]

    def _release(self) -> None:
        self._replays.clear()
        self._graphs.clear()
        self._call = None
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    # running -----------------------------------------------------------------------------------------
    def stage(self, feed: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return stage_tensors(feed, self.inputs(), self.device, self._dtype, self._channels_last)

    def run_staged(self, staged: Any) -> dict[str, Any]:
        """One call; with ``cuda_graph`` on, a replay of the graph captured at the first call with these input
        shapes, dtypes and strides (new input tensors are copied into the captured ones; the outputs are the
        graph's buffers, overwritten by the next call)."""
        if not self._graphed:
            return self.run_once(staged)
        signature = tuple((k, tuple(v.shape), v.dtype, tuple(v.stride())) for k, v in staged.items())
        entry = self._replays.get(signature)
        if entry is None:
            static = dict(staged)  # these tensors become the graph's inputs (kept alive here)
            entry = self._replays[signature] = (static, self.capture_cuda_graph(static))
        static, replay = entry
        for name, t in staged.items():
            if t.data_ptr() != static[name].data_ptr():
                static[name].copy_(t)
        return replay()

    def run_once(self, staged: Any) -> dict[str, Any]:
        """One call of the model (never through a CUDA graph)."""
        import torch

        if self._call is None:
            raise InvalidArgumentError(f"Runner {self.label!r} is not loaded; use it as a context manager.")
        args = [staged[s.name] for s in self.inputs()]
        with torch.inference_mode(), self._scope:
            result = self._call(*args)
        flat = flat_outputs(result)
        specs = self.outputs()
        if len(flat) != len(specs):
            raise BackendError(f"{self.label} returned {len(flat)} tensors; the model returned {len(specs)} "
                               f"({', '.join(s.name for s in specs)}) when it was loaded.")
        return {s.name: t for s, t in zip(specs, flat, strict=True)}

    def fetch(self, outputs: Any) -> dict[str, np.ndarray]:
        return {s.name: to_numpy(outputs[s.name]) for s in self.outputs()}

    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def _infer(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return self.fetch(self.run_staged(self.stage(feed)))

    def capture_cuda_graph(self, staged: Any) -> Callable[[], dict[str, Any]]:
        """Capture ``run_staged(staged)`` in a CUDA graph; the callable replays it and returns its outputs.

        ``staged`` tensors are the graph's static inputs: copy new data into them (``staged[n].copy_(x)``)
        before a replay. The outputs are the graph's static buffers, overwritten by the next replay.
        """
        import torch

        if not self.supports_cuda_graph:
            raise NotImplementedError(f"{self.label} cannot capture CUDA graphs on {self.device}")
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the capture: lazy inits, cuBLAS workspaces, allocator pools
                self.run_once(staged)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                static_out = self.run_once(staged)
        except Exception as exc:  # noqa: BLE001 - capture refuses syncs, host reads, dynamic allocations
            raise BackendError(f"{self.label}: CUDA graph capture failed: {type(exc).__name__}: {exc}") from exc
        self._graphs.append(graph)

        def replay() -> dict[str, Any]:
            graph.replay()
            return static_out

        return replay

    def describe(self) -> dict[str, object]:
        return {**super().describe(), **self._info}


def stage_tensors(feed: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], device: str, dtype: Any,
                  channels_last: bool) -> dict[str, Any]:
    """numpy feed → torch tensors on ``device``; floating inputs cast to ``dtype`` (None: kept)."""
    import torch

    out: dict[str, Any] = {}
    for spec in specs:
        t = torch.from_numpy(np.ascontiguousarray(feed[spec.name]))
        t = t.to(device, non_blocking=False)
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        if channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        out[spec.name] = t
    return out


def to_numpy(t: Any) -> np.ndarray:
    """A (device) tensor as a host numpy array; float16 / bfloat16 as float32."""
    import torch

    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return np.ascontiguousarray(t.cpu().numpy())


def discover_outputs(module: Any, plans: Sequence[InputPlan], device: str, dtype: Any,
                     channels_last: bool) -> list[TensorSpec]:
    """Run ``module`` eagerly at the trace shape (and the other shape when a dim is dynamic)."""
    import torch

    specs = [p.spec() for p in plans]

    def run(which: str) -> list[Any]:
        staged = stage_tensors(example_feed(plans, which), specs, device, dtype, channels_last)
        try:
            with torch.inference_mode():
                return flat_outputs(module(*(staged[s.name] for s in specs)))
        except InvalidArgumentError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's model failed on the example inputs
            shapes = {n: list(t.shape) for n, t in staged.items()}
            raise ModelLoadError(f"The model failed on example inputs {shapes}: {type(exc).__name__}: {exc}",
                                 hint="Check --input names, shapes and dtypes (one per forward() argument).") from exc

    first = run("trace")
    return output_specs(first, run("other") if probe_sizes(plans) else None, plans)
