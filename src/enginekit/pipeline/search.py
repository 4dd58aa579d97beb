"""The configuration search of `optimize` for a PyTorch source: which way to run it is fastest, proven per batch size.

For every batch size (``SearchSettings.batches``) every candidate configuration runs the same feed: the
comparison feed repeated along the batch axis, so real data (``--load-inputs``) stays real. Each output is
compared with eager FP32 PyTorch at that batch (the tolerance rule of its precision,
:mod:`enginekit.compare.per_precision`; ``linear=fp8`` / ``linear=int8`` rows by the 8-bit rule), and each
configuration is timed with the `enginekit bench` protocol (data resident on the device, CUDA events on GPU,
warm-up by time, the unstable-run warning). Only rows that pass may be named best.

Roles of the rows (what the docs tables compare, at equal precision):

* ``reference``: eager FP32, channels-first: what every row is verified against.
* ``plain``: ``torch.compile`` as a user calls it on a model cast to the precision (inductor default mode, no
  freezing, no layout change): the row the speed-ups are taken against.
* ``flags``: a configuration plain PyTorch reaches by setting flags (freezing, reduce-overhead, max-autotune,
  channels-last, eager + ``torch.cuda.graph``; ``torch.backends.cudnn.benchmark`` when listed). The fastest passing
  one is the "best plain configuration".
* ``beyond``: a change plain PyTorch users do not get from a flag: ``linear=int8`` (W8A8 int8 matmuls) and
  ``linear=fp8`` (FP8 matmuls), both with activations quantized per row in kernels inductor fuses, and the
  self-attention projections quantized too (:mod:`enginekit.backends.torch_quant`).

Compilation limit (``SearchSettings.compile_limit_s``, ``--search-compile-limit``, default 300 s): an inductor
(torch.compile) configuration compiles while it loads (at the example shape) and again on its first call at another
batch size; each of these runs under a wall-clock alarm (SIGALRM, in the main thread only; elsewhere there is no
limit), the timed loops do not. A configuration past it becomes a SKIPPED row saying so (at every batch when its
load ran over; else at that batch and the larger ones), and dynamo's caches are reset; the search goes on. The alarm
interrupts Python code, so one long call into C (a single kernel compile) can overrun the limit until it returns;
it fires again every 50 ms until the block ends, since one landing in a finalizer is dropped by Python;
an AOTInductor package compiles while it loads, which the limit does not cover.

Best per batch: the lowest median latency (objective ``latency``) and the most items per second
(``throughput``), among passing rows. The compute floor is the model's FLOPs at that batch (counted by
``torch.utils.flop_counter`` on the reference run) over the measured peak of an fp16 GEMM on this GPU.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.errors import InvalidArgumentError
from enginekit.multirun import Candidate, use_runner
from enginekit.status import Status
from enginekit.variants import quantized_kind

if TYPE_CHECKING:
    from enginekit.backends.base import Runner
    from enginekit.compare import CompareSettings
    from enginekit.settings import BackendSettings, SearchSettings, TimingSettings

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

REFERENCE = Candidate("torch", "fp32", options=(("channels_last", "off"),))
ROLES = ("reference", "plain", "flags", "beyond")


def plain_compile(precision: str) -> Candidate:
    """``torch.compile(model.to(precision))`` as a user writes it."""
    return Candidate("inductor", precision, options=(("mode", "default"), ("freezing", "off"),
                                                     ("channels_last", "off")))


def role_of(c: Candidate) -> str:
    if c == REFERENCE:
        return "reference"
    if c.backend == "inductor" and dict(c.options) == dict(plain_compile(c.precision).options):
        return "plain"
    return "beyond" if quantized_kind(c.options) else "flags"


def default_precisions(device: str) -> tuple[str, ...]:
    from enginekit.hardware import cpu_supports_bf16

    if device == "cuda":
        return ("fp16", "bf16")
    return ("fp32", "bf16") if cpu_supports_bf16() else ("fp32",)


def default_candidates(device: str, precisions: Sequence[str], *, conv: bool, linear: bool,
                       transformer: bool = False) -> list[Candidate]:
    """The candidate set: per precision, plain torch.compile, then the configurations flags reach; on CUDA with
    a model holding layers 8-bit matmuls take (``linear``), 8-bit linears too (int8 at each precision, FP8 at bf16).

    ``cudnn_benchmark=on`` is not in it: cuDNN's plan cache is shared by every row of one process
    (:func:`enginekit.backends.torch_common.claim_cudnn_mode`), so it is measured in a search of its own
    (``--search-candidate``)."""
    layouts: list[tuple[tuple[str, str], ...]] = [(("channels_last", "on"),), (("channels_last", "off"),)] if conv \
        else [()]
    out: list[Candidate] = []

    def add(backend: str, precision: str, *opts: tuple[str, str]) -> None:
        out.append(Candidate(backend, precision, options=tuple(opts)))

    for p in precisions:
        out.append(plain_compile(p))
        if device == "cuda":
            for lay in layouts:
                add("torch", p, *lay, ("cuda_graph", "on"))
                add("inductor", p, ("mode", "reduce-overhead"), ("freezing", "on"), *lay)
            add("inductor", p, ("mode", "reduce-overhead"), ("freezing", "off"))
            if transformer:  # the layers' fused native op is opaque to inductor: let it fuse around the matmuls
                add("inductor", p, ("mode", "reduce-overhead"), ("freezing", "on"), ("fastpath", "off"))
            add("inductor", p, ("mode", "default"), ("freezing", "on"))
            add("inductor", p, ("mode", "max-autotune"), ("freezing", "on"))
            add("inductor", p, ("mode", "max-autotune-no-cudagraphs"), ("freezing", "on"))
            if linear:  # max-autotune: Triton int8 templates can take the dequantizing epilogue (no int32 round trip)
                add("inductor", p, ("mode", "reduce-overhead"), ("freezing", "on"), ("linear", "int8"))
                add("inductor", p, ("mode", "max-autotune"), ("freezing", "on"), ("linear", "int8"))
            if p == "bf16" and linear:
                add("inductor", p, ("mode", "reduce-overhead"), ("freezing", "on"), ("linear", "fp8"))
        else:
            for lay in layouts:
                add("inductor", p, ("mode", "default"), ("freezing", "on"), *lay)
            if conv:
                add("torch", p, ("channels_last", "on"))
    # options are kept in enginekit.variants' order, as parsing would
    return [Candidate.parse(c.label) for c in dict.fromkeys(out)]


@dataclass
class SearchRow:
    candidate: str
    backend: str
    precision: str
    role: str
    batch: int
    status: str = Status.OK
    reason: str = ""
    timing: dict[str, Any] | None = None  # median_ms, mean_ms, p99_ms, cv, items_per_s, runs, clock
    unstable: str | None = None  # the bench warning when the coefficient of variation is high
    max_abs_err: float | None = None
    atol: float | None = None
    speedup_vs_plain: float | None = None  # plain torch.compile at the same precision and batch / this row
    speedup_vs_eager: float | None = None  # eager FP32 / this row
    load_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def median_ms(self) -> float | None:
        return None if self.timing is None else float(self.timing["median_ms"])

    @property
    def items_per_s(self) -> float | None:
        return None if self.timing is None else float(self.timing["items_per_s"])

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SearchResult:
    device: str
    batches: tuple[int, ...]
    candidates: list[str]
    rows: list[SearchRow] = field(default_factory=list)
    gpu: str | None = None
    peak_tflops: float | None = None  # measured fp16 GEMM throughput (CUDA)
    flops: dict[int, float] = field(default_factory=dict)  # per batch, one forward pass

    def at(self, batch: int) -> list[SearchRow]:
        return [r for r in self.rows if r.batch == batch]

    def best(self, batch: int, objective: str = "latency", roles: Sequence[str] = ROLES,
             precision: str | None = None) -> SearchRow | None:
        """The fastest passing row at ``batch`` among ``roles`` (and ``precision``) for ``objective``."""
        ok = [r for r in self.at(batch) if r.status == Status.OK and r.timing is not None and r.role in roles
              and (precision is None or r.precision == precision)]
        if not ok:
            return None
        if objective == "throughput":
            return max(ok, key=lambda r: r.items_per_s or 0.0)
        return min(ok, key=lambda r: r.median_ms or float("inf"))

    def floor_ms(self, batch: int) -> float | None:
        flops = self.flops.get(batch)
        return None if not flops or not self.peak_tflops else flops / (self.peak_tflops * 1e12) * 1e3

    def summary(self, batch: int) -> dict[str, Any]:
        """What the docs tables show for one batch: plain compile, best plain configuration, best, floor."""
        best = self.best(batch)
        fastest = self.best(batch, "throughput")
        precision = best.precision if best is not None else None
        plain = next((r for r in self.at(batch) if r.role == "plain" and r.precision == precision), None)
        best_flags = self.best(batch, roles=("reference", "plain", "flags"), precision=precision)

        def ms(r: SearchRow | None) -> float | None:
            return None if r is None or r.status != Status.OK else r.median_ms

        return {
            "batch": batch,
            "best_latency": best.candidate if best else None,
            "best_latency_ms": ms(best),
            "best_throughput": fastest.candidate if fastest else None,
            "best_throughput_items_per_s": fastest.items_per_s if fastest else None,
            "precision": precision,
            "plain_compile": plain.candidate if plain else None,
            "plain_compile_ms": ms(plain),
            "best_plain": best_flags.candidate if best_flags else None,
            "best_plain_ms": ms(best_flags),
            "floor_ms": self.floor_ms(batch),
            # rows of this summary whose timing is unstable: their ratios carry the warning
            "unstable": sorted({r.candidate for r in (best, plain, best_flags, fastest)
                                if r is not None and r.unstable}),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "gpu": self.gpu, "batches": list(self.batches), "candidates": self.candidates,
                "peak_tflops": self.peak_tflops, "flops": {str(k): v for k, v in self.flops.items()},
                "best": [self.summary(b) for b in self.batches], "rows": [r.to_dict() for r in self.rows]}


# --- feeds -------------------------------------------------------------------------------------------------------
def batch_inputs(torch_inputs: Sequence[str]) -> list[str]:
    """Inputs whose axis 0 is symbolic (the batch the search varies); InvalidArgumentError when none is."""
    from enginekit.backends.torch_inputs import plan_torch_inputs

    names = [p.name for p in plan_torch_inputs(torch_inputs) if any(d.axis == 0 for d in p.dynamic)]
    if not names:
        raise InvalidArgumentError("The configuration search varies the batch size: give the inputs a symbolic "
                                   "batch dim, e.g. --input x:batch,3,224,224.")
    return names


def feed_at(feed: Mapping[str, np.ndarray], batched: Sequence[str], batch: int) -> dict[str, np.ndarray]:
    """``feed`` with the batched inputs repeated (or cut) along axis 0 to ``batch`` rows."""
    out = {}
    for name, arr in feed.items():
        if name in batched:
            idx = np.arange(batch) % arr.shape[0]
            arr = np.ascontiguousarray(arr[idx])
        out[name] = arr
    return out


# --- the search -------------------------------------------------------------------------------------------------
def search_configurations(
    source: str | Path,
    feed: Mapping[str, np.ndarray],
    search: SearchSettings,
    backend: BackendSettings,
    compare: CompareSettings,
    timing: TimingSettings,
    progress: Progress | None = None,
) -> SearchResult:
    """Run the candidate set at every batch size; see the module docstring. Raises InvalidArgumentError for bad
    settings; a candidate's failure is its rows' status."""
    from enginekit.backends.torch_common import has_conv, load_source, resolve_device
    from enginekit.backends.torch_quant import has_transformer_layers, quantizable_layers
    from enginekit.deps import require

    torch = require("torch", purpose="the configuration search")
    batched = batch_inputs(backend.torch_inputs)
    batches = tuple(search.batches) or (int(feed[batched[0]].shape[0]),)
    if any(b < 1 for b in batches):
        raise InvalidArgumentError("--search-batch: give batch sizes >= 1.")
    device = resolve_device(backend.torch_device)
    module, _ = load_source(str(source), trust_remote_code=backend.trust_remote_code)
    conv = has_conv(module)
    linear = quantizable_layers(module)
    transformer = has_transformer_layers(module)
    del module
    precisions = search.precisions or default_precisions(device)
    cands = ([Candidate.parse(c) for c in search.candidates] if search.candidates
             else default_candidates(device, precisions, conv=conv, linear=linear, transformer=transformer))
    for c in cands:
        if c.backend not in ("torch", "inductor", "aoti"):
            raise InvalidArgumentError(f"--search-candidate {c.label}: the search runs the PyTorch backends "
                                       "(torch, inductor, aoti) on the source.")
    cands = [c for c in dict.fromkeys(cands) if c != REFERENCE]
    base = replace(backend, torch_device=device)
    result = SearchResult(device, batches, [REFERENCE.label] + [c.label for c in cands])
    if device == "cuda":
        result.gpu = str(torch.cuda.get_device_name())
        result.peak_tflops = gemm_tflops(torch)
    feeds = {b: feed_at(feed, batched, b) for b in batches}
    refs: dict[int, dict[str, np.ndarray]] = {}
    for cand in [REFERENCE, *cands]:
        if progress:
            progress(f"search: {cand.label}")
        result.rows += _candidate_rows(cand, Path(str(source)), base, feeds, refs, result, compare, timing,
                                       search.compile_limit_s)
    _fill_speedups(result)
    return result


def _candidate_rows(
    cand: Candidate, source: Path, base: BackendSettings, feeds: Mapping[int, dict[str, np.ndarray]],
    refs: dict[int, dict[str, np.ndarray]], result: SearchResult, compare: CompareSettings, timing: TimingSettings,
    compile_limit_s: float | None = None,
) -> list[SearchRow]:
    role = role_of(cand)
    limit = compile_limit_s if cand.backend == "inductor" else None  # eager runs compile nothing; aoti at load

    loading: list[_Alarm | None] = [None]

    def work(runner: Runner) -> list[SearchRow]:
        if loading[0] is not None:
            loading[0].cancel()  # loaded (compiled at the example shape) in time: the timed loops are not limited
        rows: list[SearchRow] = []
        timed_out: tuple[int, str] | None = None
        for b, feed in feeds.items():
            if timed_out is not None and b >= timed_out[0]:  # a batch as large compiles at least as long
                rows.append(SearchRow(cand.label, cand.backend, cand.precision, role, b, Status.SKIPPED,
                                      f"{timed_out[1]} (at batch {timed_out[0]})"))
                continue
            rows.append(_measure(runner, cand, role, b, feed, refs, result, compare, timing, limit))
            if rows[-1].reason.startswith(_LIMIT_REASON) and timed_out is None:
                timed_out = (b, rows[-1].reason)
        return rows

    try:
        with _time_limit(limit) as alarm:  # the inductor runner compiles while it loads, at the example shape
            loading[0] = alarm
            row, rows = use_runner(cand, source, base, work)
    except _CompileTimeout as exc:
        _reset_dynamo()
        return [SearchRow(cand.label, cand.backend, cand.precision, role, b, Status.SKIPPED,
                          _limit_reason(exc.seconds, " while loading")) for b in feeds]
    if rows is None:
        if _TIMEOUT_TEXT in row.reason:  # a backend that wrapped the alarm in its own error while loading
            _reset_dynamo()
            row.status = Status.SKIPPED
            row.reason = _limit_reason(limit or 0.0, " while loading")
        rows = [SearchRow(cand.label, cand.backend, cand.precision, role, b, row.status, row.reason)
                for b in feeds]
    for r in rows:
        r.load_s = row.load_s
        compile_stats = row.details.get("compile")
        if isinstance(compile_stats, dict):
            r.details["compile"] = {k: compile_stats.get(k) for k in ("graphs", "recompilations", "graph_breaks",
                                                                      "compile_s", "eager_fallback")}
        for key in ("channels_last", "cuda_graph", "cudnn_benchmark", "transformer_fastpath", "quantized_linear",
                    "cudagraphs"):
            if key in row.details:
                r.details[key] = row.details[key]
    return rows


def _measure(
    runner: Runner, cand: Candidate, role: str, batch: int, feed: dict[str, np.ndarray],
    refs: dict[int, dict[str, np.ndarray]], result: SearchResult, compare: CompareSettings, timing: TimingSettings,
    compile_limit_s: float | None = None,
) -> SearchRow:
    from enginekit.bench.protocol import CPU_CLOCK, CUDA_CLOCK, make_step, run_protocol
    from enginekit.bench.result import Timing
    from enginekit.bench.stats import unstable_warning
    from enginekit.bench.sweep import classify
    from enginekit.compare import compare_outputs
    from enginekit.compare.per_precision import settings_for_precision
    from enginekit.multirun import BackendRow

    row = SearchRow(cand.label, cand.backend, cand.precision, role, batch)
    try:
        if role == "reference":
            result.flops[batch] = count_flops(runner, feed)
        with _time_limit(compile_limit_s):  # the first call compiles
            outputs = runner.infer(feed)
        if role == "reference":
            refs[batch] = outputs
        ref = refs.get(batch)
        if ref is None:
            row.status, row.reason = Status.SKIPPED, f"the reference {REFERENCE.label} did not run at batch {batch}"
            return row
        judged = BackendRow(cand.backend, cand.precision, Status.OK, options=cand.options).judged_as
        cmp = compare_outputs(ref, outputs, settings_for_precision(compare, judged, ref))
        row.max_abs_err = max((o.max_abs_err for o in cmp.outputs), default=None)
        row.atol = max((o.atol for o in cmp.outputs), default=None)
        if not cmp.passed:
            row.status = Status.FAILED
            row.reason = "; ".join(f"{o.name}: {o.reason}" for o in cmp.outputs if not o.passed) or "outputs differ"
        samples = run_protocol(make_step(runner, feed), timing)
        t = Timing.from_samples(samples, batch, CUDA_CLOCK if runner.device == "cuda" else CPU_CLOCK)
        lat = t.latency
        row.timing = {"median_ms": lat.median_ms, "mean_ms": lat.mean_ms, "p99_ms": lat.p99_ms, "cv": lat.cv,
                      "items_per_s": t.items_per_s, "runs": t.runs, "clock": t.clock}
        row.unstable = unstable_warning(lat, timing.unstable_cv)
    except (_CompileTimeout, Exception) as exc:  # noqa: BLE001 - one batch's failure (out of memory, a compile
        timeout = _timeout_in(exc)  # error) is its row's; the alarm, also when a backend wrapped it, is a skip
        if timeout is not None:
            row.status, row.reason = Status.SKIPPED, _limit_reason(timeout.seconds)
            _reset_dynamo()
        else:
            log.debug("search: %s at batch %d failed", cand.label, batch, exc_info=True)
            row.status, row.reason = classify(exc)
    log.info("search: batch %d %s: %s, median %s ms, max abs err %s%s", batch, cand.label, row.status,
             None if row.median_ms is None else f"{row.median_ms:.4g}", row.max_abs_err,
             f" ({row.reason[:200]})" if row.reason else "")
    return row


_LIMIT_REASON = "not measured: its compilation ran past the limit of"


_TIMEOUT_TEXT = "compilation ran past"


class _CompileTimeout(BaseException):  # noqa: N818 - like KeyboardInterrupt: torch's `except Exception` lets it by
    def __init__(self, seconds: float) -> None:
        super().__init__(f"{_TIMEOUT_TEXT} {seconds:g} s")
        self.seconds = seconds


_REFIRE_S = 0.05  # a lost alarm comes back this soon


class _Alarm:
    """The armed limit of one :func:`_time_limit` block; ``cancel()`` disarms it early."""

    def cancel(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[_Alarm | None]:
    """Raise _CompileTimeout in the block once ``seconds`` of wall time have passed (module doc); no limit (None
    yielded) for None/0, or outside the main thread (signals are delivered there only). The previous SIGALRM
    handler and any timer armed outside are restored afterwards (the outer one with its remaining time)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield None
        return

    def alarm(signum: int, frame: Any) -> None:
        raise _CompileTimeout(seconds)

    previous = signal.getsignal(signal.SIGALRM)
    outer, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    signal.signal(signal.SIGALRM, alarm)
    try:
        try:
            # and again every _REFIRE_S until the block ends: an exception raised while Python runs a finalizer or
            # a __del__ (a GC callback inside torch) is printed as "Exception ignored in ..." and lost there
            signal.setitimer(signal.ITIMER_REAL, seconds, _REFIRE_S)
            yield _Alarm()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:  # also when the alarm fired inside the inner finally
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if outer > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 1e-6), outer_interval)


def _limit_reason(seconds: float, where: str = "") -> str:
    return f"{_LIMIT_REASON} {seconds:g} s (--search-compile-limit){where}"


def _timeout_in(exc: BaseException) -> _CompileTimeout | None:
    """The alarm, when it is ``exc`` or in its chain of causes."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, _CompileTimeout):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _reset_dynamo() -> None:
    """Forget the interrupted compilation (its caches may be half-written)."""
    try:
        import torch

        torch._dynamo.reset()
    except Exception:  # noqa: BLE001 - best effort: the next configuration recompiles anyway
        log.debug("dynamo reset failed", exc_info=True)


def _fill_speedups(result: SearchResult) -> None:
    for r in result.rows:
        if r.median_ms is None:
            continue
        same = result.at(r.batch)
        plain = next((p for p in same if p.role == "plain" and p.precision == r.precision and p.median_ms), None)
        eager = next((p for p in same if p.role == "reference" and p.median_ms), None)
        if plain is not None and plain.status == Status.OK:
            r.speedup_vs_plain = (plain.median_ms or 0.0) / r.median_ms
        if eager is not None:
            r.speedup_vs_eager = (eager.median_ms or 0.0) / r.median_ms


# --- floor --------------------------------------------------------------------------------------------------------
def count_flops(runner: Runner, feed: Mapping[str, np.ndarray]) -> float:
    """FLOPs of one forward pass of the runner's model on ``feed`` (torch.utils.flop_counter; matmuls, attention
    and convolutions, as the floor counts them). nn.TransformerEncoderLayer's fused inference "fast path" is one op
    the counter does not see into, so it is switched off while counting (and restored)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    mha = torch.backends.mha
    fast_path = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter:
            runner.infer(feed)
    finally:
        mha.set_fastpath_enabled(fast_path)
    return float(counter.get_total_flops())


def gemm_tflops(torch: Any, n: int = 8192, iters: int = 20) -> float:
    """Measured fp16 dense GEMM throughput of this GPU (TFLOP/s), the peak the floor divides by."""
    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / iters
    del a, b
    torch.cuda.empty_cache()
    return float(2 * n**3 / seconds / 1e12)


def timing_of(search: SearchSettings, base: TimingSettings) -> TimingSettings:
    """The search's timed loop: the bench protocol with the search's warm-up and duration."""
    return replace(base, warmup_s=search.warmup_s, duration_s=search.duration_s, max_time_s=None)

