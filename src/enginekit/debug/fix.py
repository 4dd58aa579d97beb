"""Fix search of the precision debugger: the smallest set of FP32 islands that makes a low-precision model pass.

:func:`find_fp32_islands` converts the model with :func:`enginekit.graph.precision.convert_precision` under
candidate plans, runs every candidate with onnx's ReferenceEvaluator (see :func:`run_onnx`) on the feeds and
compares its final outputs with the FP32 model's (scale-aware tolerances of
:func:`enginekit.pipeline.settings_for_precision`, and no NaN/Inf), or asks a user ``check`` instead
(Polygraphy's ``--check``). The search:

1. all nodes in the low precision passes -> empty plan;
2. the ``initial`` nodes (range analysis) kept in FP32; if that fails, bisection over the topological order
   (Polygraphy's ``debug precision`` bisect) finds the end, then the start, of a region that makes it pass;
3. greedy shrink (halves, quarters, ... single nodes; least risky first): drop every node the plan can lose.

A naive baseline (everything from the first bad layer to the end in FP32) is measured for comparison.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from enginekit.compare import CompareResult, CompareSettings, compare_arrays, compare_outputs, json_safe
from enginekit.errors import InvalidArgumentError
from enginekit.graph.precision import PlanEntry, PrecisionPlan, convert_precision

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


@dataclass(frozen=True)
class Evaluation:
    """One candidate plan's verdict: per-feed comparisons, NaN/Inf count of its outputs, or why it failed."""

    keep: frozenset[str]
    passed: bool
    comparisons: tuple[CompareResult, ...] = ()
    nonfinite: int = 0
    error: str = ""

    @property
    def max_abs_err(self) -> float | None:
        errs = [o.max_abs_err for c in self.comparisons for o in c.outputs]
        return max(errs) if errs else None

    def summary(self) -> dict[str, Any]:
        doc: dict[str, Any] = json_safe({"passed": self.passed, "fp32_nodes": len(self.keep),
                                         "max_abs_err": self.max_abs_err, "nonfinite": self.nonfinite,
                                         "error": self.error})
        return doc

    def to_dict(self) -> dict[str, Any]:
        doc = self.summary()
        doc["feeds"] = [c.to_dict() for c in self.comparisons]
        return doc


@dataclass(frozen=True)
class FixResult:
    """The plan found, the fixed model, and the numbers that show what it costs and what it saves."""

    plan: PrecisionPlan
    model: onnx.ModelProto  # the input model converted with ``plan`` (float32 inputs/outputs kept)
    passed: bool
    before: Evaluation  # every node in the low precision
    after: Evaluation  # with the plan
    evaluations: int
    total_nodes: int  # nodes with float compute that the plan could keep
    fp32_flops_fraction: float
    baseline_first_bad: str | None  # first node (topological order) with NaN/Inf or a failing error
    baseline_nodes: int | None  # nodes from the first bad node to the end (the naive plan)
    message: str = ""
    unnamed_nodes: int = 0
    trace: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return len(self.plan.keep_fp32)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = json_safe({
            "passed": self.passed, "message": self.message, "precision": self.plan.precision,
            "plan": self.plan.to_dict(), "kept": self.kept, "total_nodes": self.total_nodes,
            "evaluations": self.evaluations, "fp32_flops_fraction": self.fp32_flops_fraction,
            "baseline": {"first_bad_node": self.baseline_first_bad, "nodes": self.baseline_nodes},
            "before": self.before.to_dict(), "after": self.after.to_dict(), "unnamed_nodes": self.unnamed_nodes,
            "trace": self.trace,
        })
        return doc


# --- running ------------------------------------------------------------------------------------


def run_onnx(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], precision: str = "fp32") -> Feed:
    """Outputs of ``model`` on ``feed``: onnxruntime CPU for fp32; onnx's ReferenceEvaluator for fp16/bf16.

    onnxruntime CPU is no fp16 emulator: it runs fp16 nodes without CPU kernels in float32 and removes the
    Cast pairs between them, so an fp16 overflow between two such nodes never happens there. The reference
    evaluator computes each node in numpy in the tensor's own type (fp16, or bf16 through ml_dtypes), so every
    value is rounded to the low type as a strongly typed engine stores it.
    """
    if precision in ("fp16", "bf16"):
        from onnx.reference import ReferenceEvaluator

        from enginekit.backends.onnx_reference import inference_batchnorm_ops

        with np.errstate(all="ignore"):
            # the same BatchNormalization fix as the onnx-reference backend (opsets 9-13 are inference-only)
            sess = ReferenceEvaluator(model, new_ops=inference_batchnorm_ops(model) or None)
            names = [o.name for o in model.graph.output]
            values = sess.run(names, dict(feed))
        return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}
    from enginekit.deps import require

    ort = require("onnxruntime", purpose="to run the FP32 reference")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    ort_sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in ort_sess.get_outputs()]
    outs = ort_sess.run(out_names, dict(feed))
    return {n: np.asarray(v) for n, v in zip(out_names, outs, strict=True)}


def command_check(command: str, *, timeout: float = 600.0) -> Callable[[onnx.ModelProto], bool]:
    """A ``check`` that writes the candidate to a temp file and runs ``command`` (exit 0 = good).

    The path is in the environment as ``$MODEL`` and replaces ``{model}`` in the command (shell-quoted).
    """
    if not command.strip():
        raise InvalidArgumentError("--check needs a command, e.g. --check \"python my_check.py $MODEL\".")

    def check(model: onnx.ModelProto) -> bool:
        with tempfile.TemporaryDirectory(prefix="enginekit-check-") as tmp:
            path = Path(tmp) / "candidate.onnx"
            path.write_bytes(model.SerializeToString())
            cmd = command.replace("{model}", shlex.quote(str(path)))
            try:
                proc = subprocess.run(["/bin/sh", "-c", cmd], env={**os.environ, "MODEL": str(path)},
                                      capture_output=True, text=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                log.info("check command timed out after %.0fs", timeout)
                return False
            log.debug("check exit %d: %s", proc.returncode, proc.stderr[-500:])
            return proc.returncode == 0

    return check


# --- graph facts --------------------------------------------------------------------------------


def _with_feed_shapes(model: onnx.ModelProto, feed: Mapping[str, np.ndarray] | None) -> onnx.ModelProto:
    from enginekit.graph.passes import infer_shapes

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if feed and vi.name in feed and vi.type.HasField("tensor_type"):
            shape = vi.type.tensor_type.shape
            shape.ClearField("dim")
            for d in np.asarray(feed[vi.name]).shape:
                shape.dim.add().dim_value = int(d)
    try:
        return infer_shapes(m, strict=False)
    except Exception as exc:  # noqa: BLE001 - FLOPs and types then come from what the model declares
        log.warning("shape inference failed (%s); FLOP estimates may be rough", exc)
        return m


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    g = model.graph
    infos = {vi.name: vi.type for vi in (*g.value_info, *g.input, *g.output)}
    for t in g.initializer:
        tp = onnx.TypeProto()
        tp.tensor_type.elem_type = t.data_type
        for d in t.dims:
            tp.tensor_type.shape.dim.add().dim_value = d
        infos[t.name] = tp
    return infos


def _elem(tp: onnx.TypeProto | None) -> int:
    return tp.tensor_type.elem_type if tp is not None and tp.HasField("tensor_type") else 0


def _dims(tp: onnx.TypeProto | None) -> list[int] | None:
    if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tp.tensor_type.shape.dim]
    return None if any(d < 0 for d in dims) else dims


def _flops(node: onnx.NodeProto, infos: Mapping[str, onnx.TypeProto]) -> float:
    """2*M*N*K for MatMul/Gemm, 2*out*(Cin/group*kernel) for Conv, else the output elements."""
    out = _dims(infos.get(node.output[0])) if node.output else None
    out_elems = float(np.prod(out)) if out is not None else 1.0
    ins = [_dims(infos.get(v)) if v else None for v in node.input]
    if node.op_type in ("MatMul", "Gemm") and ins and ins[0]:
        a = ins[0]
        trans_a = any(at.name == "transA" and at.i for at in node.attribute)
        k = a[0] if node.op_type == "Gemm" and trans_a and len(a) == 2 else a[-1]
        return 2.0 * out_elems * k
    if node.op_type == "Conv" and len(ins) > 1 and ins[1]:
        return 2.0 * out_elems * float(np.prod(ins[1][1:]))
    return out_elems


@dataclass(frozen=True)
class _Graph:
    order: list[str]  # named nodes with float compute, topological order
    flops: dict[str, float]
    total_flops: float
    unnamed: int


def _graph_facts(model: onnx.ModelProto, feed: Mapping[str, np.ndarray] | None) -> _Graph:
    inferred = _with_feed_shapes(model, feed)
    infos = _value_infos(inferred)
    order: list[str] = []
    flops: dict[str, float] = {}
    unnamed = 0
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            continue
        floats = any(_elem(infos.get(v)) in _FLOAT_TYPES for v in (*node.input, *node.output) if v)
        if not floats:
            continue
        if not node.name:
            unnamed += 1
            continue
        if node.name not in flops:
            order.append(node.name)
            flops[node.name] = _flops(node, infos)
    return _Graph(order, flops, sum(flops.values()) or 1.0, unnamed)


# --- baseline -----------------------------------------------------------------------------------


def _with_all_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    infos = _value_infos(_with_feed_shapes(m, None))
    present = {o.name for o in m.graph.output}
    for name in names:
        elem = _elem(infos.get(name))
        if name not in present and elem:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
            present.add(name)
    return m


def first_bad_node(model: onnx.ModelProto, converted: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]],
                   precision: str, order: Sequence[str], compare: CompareSettings | None) -> str | None:
    """The first node (topological order) whose low-precision output has NaN/Inf the FP32 one lacks, or fails
    the scale-aware comparison; None when no node output can be told apart."""
    from enginekit.pipeline import settings_for_precision

    wanted = set(order)
    node_outputs: list[tuple[str, list[str]]] = [(str(n.name), [str(v) for v in n.output if v])
                                                 for n in model.graph.node if n.name in wanted]
    values = [v for _, outs in node_outputs for v in outs]
    try:
        ref_model, low_model = _with_all_outputs(model, values), _with_all_outputs(converted, values)
        refs = [run_onnx(ref_model, f) for f in feeds]
        lows = [run_onnx(low_model, f, precision) for f in feeds]
    except Exception as exc:  # noqa: BLE001 - the baseline is informative only
        log.info("baseline (first bad layer) not measured: %s", exc)
        return None
    base = compare or CompareSettings()
    for name, outs in node_outputs:
        for v in outs:
            for ref, low in zip(refs, lows, strict=True):
                if v not in ref or v not in low:
                    continue
                r, c = ref[v], low[v]
                if not np.issubdtype(r.dtype, np.floating):
                    continue
                c32 = c.astype(np.float32)
                if int((~np.isfinite(c32)).sum()) > int((~np.isfinite(r)).sum()):
                    return name
                settings = settings_for_precision(replace(base, atol=replace(base.atol, per_output=()),
                                                          rtol=replace(base.rtol, per_output=())),
                                                  precision, {v: r})
                if r.shape == c32.shape and not compare_arrays(v, r, c32, settings).passed:
                    return name
    return None


# --- search -------------------------------------------------------------------------------------


def range_analysis_initial(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]],
                           precision: str) -> list[tuple[str, str]]:
    """Ranked (node, reason), most risky first, from :func:`enginekit.debug.ranges.analyze_ranges` on every
    feed; [] when range analysis is unavailable or fails (the search then starts from bisection)."""
    try:
        from enginekit.debug.ranges import analyze_ranges
    except ImportError:
        return []
    best: dict[str, tuple[float, str]] = {}
    for feed in feeds:
        try:
            report = analyze_ranges(model, feed, precision=precision)
        except Exception as exc:  # noqa: BLE001 - range analysis is a hint; the search works without it
            log.warning("range analysis failed (%s); searching without it", exc)
            return []
        for r in report.risky:
            if r.node not in best or best[r.node][0] < r.score:
                best[r.node] = (r.score, r.reason)
    return [(n, reason) for n, (_, reason) in sorted(best.items(), key=lambda kv: -kv[1][0])]


class _Search:
    def __init__(self, model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], precision: str,
                 compare: CompareSettings | None, check: Callable[[onnx.ModelProto], bool] | None,
                 max_evaluations: int) -> None:
        from enginekit.pipeline import settings_for_precision

        self.model, self.feeds, self.precision, self.check = model, feeds, precision, check
        self.max_evaluations = max_evaluations
        self.cache: dict[frozenset[str], Evaluation] = {}
        self.trace: list[dict[str, Any]] = []
        self.refs: list[Feed] = []
        self.settings: list[CompareSettings] = []
        self.refs = [run_onnx(model, f) for f in feeds]
        self.settings = [settings_for_precision(compare or CompareSettings(), precision, r) for r in self.refs]

    @property
    def count(self) -> int:
        return len(self.cache)

    @property
    def exhausted(self) -> bool:
        return self.count >= self.max_evaluations

    def plan(self, keep: frozenset[str] | set[str], entries: Mapping[str, PlanEntry] | None = None) -> PrecisionPlan:
        return PrecisionPlan(self.precision, tuple((entries or {}).get(n, PlanEntry(n)) for n in sorted(keep)),
                             source="enginekit debug precision")

    def measure(self, keep: frozenset[str], converted: onnx.ModelProto) -> Evaluation:
        comparisons: list[CompareResult] = []
        nonfinite = 0
        for feed, ref, settings in zip(self.feeds, self.refs, self.settings, strict=True):
            cand = run_onnx(converted, feed, self.precision)
            nonfinite += sum(int((~np.isfinite(v)).sum()) for v in cand.values()
                             if np.issubdtype(v.dtype, np.floating))
            comparisons.append(compare_outputs(ref, cand, settings, check_names=False))
        ok = nonfinite == 0 and all(c.passed for c in comparisons)
        return Evaluation(keep, ok, tuple(comparisons), nonfinite)

    def evaluate(self, keep: set[str] | frozenset[str], step: str) -> Evaluation:
        key = frozenset(keep)
        if key in self.cache:
            return self.cache[key]
        if self.exhausted:
            return Evaluation(key, False, error="evaluation budget exhausted (not run)")
        try:
            converted = convert_precision(self.model, self.precision, self.plan(key)).model
            if self.check is not None:
                ok = self.check(converted)
                result = Evaluation(key, ok, error="" if ok else "check command failed")
            else:
                result = self.measure(key, converted)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot convert or run fails
            result = Evaluation(key, False, error=f"{type(exc).__name__}: {exc}"[:300])
        self.cache[key] = result
        self.trace.append({"step": step, "fp32_nodes": len(key), **{k: v for k, v in result.summary().items()
                                                                      if k in ("passed", "max_abs_err", "nonfinite")}})
        log.info("evaluation %d (%s): %d FP32 nodes -> %s", self.count, step, len(key),
                 "pass" if result.passed else "fail")
        return result

    def report_evaluation(self, keep: frozenset[str], converted: onnx.ModelProto) -> Evaluation:
        """Before/after numbers: the cached evaluation, or a measured one when a check command judged it."""
        ev = self.cache.get(keep)
        if ev is not None and self.check is None:
            return ev
        try:
            measured = self.measure(keep, converted)
        except Exception as exc:  # noqa: BLE001 - report only
            return Evaluation(keep, ev.passed if ev else False, error=f"{type(exc).__name__}: {exc}"[:300])
        return replace(measured, passed=ev.passed if ev else measured.passed)

    def bisect_region(self, base: set[str], order: Sequence[str]) -> list[str] | None:
        """Smallest end, then largest start, such that base + order[start:end] passes (assumed monotonic)."""
        rest = [n for n in order if n not in base]
        if not self.evaluate(base | set(rest), "bisection: all FP32").passed:
            return None
        lo, hi = 0, len(rest)  # base + rest[:hi] passes
        while lo < hi and not self.exhausted:
            mid = (lo + hi) // 2
            if self.evaluate(base | set(rest[:mid]), f"bisection: end {mid}/{len(rest)}").passed:
                hi = mid
            else:
                lo = mid + 1
        end = hi
        lo, hi = 0, end  # base + rest[lo:end] passes
        while lo < hi and not self.exhausted:
            mid = (lo + hi + 1) // 2
            if self.evaluate(base | set(rest[mid:end]), f"bisection: start {mid}/{end}").passed:
                lo = mid
            else:
                hi = mid - 1
        region = rest[lo:end]
        if self.evaluate(base | set(region), "bisection: region").passed:
            return region
        return rest[:end] if self.evaluate(base | set(rest[:end]), "bisection: prefix").passed else rest

    def shrink(self, keep: list[str]) -> tuple[list[str], dict[str, Evaluation]]:
        """Drop chunks (halves ... single nodes), least risky first, while the plan still passes."""
        needed: dict[str, Evaluation] = {}
        current = list(keep)
        size = max(1, len(current) // 2)
        while current and not self.exhausted:
            i = 0
            while i < len(current) and not self.exhausted:
                chunk = current[i:i + size]
                trial = set(current) - set(chunk)
                ev = self.evaluate(trial, f"shrink: drop {len(chunk)}")
                if ev.passed:
                    current = [n for n in current if n not in chunk]
                else:
                    if size == 1:
                        needed[chunk[0]] = ev
                    i += size
            if size == 1:
                break
            size = max(1, size // 2)
        return current, needed


def find_fp32_islands(
    model: onnx.ModelProto,
    feeds: list[dict[str, np.ndarray]],
    precision: str,
    *,
    initial: Sequence[str] = (),
    initial_reasons: Mapping[str, str] | None = None,
    compare: CompareSettings | None = None,
    check: Callable[[onnx.ModelProto], bool] | None = None,
    max_evaluations: int = 200,
) -> FixResult:
    """Search the FP32 islands that make ``model`` pass in ``precision`` (see the module doc).

    ``initial``: ranked risky node names (most risky first), e.g. from range analysis; ``initial_reasons``
    their reasons. ``check`` replaces the output comparison (True = good). Raises InvalidArgumentError for
    bad arguments.
    """
    if not feeds:
        raise InvalidArgumentError("find_fp32_islands needs at least one feed.")
    if max_evaluations < 2:
        raise InvalidArgumentError(f"max_evaluations must be >= 2, got {max_evaluations}.")
    facts = _graph_facts(model, feeds[0])
    known = set(facts.order)
    unknown = [n for n in initial if n not in known]
    if unknown:
        log.info("initial nodes without float compute or not in the model, ignored: %s", unknown[:10])
    reasons = dict(initial_reasons or {})
    ranked = [n for n in dict.fromkeys(initial) if n in known]
    search = _Search(model, feeds, precision, compare, check, max_evaluations)

    before = search.evaluate(frozenset(), "all low precision")
    keep: list[str] = []
    origin: dict[str, str] = {}
    needed: dict[str, Evaluation] = {}
    ok = before.passed
    if not ok:
        keep = list(ranked)
        origin = {n: f"range analysis: {reasons.get(n) or 'risky range'}" for n in keep}
        ok = bool(keep) and search.evaluate(set(keep), "range analysis nodes").passed
        if not ok and not search.exhausted:
            region = search.bisect_region(set(keep), facts.order)
            if region is not None:
                keep += region
                origin.update({n: "bisection" for n in region if n not in origin})
                ok = search.evaluate(set(keep), "grown").passed
        if ok:
            rank = {n: i for i, n in enumerate(ranked)}
            # least risky first: bisection nodes (latest first), then range-analysis nodes (least ranked first)
            by_risk = sorted(keep, key=lambda n: (n in rank, -rank.get(n, 0), -facts.order.index(n)))
            kept, needed = search.shrink(by_risk)
            keep = [n for n in facts.order if n in set(kept)]
    final = frozenset(keep) if ok else frozenset()
    entries = {}
    for n in final:
        ev = needed.get(n)
        reason = origin.get(n, "")
        evidence: dict[str, Any] = {"max_abs_err_after": search.cache[final].max_abs_err if final in search.cache
                                    else None}
        if ev is not None:
            reason = f"{reason}; needed after shrink"
            evidence.update({"max_abs_err_without": ev.max_abs_err, "nonfinite_without": ev.nonfinite,
                             "error_without": ev.error})
        evidence["max_abs_err_all_low"] = before.max_abs_err
        evidence["fp32_flops"] = facts.flops.get(n, 0.0)
        entries[n] = PlanEntry(n, reason, json_safe(evidence))
    plan = PrecisionPlan(precision, tuple(entries[n] for n in facts.order if n in final),
                         source="enginekit debug precision")
    fixed = convert_precision(model, precision, plan).model
    before_report = search.report_evaluation(frozenset(), convert_precision(model, precision).model)
    after_report = search.report_evaluation(final, fixed) if ok else before_report
    baseline_node: str | None = None
    baseline_count: int | None = None
    if not before.passed and check is None:
        all_low = convert_precision(model, precision).model
        baseline_node = first_bad_node(model, all_low, feeds, precision, facts.order, compare)
        if baseline_node is not None:
            baseline_count = len(facts.order) - facts.order.index(baseline_node)
    frac = sum(facts.flops.get(n, 0.0) for n in final) / facts.total_flops
    if before.passed:
        message = f"The model already passes in {precision}: no FP32 islands needed."
    elif ok:
        vs = f" vs {baseline_count} for everything after the first bad layer" if baseline_count is not None else ""
        message = (f"{len(final)} of {len(facts.order)} nodes kept in FP32{vs} ({frac:.1%} of FLOPs), "
                   f"found in {search.count} evaluations.")
    else:
        why = "the evaluation budget ran out" if search.exhausted else "even all-FP32 islands do not pass"
        message = f"No plan passes within {search.count} evaluations ({why})."
    return FixResult(plan, fixed, ok, before_report, after_report, search.count, len(facts.order), frac,
                     baseline_node, baseline_count, message, facts.unnamed, search.trace)
