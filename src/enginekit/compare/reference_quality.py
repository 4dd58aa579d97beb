"""Is a verdict against this reference worth anything? Pure numpy checks of the reference outputs themselves.

Random feeds can drive a model into a region where its output carries no information: PaddleOCR's text
detector returns ~0 everywhere on random 64x64 images, so any candidate, however broken, lies within tolerance.
Such a reference makes a PASSED verdict weak; the checks below say so, output by output, with numbers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from enginekit.compare.tolerances import CompareSettings

#: An output whose most frequent value covers at least this share of its elements is saturated.
SATURATED_SHARE = 0.99
#: Outputs smaller than this are too small to call saturated (a 2-class softmax is not "saturated").
MIN_ELEMENTS_FOR_SATURATION = 100


def weak_reference_reasons(reference: Mapping[str, np.ndarray], settings: CompareSettings) -> list[str]:
    """One sentence per output of ``reference`` that cannot tell a good candidate from a bad one.

    - near-constant: the spread of its finite values (max - min) is within the output's atol, so a candidate
      returning any constant inside that range would pass;
    - saturated: one value (often 0, or a sigmoid's 1) covers >= 99 % of its elements, so errors upstream rarely
      reach it. Outputs with fewer than 2 elements, and non-numeric ones, are not judged.
    """
    reasons: list[str] = []
    for name, raw in reference.items():
        arr = np.asarray(raw)
        if arr.size < 2 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            continue
        values = arr.astype(np.float64, copy=False).ravel()
        values = values[np.isfinite(values)]
        if values.size < 2:
            continue
        spread = float(values.max() - values.min())
        atol = settings.atol.for_output(name)
        if spread <= atol:
            reasons.append(f"output {name!r} is near-constant in the reference (all {values.size} finite values "
                           f"within {spread:.3g} of each other, atol {atol:.3g}): any candidate close to that "
                           f"constant passes")
            continue
        if values.size >= MIN_ELEMENTS_FOR_SATURATION:
            uniq, counts = np.unique(values, return_counts=True)
            top = int(counts.argmax())
            share = float(counts[top]) / values.size
            if share >= SATURATED_SHARE:
                reasons.append(f"output {name!r} is saturated in the reference ({share:.2%} of its values equal "
                               f"{float(uniq[top]):.6g}): errors upstream rarely reach it")
    return reasons


#: What to do about it, said once after the reasons.
ADVICE = ("feed real data (--load-inputs FILE.npz|.json with real images/text, or --dataset), so the reference "
          "output varies")
