"""Where a PyTorch configuration's time goes, by kernel category, and how much faster it could get at most.

A timed loop says how long a call takes; it does not say whether a faster engine is possible. This module
answers the second question with a measurement: run the call under ``torch.profiler``, put every kernel
(or, on CPU, every aten op) into one of a few categories, and bound the speed-up by Amdahl's law. If the
matrix products (GEMMs, convolutions, attention) take 85% of the time and already run near the GPU's
measured GEMM throughput, no engine can be much faster than the one profiled; if they take 40%, the other
60% (elementwise, normalization, copies, launch gaps hidden in them) is where a faster engine would win.

Categories (:data:`CATEGORIES`): ``gemm``, ``conv``, ``attention`` (together the "matmuls" of the bounds),
``normalization/elementwise``, ``copy/layout`` and ``other``. :func:`classify` names one for a kernel or op
name; its rules are the single table :data:`RULES`, tried in order (the first match wins). The order
matters because the names overlap:

1. Triton templates (``triton_tem_``) are inductor's own matmul / convolution / attention kernels: their fused
   epilogues (``triton_tem_fused_addmm_gelu_2``) would otherwise read as elementwise.
2. Every other inductor-generated kernel (``triton_poi_`` / ``triton_red_`` / ``triton_per_`` / ``triton_for_``,
   and CPU ``cpp_fused_``) is fused pointwise / reduction code, whatever op names it carries
   (``triton_poi_fused_convolution_0`` is the bias add after an extern convolution, not a convolution).
3. CUTLASS 3.x kernels before copies: their names spell the whole template, copy atoms (``cute::Copy_Atom``)
   included, so ``flash`` / ``fmha``, ``cutlass::conv`` and ``cutlass::gemm`` / ``GemmUniversal`` match first.
4. Copies and layout changes, by the names of copy kernels (not any "copy"), before the rest: cuDNN's
   ``nchwToNhwcKernel`` lives in the ``cudnn`` namespace (which rule 7 would call a convolution), and PyTorch's
   copies are ``elementwise_kernel<...direct_copy...>`` (which rule 9 would call elementwise).
5. Attention before convolution and GEMM: cuDNN's fused attention (``cudnn_generated_..._sdpa_...``) contains
   ``cudnn``.
6. Normalization and pooling before convolution: cuDNN's batch-norm and pooling kernels live in ``cudnn::``.
7. Convolutions before GEMMs: implicit-GEMM convolutions are named ``..._fprop_implicit_gemm_...``.
8. GEMMs (cuBLAS ``nvjet_`` / ``sm90_xmma_gemm_`` / ``ampere_..._gemm_``, CUTLASS, ``aten::mm`` and friends),
9. then the remaining elementwise / reduction / normalization kernels and ops; anything else is ``other``.

What is counted (:func:`profile_callable`): on CUDA the device-side events only (kernels, memcpy, memset),
by their device time, so that host overhead and launch gaps are not in the total (an engine that removes
launch gaps, such as CUDA graphs, shows up as the same kernel time with a shorter wall time). On CPU the
*self* CPU time of every op, so that nested ops are not counted twice (``aten::linear`` -> ``aten::addmm``
counts the GEMM once, in ``aten::addmm``). On CPU, inductor's generated C++ kernels are not profiler events
(unless ``torch._inductor.config.cpp.enable_kernel_profile``): their time is the self time of the
``## Call CompiledFxGraph ... ##`` range, classified ``other``.

numpy and the standard library only at import time; torch is imported inside :func:`profile_callable`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from enginekit.errors import HardwareUnavailableError, InvalidArgumentError

GEMM = "gemm"
CONV = "conv"
ATTENTION = "attention"
ELEMENTWISE = "normalization/elementwise"
COPY = "copy/layout"
OTHER = "other"
CATEGORIES: tuple[str, ...] = (GEMM, CONV, ATTENTION, ELEMENTWISE, COPY, OTHER)
# the categories whose time scales with the matrix throughput of the chip (what FlopCounterMode counts)
MATMUL_CATEGORIES: tuple[str, ...] = (GEMM, CONV, ATTENTION)

TOP_NAME_CHARS = 90  # kernel names in `top` are cut to this length (C++ template names run to kilobytes)

_ATEN_GEMMS = ("mm", "addmm", "bmm", "baddbmm", "addbmm", "addmv", "mv", "matmul", "linear", "_int_mm",
               "_scaled_mm", "_addmm_activation", "_weight_int8pack_mm", "_weight_int4pack_mm")
_ATEN_LAYOUT = ("copy_", "_to_copy", "to", "contiguous", "clone", "cat", "stack", "transpose", "permute", "t",
                "view", "reshape", "_unsafe_view", "as_strided", "expand", "slice", "narrow", "select",
                "squeeze", "unsqueeze", "flatten", "split", "chunk", "unbind", "channel_shuffle")
_ATEN_POINTWISE = ("add", "sub", "mul", "div", "neg", "exp", "log", "pow", "sqrt", "rsqrt", "abs", "relu",
                   "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "clamp", "clamp_min",
                   "clamp_max", "where", "masked_fill", "softmax", "_softmax", "log_softmax", "_log_softmax",
                   "mean", "sum", "amax", "max", "min", "var_mean", "erf", "threshold", "dropout",
                   "_transform_bias_rescale_qkv", "fill_", "zero_")


def _aten(ops: Iterable[str]) -> str:
    """A pattern matching exactly these aten ops (in place and out variants too)."""
    return r"^aten::(?:" + "|".join(re.escape(op) for op in ops) + r")_?$"


# (category, pattern), tried in this order, case-insensitive, first match wins (the module docstring says why
# the order is what it is). Patterns search anywhere in the name unless anchored.
RULES: tuple[tuple[str, str], ...] = (
    # 1. inductor's templates: matmul / convolution / attention kernels with fused epilogues
    (ATTENTION, r"^triton_tem_.*(?:attention|flex)"),
    (CONV, r"^triton_tem_.*conv"),
    (GEMM, r"^triton_tem_"),
    # 2. inductor's generated pointwise / reduction / persistent-reduction / foreach kernels, on GPU and CPU
    (ELEMENTWISE, r"^triton_(?:poi|red|per|for)_|^cpp_fused_"),
    # 3. CUTLASS 3.x kernels spell their whole template, whose copy atoms (cute::Copy_Atom, DefaultCopy) would read
    #    as copies: attention (flash / fmha), CUTLASS convolutions and GEMMs (FP8 row-wise _scaled_mm) first
    (ATTENTION, r"flash|fmha"),
    (CONV, r"cutlass::conv"),
    (GEMM, r"cutlass::gemm|gemmuniversal"),
    # 4. copies and layout changes (cuDNN's layout kernels, PyTorch's copy kernels, memcpy/memset, views)
    (COPY, r"memcpy|memset|nchwtonhwc|nhwctonchw|direct_copy|copy_kernel|catarraybatchedcopy|transpose_|"
           r"_transpose|permute"),
    (COPY, _aten(_ATEN_LAYOUT)),
    # 5. attention (flash, memory-efficient / fmha, cuDNN's fused SDPA, PyTorch's attention ops)
    (ATTENTION, r"flash|fmha|attention|sdpa|_scaled_dot_product|multi_head"),
    # 6. normalization and pooling (memory-bound), before cuDNN's namespace means "convolution"
    (ELEMENTWISE, r"bn_fw|bn_bw|batch_?norm|layer_?norm|group_?norm|instance_?norm|rms_?norm|pool"),
    # 7. convolutions: cuDNN, implicit-GEMM kernels (fprop / dgrad / wgrad), oneDNN, aten's convolution ops
    (CONV, r"conv(?!ert)|implicit_gemm|implicit_convolve|fprop|dgrad|wgrad|winograd|cudnn"),
    # 8. GEMMs: cuBLAS(Lt) (nvjet_ on Hopper with CUDA 12.8+), xmma / CUTLASS kernels, aten's matmul ops,
    #    oneDNN / MKL linears of inductor's CPU path
    (GEMM, r"gemm|gemv|xmma|cutlass|cublas|nvjet|splitkreduce|_linear_pointwise|mkl_linear|"
           r"qlinear|" + _aten(_ATEN_GEMMS)),
    # 9. the rest of the elementwise / reduction / normalization family
    (ELEMENTWISE, r"elementwise|reduce_kernel|reduction|softmax|norm|gelu|relu|silu|sigmoid|tanh|"
                  r"activation|dropout|pointwise"),
    (ELEMENTWISE, _aten(_ATEN_POINTWISE)),
)
_COMPILED = tuple((category, re.compile(pattern, re.IGNORECASE)) for category, pattern in RULES)


def classify(name: str) -> str:
    """The category (one of :data:`CATEGORIES`) of a CUDA kernel name or a profiler op name."""
    for category, pattern in _COMPILED:
        if pattern.search(name):
            return category
    return OTHER


@dataclass(frozen=True)
class CategoryTime:
    """One category of a breakdown, per profiled call."""

    ms: float  # time per call
    kernels: float  # kernel (or op) launches per call
    share: float  # of the breakdown's total (0 when the total is 0)


@dataclass(frozen=True)
class TopKernel:
    """One of the largest kernels (or ops) of a breakdown, all its launches in one call together."""

    name: str  # cut to TOP_NAME_CHARS
    ms: float  # time per call
    kernels: float  # launches per call
    category: str


@dataclass(frozen=True)
class KernelBreakdown:
    """Kernel time of one call by category (every one of :data:`CATEGORIES`, zeros included)."""

    device: str  # "cuda": device kernel time; "cpu": self CPU time of aten ops
    calls: int  # calls profiled (every figure here is per call)
    total_ms: float
    categories: dict[str, CategoryTime]
    top: tuple[TopKernel, ...]  # largest first

    def ms(self, *categories: str) -> float:
        """Time per call of these categories together."""
        return math.fsum(self.categories[c].ms for c in categories)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "calls": self.calls,
            "total_ms": self.total_ms,
            "categories": {name: asdict(c) for name, c in self.categories.items()},
            "top": [asdict(k) for k in self.top],
        }


def aggregate(
    entries: Iterable[tuple[str, float, int]], *, calls: int, device: str, top: int = 10
) -> KernelBreakdown:
    """A breakdown from ``(name, total microseconds, launches)`` over ``calls`` calls (names may repeat).

    The profiler's unit is the microsecond; the breakdown's is the millisecond per call.
    """
    if calls < 1:
        raise InvalidArgumentError(f"calls must be >= 1, not {calls}.")
    per_name: dict[str, tuple[float, int]] = {}
    for name, us, count in entries:
        t, n = per_name.get(name, (0.0, 0))
        per_name[name] = (t + us, n + count)
    us_by_cat = {c: 0.0 for c in CATEGORIES}
    count_by_cat = {c: 0 for c in CATEGORIES}
    ranked: list[tuple[float, str, int, str]] = []
    for name, (us, count) in per_name.items():
        category = classify(name)
        us_by_cat[category] += us
        count_by_cat[category] += count
        ranked.append((us, name, count, category))
    total_us = math.fsum(us_by_cat.values())
    categories = {
        c: CategoryTime(ms=us_by_cat[c] / 1e3 / calls, kernels=count_by_cat[c] / calls,
                        share=us_by_cat[c] / total_us if total_us > 0 else 0.0)
        for c in CATEGORIES
    }
    ranked.sort(key=lambda r: (-r[0], r[1]))
    largest = tuple(TopKernel(name=_cut(name), ms=us / 1e3 / calls, kernels=count / calls, category=category)
                    for us, name, count, category in ranked[:top])
    return KernelBreakdown(device=device, calls=calls, total_ms=total_us / 1e3 / calls, categories=categories,
                           top=largest)


def _cut(name: str) -> str:
    name = " ".join(name.split())
    return name if len(name) <= TOP_NAME_CHARS else name[: TOP_NAME_CHARS - 3] + "..."


# ranges the profiler or the Python layer records around the work, not work of their own
_NOT_WORK = re.compile(r"^ProfilerStep|^\[memory\]$|^\[OutOfMemory\]$|^nn\.Module: |\.py\(\d+\): |^<built-in ")


def profile_callable(
    fn: Callable[[], Any],
    *,
    calls: int,
    device: str,
    warmup: int = 3,
    sync: Callable[[], None] | None = None,
    top: int = 10,
) -> KernelBreakdown:
    """Run ``fn`` ``warmup`` times, then ``calls`` times under ``torch.profiler``, and break its time down.

    ``device="cuda"`` records CUDA activity too and counts the device-side events alone (kernels, memcpy,
    memset; user-annotation ranges on the GPU timeline are skipped, they span kernels already counted), by
    their device time. ``device="cpu"`` counts the self CPU time of every op (user annotations, async events
    and the profiler's own ranges skipped). ``sync`` waits for queued device work (default on CUDA:
    ``torch.cuda.synchronize``); it runs after the warm-up and, inside the profiled region, after the calls,
    so that every kernel of the profiled calls has finished and been recorded. On CUDA, a profile without a
    single device event (CUPTI unavailable) raises HardwareUnavailableError rather than report 0 ms.
    """
    if device not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"device must be 'cpu' or 'cuda', not {device!r}.")
    if calls < 1 or warmup < 0:
        raise InvalidArgumentError(f"need calls >= 1 and warmup >= 0, not calls={calls}, warmup={warmup}.")
    import torch
    from torch.profiler import ProfilerActivity, profile

    if device == "cuda" and not torch.cuda.is_available():
        raise HardwareUnavailableError("profile_callable(device='cuda'): torch sees no CUDA device here.")
    if sync is None and device == "cuda":
        sync = torch.cuda.synchronize
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if sync is not None:
            sync()
    events = prof.key_averages()
    entries = _device_entries(events) if device == "cuda" else _cpu_entries(events)
    if device == "cuda" and not entries:
        # an empty breakdown would read as "0 ms, nothing to gain": say why there is nothing instead
        raise HardwareUnavailableError("torch.profiler recorded no CUDA kernels: CUPTI could not start here, or "
                                       "the profiled call ran nothing on the GPU.")
    return aggregate(entries, calls=calls, device=device, top=top)


def _device_entries(events: Iterable[Any]) -> list[tuple[str, float, int]]:
    """(name, device µs, launches) of the CUDA-side events of ``key_averages()``.

    torch >= 2.4 names the time ``self_device_time_total``; older releases ``self_cuda_time_total`` (deprecated
    since, so it is read only when the new name is missing).
    """
    from torch.autograd import DeviceType  # type: ignore[attr-defined]  # re-exported from torch._C, untyped there

    out = []
    for e in events:
        if e.device_type != DeviceType.CUDA or getattr(e, "is_user_annotation", False):
            continue
        us: Any = getattr(e, "self_device_time_total", None)
        if us is None:
            us = getattr(e, "self_cuda_time_total", 0.0)
        out.append((str(e.key), float(us), int(e.count)))
    return out


def _cpu_entries(events: Iterable[Any]) -> list[tuple[str, float, int]]:
    """(name, self CPU µs, calls) of the CPU ops of ``key_averages()`` (self time: nested ops counted once)."""
    from torch.autograd import DeviceType  # type: ignore[attr-defined]

    out = []
    for e in events:
        name = str(e.key)
        if (e.device_type != DeviceType.CPU or e.is_async or getattr(e, "is_user_annotation", False)
                or _NOT_WORK.search(name)):
            continue
        out.append((name, float(e.self_cpu_time_total), int(e.count)))
    return out


def amdahl_bounds(
    b: KernelBreakdown, flops_per_call: float | None = None, peak_tflops: float | None = None
) -> dict[str, float | None]:
    """Upper bounds on the speed-up of the profiled call, by Amdahl's law over its kernel time.

    "Matmul" time is the ``gemm`` + ``conv`` + ``attention`` categories; "rest" is everything else.

    - ``matmul_share``: matmul time / total.
    - ``max_speedup_if_matmuls_free``: total / rest, what no matmul speed-up can beat (None when rest is 0).
    - ``max_speedup_if_matmuls_2x``: total / (rest + matmul / 2), what matmuls at twice the throughput (an 8-bit
      path: FP8 or INT8 tensor cores) could give at most, everything else unchanged.
    - with ``flops_per_call`` (matmul FLOPs of one call, e.g. torch's FlopCounterMode, which counts exactly
      matmuls, convolutions and attention) and ``peak_tflops`` (the measured dense GEMM throughput):
      ``matmul_tflops_achieved`` = flops / matmul time; ``matmul_at_peak_ms`` = flops / peak; and
      ``max_speedup_at_peak_matmuls`` = total / (rest + min(matmul, flops / peak)): every matmul at the peak
      (a matmul already faster than the "peak", when the measured peak understates it, is kept as it is, so
      that the bound never reads below 1). None when an input is missing or a divisor is 0.

    Assumptions: the kernels run one after another on one stream, so the call takes the sum of their times;
    overlap between kernels (several streams) and host gaps between them (launch overhead) are ignored, so
    the bounds are about kernel time, and a call that waits on the host can gain more by removing the gaps
    (CUDA graphs) than these bounds say. "Rest" is assumed unchanged by any matmul speed-up (a new engine could
    also fuse or remove some of it; that is what the categories of the rest show).
    """
    total = b.total_ms
    matmul = b.ms(*MATMUL_CATEGORIES)
    rest = max(total - matmul, 0.0)
    out: dict[str, float | None] = {
        "total_ms": total,
        "matmul_ms": matmul,
        "rest_ms": rest,
        "matmul_share": matmul / total if total > 0 else None,
        "max_speedup_if_matmuls_free": total / rest if rest > 0 else None,
        "max_speedup_if_matmuls_2x": total / (rest + matmul / 2) if total > 0 else None,
        "flops_per_call": flops_per_call,
        "peak_tflops": peak_tflops,
        "matmul_tflops_achieved": None,
        "matmul_at_peak_ms": None,
        "max_speedup_at_peak_matmuls": None,
    }
    if flops_per_call is not None and flops_per_call > 0 and matmul > 0:
        out["matmul_tflops_achieved"] = flops_per_call / (matmul / 1e3) / 1e12
    if flops_per_call is not None and peak_tflops is not None and flops_per_call > 0 and peak_tflops > 0:
        at_peak = flops_per_call / (peak_tflops * 1e12) * 1e3
        out["matmul_at_peak_ms"] = at_peak
        floor = rest + min(matmul, at_peak)
        out["max_speedup_at_peak_matmuls"] = total / floor if floor > 0 else None
    return out


def breakdown_table(b: KernelBreakdown, bounds: dict[str, float | None] | None = None) -> list[str]:
    """Markdown lines: one row per category (ms per call, share, kernels per call), then the bounds."""
    lines = ["| category | ms/call | share | kernels/call |", "|---|---:|---:|---:|"]
    for name, c in b.categories.items():
        lines.append(f"| {name} | {c.ms:.3f} | {c.share:.1%} | {c.kernels:.1f} |")
    lines.append(f"| **total** | **{b.total_ms:.3f}** | 100% | {sum(c.kernels for c in b.categories.values()):.1f} |")
    if bounds:
        lines.append("")
        lines.extend(f"- {key}: {_fmt(value)}" for key, value in bounds.items())
    return lines


def top_table(b: KernelBreakdown) -> list[str]:
    """Markdown lines: the largest kernels, largest first."""
    lines = ["| kernel | category | ms/call | share | launches/call |", "|---|---|---:|---:|---:|"]
    for k in b.top:
        share = k.ms / b.total_ms if b.total_ms > 0 else 0.0
        name = k.name.replace("|", "\\|")
        lines.append(f"| `{name}` | {k.category} | {k.ms:.3f} | {share:.1%} | {k.kernels:.1f} |")
    return lines


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.3f}"
