"""Small ONNX graph helpers shared by the passes: default domains, opsets, schemas, subgraph reads."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import onnx

DEFAULT_DOMAINS = ("", "ai.onnx")


def opset_map(model: onnx.ModelProto) -> dict[str, int]:
    """Domain → opset version, with the default domain written as ""."""
    return {("" if op.domain in DEFAULT_DOMAINS else op.domain): int(op.version) for op in model.opset_import}


def node_schema(node: onnx.NodeProto, opsets: Mapping[str, int]) -> onnx.defs.OpSchema | None:
    """The schema ``node`` has at the model's opset, or None (unknown domain or op)."""
    domain = "" if node.domain in DEFAULT_DOMAINS else node.domain
    version = opsets.get(domain)
    if version is None:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, version, domain)
    except onnx.defs.SchemaError:
        return None


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The If/Loop/Scan bodies held in ``node``'s attributes."""
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Every value name a node inside a subgraph of ``graph`` reads (at any depth)."""
    names: set[str] = set()

    def visit(g: onnx.GraphProto) -> None:
        for n in g.node:
            names.update(n.input)
            for sub in subgraphs(n):
                visit(sub)

    for node in graph.node:
        for sub in subgraphs(node):
            visit(sub)
    return names
