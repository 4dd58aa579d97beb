"""The type of every value in an ONNX graph: one reading of value_info, graph inputs/outputs, weights, constants.

:func:`value_types` (element types after lenient shape inference) serves the precision conversion, the precision
debugger (observe, execute) and lint; :func:`value_infos` (full types, shapes included) serves FLOP estimates.
"""

from __future__ import annotations

import logging

import onnx

from enginekit.graph.schemas import DEFAULT_DOMAINS

log = logging.getLogger(__name__)


def inferred_or_copy(model: onnx.ModelProto, *, failure_log_level: int = logging.WARNING) -> onnx.ModelProto:
    """``model`` after lenient onnx shape inference; a copy of ``model`` (its own value_info) when inference fails."""
    from enginekit.graph.passes import infer_shapes

    try:
        return infer_shapes(model, strict=False)
    except Exception as exc:  # noqa: BLE001 - types then come from the model's own value_info
        log.log(failure_log_level, "shape inference failed (%s); using the model's own value_info for types", exc)
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy


def value_infos(graph: onnx.GraphProto) -> dict[str, onnx.TypeProto]:
    """Type of every value ``graph`` declares: value_info, then inputs, then outputs, then initializers (with
    their dims); a later source wins for a name declared twice."""
    infos = {vi.name: vi.type for vi in (*graph.value_info, *graph.input, *graph.output)}
    for t in graph.initializer:
        tp = onnx.TypeProto()
        tp.tensor_type.elem_type = t.data_type
        for d in t.dims:
            tp.tensor_type.shape.dim.add().dim_value = d
        infos[t.name] = tp
    return infos


def elem_type(tp: onnx.TypeProto | None) -> int:
    """Element type of a tensor type; 0 (undefined) for None and non-tensor types."""
    return tp.tensor_type.elem_type if tp is not None and tp.HasField("tensor_type") else 0


def declared_types(graph: onnx.GraphProto) -> dict[str, int]:
    """Element type of every value ``graph`` declares (:func:`value_infos`) and of its ai.onnx Constant nodes'
    outputs; values of undefined type are left out."""
    types = {name: t for name, tp in value_infos(graph).items() if (t := elem_type(tp))}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    types[node.output[0]] = attr.t.data_type
                elif attr.name in ("value_float", "value_floats"):
                    types[node.output[0]] = onnx.TensorProto.FLOAT
    return types


def inferred_types(model: onnx.ModelProto, *, failure_log_level: int = logging.WARNING
                   ) -> tuple[onnx.ModelProto, dict[str, int]]:
    """(:func:`inferred_or_copy` of ``model``, :func:`declared_types` of its graph)."""
    inferred = inferred_or_copy(model, failure_log_level=failure_log_level)
    return inferred, declared_types(inferred.graph)


def value_types(model: onnx.ModelProto, *, failure_log_level: int = logging.WARNING) -> dict[str, int]:
    """Element type of every value of ``model``'s main graph that shape inference (or, when it fails, the model's
    own value_info), the graph's inputs, outputs, initializers and Constant nodes know."""
    return inferred_types(model, failure_log_level=failure_log_level)[1]
