"""Which ONNX node a runtime failure happened in, when the runtime says so.

onnxruntime writes ``... while running Reshape node. Name:'bad_reshape' ...``; OpenVINO ``[CPU] Reshape node with
name 'y'`` (often the node's output name); onnx's reference evaluator says nothing, but the operator that raised
is on the traceback with its ONNX node. The result names the node of the model, so a row's reason can say
``node 'bad_reshape' (Reshape): ...`` instead of leaving the user to read a runtime's internals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import TracebackType
from typing import Any

_ORT = re.compile(r"while running (?P<op>[\w.]+) node\. Name:'(?P<name>[^']*)'")
_OPENVINO = re.compile(r"\] (?P<op>[\w.]+) node with name '(?P<name>[^']*)'")


@dataclass(frozen=True)
class FailingNode:
    name: str
    op_type: str
    said_by: str  # what named it: the runtime's message or the failing operator on the traceback

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "op_type": self.op_type, "said_by": self.said_by}

    def __str__(self) -> str:
        return f"node {self.name!r} ({self.op_type})" if self.op_type else f"node {self.name!r}"


def _from_traceback(tb: TracebackType | None) -> FailingNode | None:
    """onnx.reference: the innermost operator object on the traceback carries its ``onnx_node``."""
    found: FailingNode | None = None
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        node = getattr(owner, "onnx_node", None)
        if node is not None and getattr(node, "op_type", None):
            found = FailingNode(str(node.name), str(node.op_type), "the failing operator")
        tb = tb.tb_next
    return found


def _resolve(name: str, op: str, said_by: str, model: Any | None) -> FailingNode:
    """Map a name to the model's node: runtimes may give the node's name or the name of one of its outputs."""
    if model is not None:
        for node in model.graph.node:
            if node.name == name:
                return FailingNode(name, str(node.op_type), said_by)
        for node in model.graph.node:
            if name in node.output:
                return FailingNode(str(node.name) or name, str(node.op_type), f"{said_by} (output {name!r})")
    return FailingNode(name, op, said_by)


def failing_node(exc: BaseException, model: Any | None = None) -> FailingNode | None:
    """The node ``exc`` happened in, or None when neither the message nor the traceback says.

    ``model`` (an ``onnx.ModelProto``, graph only) maps output names to nodes and fills in op types.
    """
    message = str(exc)
    for pattern, who in ((_ORT, "onnxruntime"), (_OPENVINO, "OpenVINO")):
        m = pattern.search(message)
        if m and m.group("name"):
            return _resolve(m.group("name"), m.group("op"), who, model)
    cause = exc.__cause__
    return _from_traceback(exc.__traceback__) or (_from_traceback(cause.__traceback__) if cause else None)
