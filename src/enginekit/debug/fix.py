"""Fix search of the precision debugger: the smallest set of FP32 islands that makes a low-precision model pass.

:func:`find_fp32_islands` makes a candidate model for each plan (:mod:`enginekit.debug.candidates`: fp16/bf16
conversion with the plan's nodes in FP32, or INT8 Q/DQ with the plan's nodes left out of quantization), runs
it on the feeds with the chosen backend (:mod:`enginekit.debug.execute`: onnx's reference evaluator by default
for fp16/bf16, onnxruntime for int8) and compares its final outputs with the reference's (FP32, or float64;
scale-aware tolerances of :func:`enginekit.compare.settings_for_precision`, and no NaN/Inf), or asks a user
``check`` instead (Polygraphy's ``--check``). The search:

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

from enginekit.compare import CompareResult, CompareSettings, compare_outputs, json_safe
from enginekit.compare.reference_quality import weak_reference_reasons
from enginekit.debug.candidates import (
    Candidates,
    FloatCandidates,
    GraphFacts,
    Int8Candidates,
    first_bad_node,
    graph_facts,
    run_onnx,
)
from enginekit.debug.execute import Executor, Reference, check_backend, default_backend, describe, make_reference
from enginekit.errors import InvalidArgumentError
from enginekit.graph.precision import PLAN_PRECISIONS, PlanEntry, PrecisionPlan

log = logging.getLogger(__name__)

__all__ = ["Evaluation", "FixResult", "command_check", "find_fp32_islands", "range_analysis_initial", "run_onnx"]


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
    model: onnx.ModelProto  # the input model converted (fp16/bf16) or quantized (int8) with ``plan``; IO kept
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
    runs: dict[str, Any] = field(default_factory=dict)  # how candidates and the reference ran
    all_low_model: onnx.ModelProto | None = None  # every node in the low precision (the layerwise diff's)
    weak_reference: tuple[str, ...] = ()  # reference outputs near-constant/saturated: a pass proves little

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
            "trace": self.trace, "runs": self.runs, "weak_reference": list(self.weak_reference),
        })
        return doc


# --- checks ------------------------------------------------------------------------------------


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


# --- search -------------------------------------------------------------------------------------


def range_analysis_initial(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]],
                           precision: str, reference: Reference | None = None) -> list[tuple[str, str]]:
    """Ranked (node, reason), most risky first, from :func:`enginekit.debug.ranges.analyze_ranges` on every
    feed (observed with ``reference``, FP32 onnxruntime by default); [] when range analysis is unavailable or
    fails (the search then starts from bisection)."""
    try:
        from enginekit.debug.ranges import analyze_ranges
    except ImportError:
        return []
    best: dict[str, tuple[float, str]] = {}
    for feed in feeds:
        try:
            report = analyze_ranges(model, feed, precision=precision, reference=reference)
        except Exception as exc:  # noqa: BLE001 - range analysis is a hint; the search works without it
            log.warning("range analysis failed (%s); searching without it", exc)
            return []
        for r in report.risky:
            if r.node not in best or best[r.node][0] < r.score:
                best[r.node] = (r.score, r.reason)
    return [(n, reason) for n, (_, reason) in sorted(best.items(), key=lambda kv: -kv[1][0])]


class _Search:
    def __init__(self, candidates: Candidates, executor: Executor, reference: Reference,
                 feeds: Sequence[Mapping[str, np.ndarray]], compare: CompareSettings | None,
                 check: Callable[[onnx.ModelProto], bool] | None, max_evaluations: int) -> None:
        from enginekit.compare.per_precision import settings_for_precision

        self.candidates, self.executor, self.reference = candidates, executor, reference
        self.feeds, self.precision, self.check = feeds, candidates.precision, check
        self.max_evaluations = max_evaluations
        self.cache: dict[frozenset[str], Evaluation] = {}
        self.models: dict[frozenset[str], onnx.ModelProto] = {}
        self.trace: list[dict[str, Any]] = []
        self.refs = [reference.run(f) for f in feeds]
        self.settings = [settings_for_precision(compare or CompareSettings(), self.precision, r) for r in self.refs]

    @property
    def count(self) -> int:
        return len(self.cache)

    @property
    def exhausted(self) -> bool:
        return self.count >= self.max_evaluations

    def plan(self, keep: frozenset[str] | set[str], entries: Mapping[str, PlanEntry] | None = None) -> PrecisionPlan:
        return PrecisionPlan(self.precision, tuple((entries or {}).get(n, PlanEntry(n)) for n in sorted(keep)),
                             source="enginekit debug precision")

    def make(self, keep: frozenset[str]) -> onnx.ModelProto:
        """The candidate model of a plan (the latest few kept: the report re-uses before/after)."""
        if keep not in self.models:
            if len(self.models) > 4:
                self.models.pop(next(iter(self.models)))
            self.models[keep] = self.candidates.make(self.plan(keep) if keep else None)
        return self.models[keep]

    def measure(self, keep: frozenset[str], converted: onnx.ModelProto) -> Evaluation:
        comparisons: list[CompareResult] = []
        nonfinite = 0
        for feed, ref, settings in zip(self.feeds, self.refs, self.settings, strict=True):
            cand = self.executor.run(converted, feed)
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
            converted = self.make(key)
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
    backend: str | None = None,
    reference: str | Reference = "fp32",
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    calib_method: str = "minmax",
) -> FixResult:
    """Search the FP32 islands that make ``model`` pass in ``precision`` (fp16, bf16 or int8; module doc).

    ``initial``: ranked risky node names (most risky first), e.g. from range analysis; ``initial_reasons``
    their reasons. ``check`` replaces the output comparison (True = good). ``backend`` runs the candidates
    (``onnx-reference`` or ``ort``; default per precision, see :func:`enginekit.debug.execute.default_backend`);
    ``reference``: "fp32" (onnxruntime) or "fp64" (float64 in the reference evaluator). int8: ``calibration``
    feeds (default: ``feeds``) and ``calib_method`` calibrate the quantizer once. Raises InvalidArgumentError
    for bad arguments.
    """
    if precision not in PLAN_PRECISIONS:
        raise InvalidArgumentError(f"precision {precision!r} is not one of {', '.join(PLAN_PRECISIONS)}.")
    if not feeds:
        raise InvalidArgumentError("find_fp32_islands needs at least one feed.")
    if max_evaluations < 2:
        raise InvalidArgumentError(f"max_evaluations must be >= 2, got {max_evaluations}.")
    executor = Executor(check_backend(backend or default_backend(precision)))
    ref = reference if isinstance(reference, Reference) else make_reference(model, reference)
    candidates: Candidates = (Int8Candidates(model, calibration or feeds, calib_method) if precision == "int8"
                              else FloatCandidates(model, precision))
    try:
        return _find(model, feeds, candidates, executor, ref, initial, initial_reasons, compare, check,
                     max_evaluations)
    finally:
        candidates.close()


def _find(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], candidates: Candidates, executor: Executor,
          ref: Reference, initial: Sequence[str], initial_reasons: Mapping[str, str] | None,
          compare: CompareSettings | None, check: Callable[[onnx.ModelProto], bool] | None,
          max_evaluations: int) -> FixResult:
    precision = candidates.precision
    facts = graph_facts(model, feeds[0], candidates.op_types)
    known = set(facts.order)
    unknown = [n for n in initial if n not in known]
    if unknown:
        log.info("initial nodes a plan cannot keep (no float compute, not quantizable, or not in the model), "
                 "ignored: %s", unknown[:10])
    reasons = dict(initial_reasons or {})
    ranked = [n for n in dict.fromkeys(initial) if n in known]
    search = _Search(candidates, executor, ref, feeds, compare, check, max_evaluations)

    before = search.evaluate(frozenset(), f"all {precision}")
    keep: list[str] = []
    origin: dict[str, str] = {}
    needed: dict[str, Evaluation] = {}
    ok = before.passed
    if not ok:
        origin = {n: f"range analysis: {reasons.get(n) or 'risky range'}" for n in ranked}
        ranges_pass = bool(ranked) and search.evaluate(set(ranked), "range analysis nodes").passed
        ok, keep, needed = _grow_and_shrink(search, facts, ranked, origin, ranges_pass)
        if not ranges_pass and ranked and not search.exhausted:
            # the hints alone did not pass: they may be noise (many mildly risky nodes), so bisection alone
            # competes, and the smaller plan (then fewer FP32 FLOPs) wins
            alt_origin: dict[str, str] = {}
            alt_ok, alt_keep, alt_needed = _grow_and_shrink(search, facts, [], alt_origin, False)
            if alt_ok and (not ok or _cost(facts, alt_keep) < _cost(facts, keep)):
                # a node range analysis flagged keeps that reason even when bisection found it
                origin = {n: origin.get(n, alt_origin.get(n, "bisection")) for n in alt_keep}
                ok, keep, needed = alt_ok, alt_keep, alt_needed
    final = frozenset(keep) if ok else frozenset()
    plan = _final_plan(search, facts, final, origin, needed, before)
    fixed = search.make(final)
    before_report = search.report_evaluation(frozenset(), search.make(frozenset()))
    after_report = search.report_evaluation(final, fixed) if ok else before_report
    baseline_node: str | None = None
    baseline_count: int | None = None
    if not before.passed and check is None:
        all_low = search.make(frozenset())
        named = [n.name for n in model.graph.node if n.name]
        baseline_node = first_bad_node(model, ref, all_low, executor, feeds, precision, named, compare)
        if baseline_node is not None:
            baseline_count = facts.after(baseline_node)
    frac = sum(facts.flops.get(n, 0.0) for n in final) / facts.total_flops
    what = "left out of INT8 quantization" if precision == "int8" else "kept in FP32"
    if before.passed:
        message = f"The model already passes in {precision}: no FP32 islands needed."
    elif ok:
        vs = f" vs {baseline_count} for everything after the first bad layer" if baseline_count is not None else ""
        message = (f"{len(final)} of {len(facts.order)} nodes {what}{vs} ({frac:.1%} of FLOPs), "
                   f"found in {search.count} evaluations.")
    else:
        why = "the evaluation budget ran out" if search.exhausted else "even all-FP32 islands do not pass"
        message = f"No plan passes within {search.count} evaluations ({why})."
    runs = {"candidates": describe(executor), "reference": describe(ref)}
    if isinstance(candidates, Int8Candidates):
        runs["quantization"] = dict(candidates.info)
    weak = tuple(dict.fromkeys(r for ref_out, st in zip(search.refs, search.settings, strict=True)
                               for r in weak_reference_reasons(ref_out, st)))
    if weak:
        log.warning("the reference is degenerate on these feeds, so this verdict proves little: %s", "; ".join(weak))
    return FixResult(plan, fixed, ok, before_report, after_report, search.count, len(facts.order), frac,
                     baseline_node, baseline_count, message, facts.unnamed, search.trace, runs,
                     search.make(frozenset()), weak)


def _cost(facts: GraphFacts, nodes: Sequence[str]) -> tuple[int, float]:
    return len(nodes), sum(facts.flops.get(n, 0.0) for n in nodes)


def _grow_and_shrink(search: _Search, facts: GraphFacts, ranked: list[str], origin: dict[str, str],
                     ranked_pass: bool) -> tuple[bool, list[str], dict[str, Evaluation]]:
    """From the ``ranked`` hints (which pass alone when ``ranked_pass``), bisect a region that passes when
    needed, then shrink; (passed, plan nodes in topological order, evaluations of nodes found needed)."""
    keep = list(ranked)
    ok = ranked_pass
    if not ok and not search.exhausted:
        region = search.bisect_region(set(keep), facts.order)
        if region is not None:
            keep += region
            origin.update({n: "bisection" for n in region if n not in origin})
            ok = search.evaluate(set(keep), "grown").passed
    if not ok:
        return False, [], {}
    rank = {n: i for i, n in enumerate(ranked)}
    # least risky first: bisection nodes (latest first), then range-analysis nodes (least ranked first)
    by_risk = sorted(keep, key=lambda n: (n in rank, -rank.get(n, 0), -facts.order.index(n)))
    kept, needed = search.shrink(by_risk)
    return True, [n for n in facts.order if n in set(kept)], needed


def _final_plan(search: _Search, facts: GraphFacts, final: frozenset[str], origin: Mapping[str, str],
                needed: Mapping[str, Evaluation], before: Evaluation) -> PrecisionPlan:
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
    return PrecisionPlan(search.precision, tuple(entries[n] for n in facts.order if n in final),
                         source="enginekit debug precision")
