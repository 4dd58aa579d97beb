"""Reduced-precision ONNX for the ONNX runners (``ort:fp16``, ``onnx-reference:fp16|bf16``).

The runner's model is converted by :func:`enginekit.graph.precision.convert_precision` with graph inputs and
outputs kept float32; the nodes of ``BackendSettings.precision_plan`` are the conversion's node block list (they
stay FP32), and so are nodes reading constants beyond the type's range (``range_kept_fp32`` in describe(), and
logged as warnings). A plan made for another precision is an InvalidArgumentError, one naming nodes the model
lacks an UnknownNameError (both raised by the conversion, both user errors).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from enginekit.registry import REDUCED_FLOAT_PRECISIONS

if TYPE_CHECKING:
    import onnx

    from enginekit.graph.precision import PrecisionPlan
    from enginekit.settings import BackendSettings

log = logging.getLogger(__name__)


def runner_plan(settings: BackendSettings, precision: str) -> PrecisionPlan | None:
    """The plan a runner at ``precision`` applies: None at fp32/tf32 or when none was given."""
    if settings.precision_plan is None or precision not in REDUCED_FLOAT_PRECISIONS:
        return None
    from enginekit.graph.precision import load_plan

    return load_plan(settings.precision_plan)


def convert_for_runner(model: onnx.ModelProto, precision: str,
                       settings: BackendSettings) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """``model`` converted to ``precision`` (IO types kept, plan nodes FP32) and what was done, for describe()."""
    from enginekit.graph.precision import convert_precision

    plan = runner_plan(settings, precision)
    conv = convert_precision(model, precision, plan)
    info: dict[str, Any] = {
        "precision_plan": None if plan is None else str(settings.precision_plan),
        "plan_nodes_fp32": list(conv.kept_fp32),
        "auto_kept_fp32": len(conv.auto_kept),
        "nodes_converted": conv.nodes_converted,
        "casts_inserted": conv.casts_inserted,
        "clipped_initializers": list(conv.clipped_initializers),
        "range_kept_fp32": [k.to_dict() for k in conv.range_kept],  # read constants beyond the type's range
        "tiny_initializers": list(conv.tiny_initializers),
    }
    log.info("%s model: %d nodes converted, %d plan nodes and %d others kept in FP32 (%d for out-of-range "
             "constants)", precision, conv.nodes_converted, len(conv.kept_fp32), len(conv.auto_kept),
             len(conv.range_kept))
    for line in conv.warnings():
        log.warning("%s", line)
    return conv.model, info
