"""The ``inductor`` backend: ``torch.compile`` (TorchInductor) of a PyTorch source, with silent fallbacks caught.

Settings (``BackendSettings``): ``inductor_mode`` (default | reduce-overhead | max-autotune |
max-autotune-no-cudagraphs), ``inductor_freezing`` (dynamo reads the global ``torch._inductor.config.freezing``
while it traces, to make the parameters constants of the graph rather than graph inputs, so the runner patches
it around every call that may compile: the load and each call with a new input signature; the global setting
is restored after each such call, and the calls timed later pay nothing), ``dynamic_shapes`` (static: ``dynamic=False``,
one compilation per input shape; dynamic: ``torch._dynamo.mark_dynamic`` on the symbolic dims of
``torch_inputs``, or on axis 0 when none is symbolic; auto: torch.compile's own policy), ``channels_last``.

Dynamo can quietly stop compiling: once a function was recompiled ``torch._dynamo.config.recompile_limit``
times (``cache_size_limit`` before torch 2.6), new shapes run the *eager* code, and graph breaks leave parts
of the model eager. A timing of such a runner would time eager PyTorch. So the runner compiles through a
counting wrapper around inductor's backend: it knows how many graphs were compiled and how many compiled
graphs every call ran. A call that ran none raises :class:`BackendError` ("fell back to eager: recompile
limit reached ..."); graph breaks and recompilations are logged and reported by ``describe()["compile"]``.

Each runner compiles a function with a code object of its own: dynamo keeps compiled code, and counts the
recompile limit, per code object, so runners of the same model class (other precisions, other modes) do not
use up each other's limit, and releasing a runner frees its compiled code.

The model is compiled on ``load()`` at the example shape of ``torch_inputs`` (so ``load_s`` is the compile
time); other shapes compile on first use (static) or reuse the dynamic graph.
"""

from __future__ import annotations

import itertools
import logging
import time
import types
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.backends.torch_common import INDUCTOR_MODES, TorchRunner, check_choice
from enginekit.backends.torch_inputs import example_feed
from enginekit.deps import require
from enginekit.errors import BackendError, EnginekitError, ModelLoadError

if TYPE_CHECKING:
    from enginekit.settings import BackendSettings

log = logging.getLogger(__name__)

_entry_ids = itertools.count()
_LIMIT_WORDS = ("recompile limit", "recompile_limit", "cache_size_limit", "cache size limit")


@dataclass
class CompileStats:
    """What dynamo/inductor did for one runner."""

    graphs: int = 0  # FX graphs compiled (graph breaks and recompilations each add some)
    graph_calls: int = 0  # calls into compiled graphs
    calls: int = 0  # runner calls
    graphs_per_call: int = 0  # the most compiled graphs one call ran
    compilations: list[dict[str, Any]] = field(default_factory=list)  # calls that compiled: shapes, graphs, seconds
    graph_breaks: Counter[str] = field(default_factory=Counter)
    eager_calls: int = 0  # calls that ran no compiled graph
    partial_calls: int = 0  # calls that ran fewer compiled graphs than the most seen

    @property
    def recompilations(self) -> int:
        return max(len(self.compilations) - 1, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "graphs": self.graphs,
            "compilations": self.compilations[-20:],
            "recompilations": self.recompilations,
            "compile_s": round(sum(c["seconds"] for c in self.compilations), 3),
            "graph_breaks": sum(self.graph_breaks.values()),
            "graph_break_reasons": [r.splitlines()[0][:200] for r in list(self.graph_breaks)[:10]],
            "calls": self.calls,
            "compiled_graph_calls": self.graph_calls,
            "eager_calls": self.eager_calls,
            "partial_calls": self.partial_calls,
            "eager_fallback": self.eager_calls > 0,
        }


class CountingBackend:
    """A torch.compile backend: inductor's, with every compiled graph and every call into one counted."""

    def __init__(self, inner: Callable[..., Any], stats: CompileStats) -> None:
        self.inner = inner
        self.stats = stats
        self.__name__ = "enginekit_inductor"

    def __call__(self, gm: Any, example_inputs: Any) -> Callable[..., Any]:
        stats = self.stats
        stats.graphs += 1
        compiled = self.inner(gm, example_inputs)

        def run(*args: Any) -> Any:
            stats.graph_calls += 1
            return compiled(*args)

        return run

    def reset(self) -> None:
        reset = getattr(self.inner, "reset", None)
        if reset is not None:
            reset()


def inductor_backend(mode: str, options: dict[str, Any], dynamic: bool | None) -> Callable[..., Any]:
    """What ``torch.compile(backend="inductor", mode=mode, options=options)`` compiles with."""
    import torch

    wrapper = getattr(torch, "_TorchCompileInductorWrapper", None)  # torch 2.0 .. 2.13
    if wrapper is not None:
        backend: Callable[..., Any] = wrapper(mode, options, dynamic)
        return backend
    from torch._inductor import list_mode_options
    from torch._inductor.compile_fx import compile_fx

    patches = {**(list_mode_options(mode, dynamic) if mode != "default" else {}), **options}
    return lambda gm, inputs: compile_fx(gm, inputs, config_patches=patches)


def recompile_limit() -> tuple[str, int | None]:
    """The name and value of dynamo's per-function recompile limit (``cache_size_limit`` before torch 2.6)."""
    import torch._dynamo

    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            return name, getattr(cfg, name)
    return "recompile_limit", None


def fresh_entry(module: Any) -> Callable[..., Any]:
    """A function calling ``module``, with a code object of its own (dynamo caches per code object)."""

    def forward(*args: Any) -> Any:
        return module(*args)

    code = forward.__code__.replace(co_name=f"enginekit_inductor_{next(_entry_ids)}")
    return types.FunctionType(code, forward.__globals__, code.co_name, None, forward.__closure__)


def _graph_break_counts() -> Counter[str]:
    from torch._dynamo.utils import counters

    return Counter({str(k): int(v) for k, v in counters["graph_break"].items()})


class InductorRunner(TorchRunner):
    backend = "inductor"

    def __init__(self, model: Path, settings: BackendSettings, precision: str = "fp32") -> None:
        super().__init__(model, settings, precision)
        check_choice("--inductor-mode", settings.inductor_mode, INDUCTOR_MODES)
        self.stats = CompileStats()
        self._mark: dict[str, tuple[int, ...]] = {}
        self._cudagraphs = False
        self._seen_breaks: Counter[str] = Counter()
        self._torch: Any = None
        self._inductor_config: Any = None
        self._signatures: set[tuple[Any, ...]] = set()  # input signatures called (and so compiled) already

    def _load(self) -> None:
        from enginekit.sources.detect import TORCHSCRIPT

        torch = self._torch = require("torch", purpose="the 'inductor' backend")
        from torch._inductor import config as inductor_config  # run_staged patches its freezing

        self._inductor_config = inductor_config
        self._setup()
        module, src = self._prepared_source()
        if src.kind == TORCHSCRIPT:
            raise ModelLoadError(
                "TorchScript archives cannot be compiled by torch.compile (dynamo does not trace ScriptModules).",
                hint="Give the Python model (file.py:factory) or a torch.export program (.pt2), or use "
                "--backend torch.",
            )
        self._discover(module)
        s = self.settings
        dynamic = False if s.dynamic_shapes == "static" else None
        self.stats = CompileStats()
        backend = CountingBackend(inductor_backend(s.inductor_mode, {"freezing": s.inductor_freezing}, dynamic),
                                  self.stats)
        self._call = torch.compile(fresh_entry(module), backend=backend, dynamic=dynamic)
        self._cudagraphs = self.device == "cuda" and s.inductor_mode in ("reduce-overhead", "max-autotune")
        self._mark = {}
        if s.dynamic_shapes == "dynamic":
            self._mark = {p.name: tuple(a.axis for a in p.dynamic) for p in self.plans() if p.dynamic}
        self._seen_breaks = _graph_break_counts()
        self._signatures = set()
        self._info.update({"mode": s.inductor_mode, "freezing": s.inductor_freezing,
                           "dynamic_shapes": s.dynamic_shapes, "cudagraphs": self._cudagraphs,
                           "dynamic_axes": {k: list(v) for k, v in self._mark.items()}})
        t0 = time.perf_counter()
        self._infer(example_feed(self.plans()))  # compile now, at the example shape
        log.info("inductor: compiled %d graph(s) in %.1f s", self.stats.graphs, time.perf_counter() - t0)

    def _release(self) -> None:
        super()._release()
        self._torch = None
        self._signatures = set()

    def stage(self, feed: Mapping[str, np.ndarray]) -> dict[str, Any]:
        staged = super().stage(feed)
        for name, axes in self._mark.items():
            t = staged[name]
            for axis in axes:
                if t.dim() > axis and t.shape[axis] >= 2:  # sizes 0 and 1 are always specialized
                    self._torch._dynamo.mark_dynamic(t, axis)
        return staged

    def run_staged(self, staged: Any) -> dict[str, Any]:
        st = self.stats
        graphs0, calls0 = st.graphs, st.graph_calls
        if self._cudagraphs:
            self._torch.compiler.cudagraph_mark_step_begin()
        signature = tuple((k, tuple(v.shape), v.dtype, v.device) for k, v in staged.items())
        t0 = time.perf_counter()
        try:
            if signature in self._signatures:
                out = super().run_staged(staged)
            else:  # dynamo may trace this call: with this runner's freezing setting, restored afterwards
                with self._inductor_config.patch(freezing=self.settings.inductor_freezing):
                    out = super().run_staged(staged)
                self._signatures.add(signature)
        except EnginekitError:
            raise
        except Exception as exc:  # noqa: BLE001 - dynamo/inductor/model errors become the runner's error
            what = "compiling" if st.graphs != graphs0 or not st.compilations else "running"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise BackendError(f"inductor failed while {what} the model: {type(exc).__name__}: {first}") from exc
        st.calls += 1
        if st.graphs != graphs0:
            self._compiled(staged, st.graphs - graphs0, time.perf_counter() - t0)
        ran = st.graph_calls - calls0
        if ran == 0:
            self._fell_back(staged)
        if ran < st.graphs_per_call:
            st.partial_calls += 1
            if st.partial_calls == 1:
                log.warning("inductor: a call ran %d of %d compiled graphs; the rest ran eagerly", ran,
                            st.graphs_per_call)
        st.graphs_per_call = max(st.graphs_per_call, ran)
        return out

    def _compiled(self, staged: Mapping[str, Any], graphs: int, seconds: float) -> None:
        st = self.stats
        st.compilations.append({"shapes": {k: list(v.shape) for k, v in staged.items()}, "graphs": graphs,
                                "seconds": round(seconds, 3)})
        now = _graph_break_counts()
        new = now - self._seen_breaks
        self._seen_breaks = now
        for reason, n in new.items():
            if not any(w in reason.lower() for w in _LIMIT_WORDS):
                st.graph_breaks[reason] += n
        if new:
            log.warning("inductor: %d graph break(s); parts of the model run eagerly: %s", sum(new.values()),
                        "; ".join(r.splitlines()[0] for r in new))
        if len(st.compilations) > 1:
            log.info("inductor: recompiled (%d recompilations) for input shapes %s", st.recompilations,
                     st.compilations[-1]["shapes"])

    def _fell_back(self, staged: Mapping[str, Any]) -> None:
        st = self.stats
        st.eager_calls += 1
        shapes = {k: list(v.shape) for k, v in staged.items()}
        name, limit = recompile_limit()
        hint = None
        if st.compilations and limit is not None and len(st.compilations) >= limit:
            why = (f"recompile limit reached ({st.recompilations} recompilations; "
                   f"torch._dynamo.config.{name}={limit})")
            hint = (f"Use --dynamic-shapes dynamic (or auto) so that the batch axis stays symbolic, feed fewer "
                    f"distinct shapes, or raise torch._dynamo.config.{name}.")
        elif not st.compilations:
            breaks = "; ".join(r.splitlines()[0] for r in st.graph_breaks) or "no graph breaks recorded"
            why = f"dynamo compiled no graph for this model ({breaks})"
        else:
            suppressed = bool(getattr(self._torch._dynamo.config, "suppress_errors", False))
            why = "dynamo ran this call without compiled code"
            if suppressed:
                why += " (torch._dynamo.config.suppress_errors is on: a failed compilation runs eagerly)"
        raise BackendError(f"inductor fell back to eager: {why}. The call with input shapes {shapes} ran "
                           "uncompiled PyTorch code; its outputs and timings would be eager's, not inductor's.",
                           hint=hint)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "compile": self.stats.to_dict()}
