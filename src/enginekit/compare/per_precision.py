"""The one tolerance rule for candidates below FP32, used by `run`, `optimize` and `debug precision`.

FP32 candidates are judged with the tolerances as given (Polygraphy's defaults 1e-5 unless set). Below FP32,
rounding error grows with the magnitude of what is rounded, so tolerances the user did not set become
scale-aware: rtol = 4 machine epsilons of the candidate's format, and atol = the same times the largest
finite |value| of that output in the reference (magnitudes below 1 count as 1): bf16 3.1 %, fp16/tf32 0.39 %,
int8 and fp8 3.1 % (8-bit quantized paths share one bar: int8 matmuls, ``linear=int8``, and FP8 e4m3 matmuls
with row-wise scales, ``linear=fp8``, are held to int8's 7-bit step rather than to 4 epsilons of e4m3, which would
allow 50 %). A value the user gave (``--atol 1e-5`` included, even when it equals the default) is kept as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from enginekit.compare.tolerances import CompareSettings

#: Machine epsilon of each format below FP32 (fp16 and tf32: 10 mantissa bits, bf16: 7; int8: a 7-bit step;
#: fp8: FP8 matmuls judged like int8).
FORMAT_EPSILON = {"fp16": 2.0**-10, "tf32": 2.0**-10, "bf16": 2.0**-7, "int8": 2.0**-7, "fp8": 2.0**-7}
#: Default tolerance below FP32: this many epsilons of the candidate's format.
LOW_PRECISION_EPSILONS = 4


def base_precision(precision: str) -> str:
    """``fp16`` for ``fp16``, ``fp16+plan`` and the like: the arithmetic format a candidate label names."""
    return precision.partition("+")[0].strip().lower()


def settings_for_precision(
    base: CompareSettings, precision: str, reference: Mapping[str, np.ndarray]
) -> CompareSettings:
    """``base`` for FP32 (and any precision without a known epsilon); scale-aware defaults below FP32.

    Only tolerances the user did not give are replaced: a default given on the command line (``--atol 1e-5``)
    and per-output values (``--atol logits:1e-3``) are kept.
    """
    eps = FORMAT_EPSILON.get(base_precision(precision))
    if eps is None:
        return base
    tol = LOW_PRECISION_EPSILONS * eps
    atol = base.atol
    if not atol.default_given:
        given = dict(atol.per_output)
        scaled = []
        for name, arr in reference.items():
            values = np.asarray(arr)
            if np.issubdtype(values.dtype, np.floating):
                values = values[np.isfinite(values)]
            peak = float(np.abs(values).max()) if values.size else 0.0
            scaled.append((name, given.get(name, tol * max(peak, 1.0))))
        atol = replace(atol, default=tol, per_output=tuple(scaled))
    rtol = base.rtol if base.rtol.default_given else replace(base.rtol, default=tol)
    return replace(base, atol=atol, rtol=rtol)
