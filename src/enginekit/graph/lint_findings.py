"""What `enginekit lint` reports (:class:`Finding`) and the graph helpers its checks share."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

SEVERITIES = ("error", "warning", "info")  # error: will not build; warning: builds but degrades/needs action
MAX_NAMES = 20


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    code: str  # stable id, e.g. EK-TRT-UNSUPPORTED-OP
    message: str
    fix: str
    nodes: tuple[str, ...] = ()  # first MAX_NAMES node names involved
    tensors: tuple[str, ...] = ()  # first MAX_NAMES tensor names involved

    def to_dict(self) -> dict[str, object]:
        return {"severity": self.severity, "code": self.code, "message": self.message, "fix": self.fix,
                "nodes": list(self.nodes), "tensors": list(self.tensors)}


# --- graph walking ---------------------------------------------------------------------------------------


def walk_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Nodes of ``graph`` and of its subgraphs, depth first."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from walk_nodes(sub)


def all_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Nodes of the main graph, its subgraphs and the model's local functions."""
    yield from walk_nodes(model.graph)
    for func in model.functions:
        yield from func.node


def node_label(node: onnx.NodeProto) -> str:
    """A node's name, or ``Op->first output`` for an unnamed node."""
    return node.name or f"{node.op_type}->{node.output[0] if node.output else '?'}"


def first_names(items: list[str]) -> tuple[str, ...]:
    """The first MAX_NAMES distinct names, for a finding's nodes/tensors."""
    return tuple(dict.fromkeys(items))[:MAX_NAMES]


def quoted_list(items: list[str]) -> str:
    """``'a', 'b' and N more``: distinct names for a message."""
    unique = list(dict.fromkeys(items))
    more = f" and {len(unique) - MAX_NAMES} more" if len(unique) > MAX_NAMES else ""
    return ", ".join(f"'{n}'" for n in unique[:MAX_NAMES]) + more


def node_attr(node: onnx.NodeProto, name: str, default: str | int) -> str | int:
    """An INT or STRING attribute's value, else ``default``."""
    for a in node.attribute:
        if a.name == name:
            if a.type == 2:  # INT
                return int(a.i)
            if a.type == 3:  # STRING
                return str(a.s.decode("utf-8", errors="replace"))
    return default
