"""Inputs and outputs of an ONNX graph as TensorSpecs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from enginekit.tensors import Dim, TensorSpec, onnx_type_name

if TYPE_CHECKING:
    import onnx


def _value_info_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    tt = vi.type.tensor_type
    dtype = onnx_type_name(tt.elem_type)
    if not tt.HasField("shape"):
        return TensorSpec(vi.name, None, dtype)
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:  # no name, or a negative size (some exporters write -1 for "dynamic")
            dims.append("?")
    return TensorSpec(vi.name, tuple(dims), dtype)


def input_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    """Graph inputs that must be fed (initializers listed as inputs, as in IR < 4, are excluded)."""
    inits = {i.name for i in model.graph.initializer}
    return [_value_info_spec(vi) for vi in model.graph.input if vi.name not in inits]


def output_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [_value_info_spec(vi) for vi in model.graph.output]
