"""Per-output comparison of a candidate's outputs against a reference's (pure numpy).

Semantics follow Polygraphy: errors are relative to the reference, an element fails when
``abs_err > atol and rel_err > rtol``; with ``check_error_stat`` ``max``/``mean``/``median`` the
output fails when ``stat(abs_err) > atol and stat(rel_err) > rtol``. On top of that:

* A NaN on either side fails, whatever the tolerances, as in Polygraphy (where NaN - NaN is NaN);
  with ``CompareSettings.equal_nan`` a NaN on both sides at the same index counts as equal.
* An Inf that the other side does not match fails; same-signed Inf on both sides counts as equal
  (Polygraphy's ``--infinities-compare-equal``).
* Statistics are taken over elements that are finite on both sides.
* Shapes are never broadcast; a dtype mismatch fails but the numbers are still reported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from enginekit.compare.result import CompareResult, OutputComparison
from enginekit.compare.tolerances import CompareSettings, validate_tolerance_names

logger = logging.getLogger(__name__)

_FloatArray = npt.NDArray[np.float64]
_NOT_COMPUTED = math.nan
# ml_dtypes types (bfloat16, float8_*, int4, ...) have kind "V" but convert to float64 fine.
_EXTENDED_NUMERIC_PREFIXES = ("bfloat", "float", "int", "uint")


@dataclass(frozen=True)
class _Stats:
    max: float = 0.0
    mean: float = 0.0
    median: float = 0.0
    p99: float = 0.0

    def get(self, stat: str) -> float:
        value: float = getattr(self, stat)
        return value


_NAN_STATS = _Stats(_NOT_COMPUTED, _NOT_COMPUTED, _NOT_COMPUTED, _NOT_COMPUTED)


def _is_numeric(dtype: np.dtype[np.generic]) -> bool:
    if dtype.kind in "biuf":
        return True
    return dtype.kind == "V" and dtype.name.startswith(_EXTENDED_NUMERIC_PREFIXES)


def _as_float64(array: np.ndarray) -> _FloatArray:
    return np.asarray(array).astype(np.float64)


def _nonfinite_counts(array: np.ndarray) -> tuple[int, int]:
    """(NaN count, Inf count) of ``array``; 0 for non-numeric dtypes."""
    if not _is_numeric(array.dtype):
        return 0, 0
    values = _as_float64(array)
    return int(np.isnan(values).sum()), int(np.isinf(values).sum())


def _stats(values: _FloatArray) -> _Stats:
    if values.size == 0:
        return _Stats()
    # Relative errors can be inf (reference 0); interpolating between inf and a finite value
    # computes inf * 0 = nan, so fall back to a method that does not interpolate.
    with np.errstate(over="ignore", invalid="ignore"):
        median, p99 = (float(q) for q in np.percentile(values, [50, 99]))
        if math.isnan(median):
            median = float(np.median(values))
        if math.isnan(p99):
            p99 = float(np.percentile(values, 99, method="higher"))
        return _Stats(float(np.max(values)), float(np.mean(values)), median, p99)


def _cosine(ref: _FloatArray, cand: _FloatArray) -> float:
    """Cosine similarity; 1.0 when both are all-zero (or empty), 0.0 when exactly one is."""
    scale = max(
        float(np.max(np.abs(ref), initial=0.0)),
        float(np.max(np.abs(cand), initial=0.0)),
    )
    if scale == 0.0:
        return 1.0
    # Scaling by the largest magnitude avoids overflow in the dot product.
    ref_scaled, cand_scaled = ref / scale, cand / scale
    ref_norm, cand_norm = (
        float(np.linalg.norm(ref_scaled)),
        float(np.linalg.norm(cand_scaled)),
    )
    if ref_norm == 0.0 or cand_norm == 0.0:
        return 0.0
    cosine = float(np.dot(ref_scaled, cand_scaled)) / (ref_norm * cand_norm)
    return min(1.0, max(-1.0, cosine))


def _shape(array: np.ndarray | None) -> tuple[int, ...] | None:
    return None if array is None else tuple(int(d) for d in array.shape)


def _unmatched(
    name: str,
    reference: np.ndarray | None,
    candidate: np.ndarray | None,
    settings: CompareSettings,
    reason: str,
) -> OutputComparison:
    """Result for an output that cannot be compared element by element."""
    nan_ref, inf_ref = _nonfinite_counts(reference) if reference is not None else (0, 0)
    nan_cand, inf_cand = (
        _nonfinite_counts(candidate) if candidate is not None else (0, 0)
    )
    present = reference if reference is not None else candidate
    total = int(present.size) if present is not None else 0
    return _build(
        name,
        reference,
        candidate,
        settings,
        reasons=[reason],
        abs_stats=_NAN_STATS,
        rel_stats=_NAN_STATS,
        cosine=_NOT_COMPUTED,
        worst=None,
        failed_elements=total,
        total_elements=total,
        nonfinite_mismatches=0,
        counts=(nan_ref, nan_cand, inf_ref, inf_cand),
    )


def _build(
    name: str,
    reference: np.ndarray | None,
    candidate: np.ndarray | None,
    settings: CompareSettings,
    *,
    reasons: list[str],
    abs_stats: _Stats,
    rel_stats: _Stats,
    cosine: float,
    worst: tuple[tuple[int, ...], float, float] | None,
    failed_elements: int,
    total_elements: int,
    nonfinite_mismatches: int,
    counts: tuple[int, int, int, int],
) -> OutputComparison:
    return OutputComparison(
        name=name,
        passed=not reasons,
        reason="; ".join(reasons),
        shape_ref=_shape(reference),
        shape_cand=_shape(candidate),
        dtype_ref=None if reference is None else str(reference.dtype),
        dtype_cand=None if candidate is None else str(candidate.dtype),
        atol=settings.atol.for_output(name),
        rtol=settings.rtol.for_output(name),
        check_error_stat=settings.check_error_stat,
        max_abs_err=abs_stats.max,
        mean_abs_err=abs_stats.mean,
        median_abs_err=abs_stats.median,
        p99_abs_err=abs_stats.p99,
        max_rel_err=rel_stats.max,
        mean_rel_err=rel_stats.mean,
        median_rel_err=rel_stats.median,
        p99_rel_err=rel_stats.p99,
        cosine=cosine,
        worst_index=None if worst is None else worst[0],
        worst_ref=None if worst is None else worst[1],
        worst_cand=None if worst is None else worst[2],
        failed_elements=failed_elements,
        total_elements=total_elements,
        nonfinite_mismatches=nonfinite_mismatches,
        nan_count_ref=counts[0],
        nan_count_cand=counts[1],
        inf_count_ref=counts[2],
        inf_count_cand=counts[3],
    )


def _exceeds(value: npt.ArrayLike, tolerance: float) -> npt.NDArray[np.bool_]:
    """``value > tolerance``, but NaN counts as exceeding (``NaN > x`` is False)."""
    return np.logical_not(np.less_equal(value, tolerance))


def _compare_exact(
    name: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    settings: CompareSettings,
    reasons: list[str],
) -> OutputComparison:
    """Non-numeric outputs (strings, objects, complex): element-wise equality only."""
    equal = np.asarray(reference == candidate, dtype=bool)
    failed = int(equal.size - int(equal.sum()))
    if failed:
        reasons.append(
            f"{failed} of {reference.size} elements differ (dtype {reference.dtype}, compared for equality)"
        )
    worst = None
    if failed:
        index = tuple(
            int(i) for i in np.unravel_index(int(np.argmin(equal)), reference.shape)
        )
        worst = (index, _NOT_COMPUTED, _NOT_COMPUTED)
    return _build(
        name,
        reference,
        candidate,
        settings,
        reasons=reasons,
        abs_stats=_NAN_STATS,
        rel_stats=_NAN_STATS,
        cosine=_NOT_COMPUTED,
        worst=worst,
        failed_elements=failed,
        total_elements=int(reference.size),
        nonfinite_mismatches=0,
        counts=(0, 0, 0, 0),
    )


def _validate_reason(counts: tuple[int, int, int, int]) -> str | None:
    nan_ref, nan_cand, inf_ref, inf_cand = counts
    if not any(counts):
        return None
    sides = []
    for side, nans, infs in (
        ("reference", nan_ref, inf_ref),
        ("candidate", nan_cand, inf_cand),
    ):
        if nans or infs:
            sides.append(f"{side} has {nans} NaN and {infs} Inf")
    return "validate: " + ", ".join(sides)


def _first_index(mask: npt.NDArray[np.bool_]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _nonfinite_reasons(
    ref64: _FloatArray,
    cand64: _FloatArray,
    mismatch: npt.NDArray[np.bool_],
    both_nan: npt.NDArray[np.bool_],
) -> list[str]:
    """Reasons for NaN/Inf mismatches; NaN on both sides is named apart, it is the surprising one."""
    reasons = []
    other = mismatch & ~both_nan
    if n_other := int(other.sum()):
        index = _first_index(other)
        reasons.append(
            f"{n_other} NaN/Inf mismatch{'es' if n_other != 1 else ''}, first at {index}: "
            f"reference {float(ref64[index])} vs candidate {float(cand64[index])}"
        )
    nan_pairs = mismatch & both_nan
    if n_pairs := int(nan_pairs.sum()):
        reasons.append(
            f"{n_pairs} element{'s are' if n_pairs != 1 else ' is'} NaN on both sides, first at "
            f"{_first_index(nan_pairs)} (NaN never equals NaN, as in Polygraphy; allow it with --equal-nan)"
        )
    return reasons


def compare_arrays(
    name: str,
    reference: npt.ArrayLike,
    candidate: npt.ArrayLike,
    settings: CompareSettings | None = None,
) -> OutputComparison:
    """Compare one output; tolerances are picked for ``name`` from ``settings``."""
    settings = settings or CompareSettings()
    ref, cand = np.asarray(reference), np.asarray(candidate)
    if ref.shape != cand.shape:
        reason = f"shape mismatch: reference {_shape(ref)} vs candidate {_shape(cand)}"
        return _unmatched(name, ref, cand, settings, reason)
    reasons: list[str] = []
    if ref.dtype != cand.dtype:
        reasons.append(
            f"dtype mismatch: reference {ref.dtype} vs candidate {cand.dtype}"
        )
    if not (_is_numeric(ref.dtype) and _is_numeric(cand.dtype)):
        if ref.dtype != cand.dtype:
            return _unmatched(name, ref, cand, settings, reasons[0])
        return _compare_exact(name, ref, cand, settings, reasons)

    atol, rtol = settings.atol.for_output(name), settings.rtol.for_output(name)
    ref64, cand64 = _as_float64(ref), _as_float64(cand)
    ref_nan, cand_nan = np.isnan(ref64), np.isnan(cand64)
    ref_inf, cand_inf = np.isinf(ref64), np.isinf(cand64)
    counts = (
        int(ref_nan.sum()),
        int(cand_nan.sum()),
        int(ref_inf.sum()),
        int(cand_inf.sum()),
    )
    finite = np.isfinite(ref64) & np.isfinite(cand64)
    nonfinite_equal = ref_inf & (ref64 == cand64)
    if settings.equal_nan:
        nonfinite_equal |= ref_nan & cand_nan
    mismatch = ~finite & ~nonfinite_equal
    mismatches = int(mismatch.sum())

    ref_f, cand_f = ref64[finite], cand64[finite]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        abs_err = np.abs(cand_f - ref_f)
        ref_abs = np.abs(ref_f)
        rel_err = np.where(
            ref_abs == 0.0, np.where(abs_err == 0.0, 0.0, np.inf), abs_err / ref_abs
        )
    abs_stats, rel_stats = _stats(abs_err), _stats(rel_err)
    elem_failed = _exceeds(abs_err, atol) & _exceeds(rel_err, rtol)
    failed_elements = int(elem_failed.sum()) + mismatches

    flat: int | None = None
    if mismatches:
        flat = int(np.argmax(mismatch))  # first mismatch
    elif abs_err.size:
        flat = int(np.flatnonzero(finite)[int(np.argmax(abs_err))])
    worst = None
    if flat is not None:
        index = tuple(int(i) for i in np.unravel_index(flat, ref.shape))
        worst = (index, float(ref64.flat[flat]), float(cand64.flat[flat]))

    if settings.validate and (why := _validate_reason(counts)):
        reasons.append(why)
    if mismatches:
        reasons.extend(_nonfinite_reasons(ref64, cand64, mismatch, ref_nan & cand_nan))
    stat = settings.check_error_stat
    if stat == "elemwise":
        bad = int(elem_failed.sum())
        if bad:
            reasons.append(
                f"{bad} of {ref.size} elements exceed atol={atol:g} and rtol={rtol:g} "
                f"(max abs err {abs_stats.max:.3g}, max rel err {rel_stats.max:.3g})"
            )
    elif bool(_exceeds(abs_stats.get(stat), atol)) and bool(
        _exceeds(rel_stats.get(stat), rtol)
    ):
        reasons.append(
            f"{stat} abs err {abs_stats.get(stat):.3g} > atol={atol:g} and "
            f"{stat} rel err {rel_stats.get(stat):.3g} > rtol={rtol:g}"
        )
    result = _build(
        name,
        ref,
        cand,
        settings,
        reasons=reasons,
        abs_stats=abs_stats,
        rel_stats=rel_stats,
        cosine=_cosine(ref_f, cand_f),
        worst=worst,
        failed_elements=failed_elements,
        total_elements=int(ref.size),
        nonfinite_mismatches=mismatches,
        counts=counts,
    )
    logger.debug("compared %s: passed=%s %s", name, result.passed, result.reason)
    return result


def compare_outputs(
    reference: Mapping[str, npt.ArrayLike],
    candidate: Mapping[str, npt.ArrayLike],
    settings: CompareSettings | None = None,
    *,
    check_names: bool = True,
) -> CompareResult:
    """Compare every output of ``candidate`` against ``reference``.

    Results follow the reference order; outputs missing in the candidate fail with reason
    ``"missing in candidate"``, outputs only in the candidate follow, failing with
    ``"not in reference"``. With ``check_names`` (default), a per-output tolerance that names
    neither a reference nor a candidate output raises :class:`UnknownNameError`.
    """
    settings = settings or CompareSettings()
    if check_names:
        validate_tolerance_names(settings, [*reference, *candidate])
    results: list[OutputComparison] = []
    for name, ref in reference.items():
        if name in candidate:
            results.append(compare_arrays(name, ref, candidate[name], settings))
        else:
            results.append(
                _unmatched(
                    name, np.asarray(ref), None, settings, "missing in candidate"
                )
            )
    for name, cand in candidate.items():
        if name not in reference:
            results.append(
                _unmatched(name, None, np.asarray(cand), settings, "not in reference")
            )
    return CompareResult(outputs=tuple(results))
