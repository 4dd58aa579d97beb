"""Export targets and the opset `--opset auto` picks for each, from the parser support table.

The dynamo exporter writes opset 18 natively, and onnx's version converter has gaps going down, so auto
picks 18 unless the target's parser reads less (TensorRT 8.x: 17). A parser without LayerNormalization
(TensorRT 8.5) gets opset 16, so that the exporter decomposes LayerNorm into primitive ops.
"""

from __future__ import annotations

from dataclasses import dataclass

from enginekit.graph.support import TABLE_TARGETS, table_key, version_support
from enginekit.graph.support import parse_target as parse_target_name

DYNAMO_OPSET = 18


@dataclass(frozen=True)
class Target:
    name: str  # tensorrt, tensorrt-rtx, ort, openvino
    version: str | None  # the support-table key for TensorRT ("8.5", "10"), else None
    opset: int  # what `--opset auto` picks

    @property
    def label(self) -> str:
        return self.name if self.version is None else f"{self.name}=={self.version}"


def parse_target(text: str) -> Target:
    """``tensorrt==8.5`` / ``tensorrt`` / ``tensorrt-rtx`` / ``ort`` / ``openvino`` (aliases accepted)."""
    from enginekit.graph.support import load_table

    name, version = parse_target_name(text)
    if name not in TABLE_TARGETS:
        return Target(name, None, DYNAMO_OPSET)
    key = table_key(name, version or load_table()["targets"][name]["default_version"])
    support = version_support(name, key)
    opset = min(DYNAMO_OPSET, support.max_opset or DYNAMO_OPSET)
    if "LayerNormalization" not in support.ops:
        opset = min(opset, 16)
    return Target(name, key if version else None, opset)
