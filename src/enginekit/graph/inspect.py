"""Summarize an ONNX model: versions, IO, operators, weights and the INT64 values TensorRT cares about.

Weights are initializers plus the value tensors of Constant nodes (PaddlePaddle and some
exporters store every weight in Constant nodes), in the main graph, subgraphs and functions.
External data is not loaded in full: only INT64 tensors are read, to check their range.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from enginekit.errors import ModelLoadError
from enginekit.graph.io import input_specs, output_specs
from enginekit.graph.load import (
    TensorRef,
    external_data_files,
    load_model,
    model_tensors,
    read_external_data,
    tensor_element_count,
    tensor_nbytes,
)
from enginekit.tensors import TensorSpec

if TYPE_CHECKING:
    import numpy as np
    import onnx

DEFAULT_DOMAIN_NAME = "ai.onnx"
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
MAX_LISTED_NAMES = 20
_INT64 = 7  # onnx.TensorProto.INT64


@dataclass(frozen=True)
class ModelInfo:
    """Facts about one ONNX model file. ``to_dict`` gives a JSON-safe view."""

    path: str
    file_size_bytes: int
    external_data_bytes: int  # total size of the external data files
    ir_version: int
    producer_name: str
    producer_version: str
    opset_imports: tuple[tuple[str, int], ...]  # (domain, version); "" shown as "ai.onnx"
    max_opset: int | None  # version of the default (ai.onnx) domain; None when not imported
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    node_count: int  # nodes of the main graph
    subgraph_node_count: int  # nodes inside If/Loop/Scan bodies, at any depth
    op_counts: tuple[tuple[str, int], ...]  # op (domain-prefixed outside ai.onnx) -> count, all graphs
    initializer_count: int
    constant_tensor_count: int  # Constant-node value tensors
    parameter_count: int  # elements of all weights (initializers + Constant values)
    parameter_bytes: int
    int64_initializers: int  # INT64 weights (initializers + Constant values)
    int64_out_of_int32: int  # INT64 weights holding a value outside the int32 range
    int64_out_of_int32_names: tuple[str, ...]  # the first MAX_LISTED_NAMES of those
    custom_domains: tuple[str, ...]  # operator domains other than ai.onnx and ai.onnx.ml
    external_data_files: tuple[str, ...]

    @property
    def total_node_count(self) -> int:
        return self.node_count + self.subgraph_node_count

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "file_size_bytes": self.file_size_bytes,
            "external_data_bytes": self.external_data_bytes,
            "ir_version": self.ir_version,
            "producer_name": self.producer_name,
            "producer_version": self.producer_version,
            "opset_imports": dict(self.opset_imports),
            "max_opset": self.max_opset,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "node_count": self.node_count,
            "subgraph_node_count": self.subgraph_node_count,
            "op_counts": dict(self.op_counts),
            "initializer_count": self.initializer_count,
            "constant_tensor_count": self.constant_tensor_count,
            "parameter_count": self.parameter_count,
            "parameter_bytes": self.parameter_bytes,
            "int64_initializers": self.int64_initializers,
            "int64_out_of_int32": self.int64_out_of_int32,
            "int64_out_of_int32_names": list(self.int64_out_of_int32_names),
            "custom_domains": list(self.custom_domains),
            "external_data_files": list(self.external_data_files),
        }


def inspect_model(path: str | Path, *, check: bool = True) -> ModelInfo:
    """Load the model at ``path`` (see :func:`load_model` for errors and ``check``) and summarize it."""
    model_path = Path(path)
    model = load_model(model_path, load_external_data=False, check=check)
    return summarize_model(model, model_path)


def summarize_model(model: onnx.ModelProto, model_path: Path) -> ModelInfo:
    """ModelInfo for a model loaded from ``model_path`` (external data may still be external)."""
    top_nodes = list(model.graph.node)
    all_nodes = list(_all_nodes(model.graph))
    op_counts = Counter(_op_name(n) for n in all_nodes)
    opsets = tuple((op.domain or DEFAULT_DOMAIN_NAME, int(op.version)) for op in model.opset_import)
    default_versions = [v for d, v in opsets if d == DEFAULT_DOMAIN_NAME]
    domains = {op.domain for op in model.opset_import} | {n.domain for n in all_nodes}
    weights = [r for r in model_tensors(model) if r.kind in ("initializer", "constant")]
    int64_weights = [r for r in weights if r.tensor.data_type == _INT64]
    wide = [r.name for r in int64_weights if _outside_int32(r, model_path)]
    ext_files = tuple(external_data_files(model))
    return ModelInfo(
        path=str(model_path),
        file_size_bytes=model_path.stat().st_size,
        external_data_bytes=sum((model_path.parent / loc).stat().st_size for loc in ext_files),
        ir_version=int(model.ir_version),
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        opset_imports=opsets,
        max_opset=max(default_versions) if default_versions else None,
        inputs=tuple(input_specs(model)),
        outputs=tuple(output_specs(model)),
        node_count=len(top_nodes),
        subgraph_node_count=len(all_nodes) - len(top_nodes),
        op_counts=tuple(sorted(op_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        initializer_count=sum(1 for r in weights if r.kind == "initializer"),
        constant_tensor_count=sum(1 for r in weights if r.kind == "constant"),
        parameter_count=sum(tensor_element_count(r.tensor) for r in weights),
        parameter_bytes=sum(tensor_nbytes(r.tensor) or 0 for r in weights),
        int64_initializers=len(int64_weights),
        int64_out_of_int32=len(wide),
        int64_out_of_int32_names=tuple(wide[:MAX_LISTED_NAMES]),
        custom_domains=tuple(sorted(domains - STANDARD_DOMAINS)),
        external_data_files=ext_files,
    )


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Nodes of ``graph`` and of every subgraph nested in its node attributes."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for sub in subgraphs:
                yield from _all_nodes(sub)


def _op_name(node: onnx.NodeProto) -> str:
    if node.domain in ("", DEFAULT_DOMAIN_NAME):
        return node.op_type
    return f"{node.domain}::{node.op_type}"


def _tensor_values(ref: TensorRef, model_path: Path) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    tensor = ref.tensor
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(ref.tensor)
        tensor.raw_data = read_external_data(ref, model_path)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:
        raise ModelLoadError(
            f"Could not read the values of {ref.where} in '{model_path}': {exc}.",
            hint="The tensor's data does not match its shape and type; export the model again.",
        ) from exc


def _outside_int32(ref: TensorRef, model_path: Path) -> bool:
    values = _tensor_values(ref, model_path)
    if values.size == 0:
        return False
    return bool(values.min() < INT32_MIN or values.max() > INT32_MAX)
