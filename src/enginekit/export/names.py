"""Output names of an exported graph: set them after export, renaming any internal tensor in the way.

The exporters take ``output_names`` but do not check them against the names they give internal tensors:
dynamo writes a second definition of ``relu`` when an output is called ``relu`` (an invalid model), and the
TorchScript exporter renames the model's *input* ``x`` to ``x.1`` when an output is called ``x``. So the
models are exported with the exporters' own (unique) output names and renamed here: a colliding internal
tensor gets a fresh name, an output that is a graph input or repeats another output gets an Identity node.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from enginekit.errors import InvalidArgumentError


def check_output_names(names: Sequence[str], input_names: Sequence[str]) -> None:
    """Refuse empty, repeated names and names of model inputs (user errors, exit 2)."""
    if any(not n for n in names):
        raise InvalidArgumentError(f"--output-names {','.join(names)!r}: an output name is empty.")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise InvalidArgumentError(f"--output-names: {', '.join(map(repr, repeated))} given more than once; every "
                                   "output needs its own name.")
    clash = [n for n in names if n in input_names]
    if clash:
        raise InvalidArgumentError(f"--output-names: {', '.join(map(repr, clash))} is also the name of an input "
                                   f"(inputs: {', '.join(input_names)}); ONNX names each tensor once.")


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph (If/Loop/Scan bodies), depth first."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def _all_names(graph: Any) -> set[str]:
    names: set[str] = set()
    for g in _graphs(graph):
        names.update(v.name for v in (*g.input, *g.output, *g.value_info))
        names.update(t.name for t in g.initializer)
        names.update(t.values.name for t in g.sparse_initializer)
        for node in g.node:
            names.update(node.input)
            names.update(node.output)
    names.discard("")
    return names


def _rename(graph: Any, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` everywhere in ``graph`` and its subgraphs."""
    for g in _graphs(graph):
        for v in (*g.input, *g.output, *g.value_info):
            if v.name == old:
                v.name = new
        for t in g.initializer:
            if t.name == old:
                t.name = new
        for t in g.sparse_initializer:
            if t.values.name == old:
                t.values.name = new
        for node in g.node:
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = new


def _fresh(base: str, taken: set[str]) -> str:
    k = 1
    while f"{base}_{k}" in taken:
        k += 1
    return f"{base}_{k}"


def set_output_names(proto: Any, names: Sequence[str]) -> list[str]:
    """Give the graph outputs ``names`` (in order); returns notes on internal tensors that were renamed."""
    import onnx.helper

    graph = proto.graph
    if len(names) != len(graph.output):
        raise InvalidArgumentError(f"--output-names gives {len(names)} names but the ONNX graph has "
                                   f"{len(graph.output)} outputs.")
    check_output_names(names, [v.name for v in graph.input])
    notes: list[str] = []
    taken = _all_names(graph)
    graph_inputs = {v.name for v in graph.input}
    seen: set[str] = set()
    for out in graph.output:  # an output that is an input, or a tensor already output: copy it under a new name
        if out.name in graph_inputs or out.name in seen:
            copy = _fresh(out.name, taken | set(names))
            graph.node.append(onnx.helper.make_node("Identity", [out.name], [copy], name=f"{copy}_identity"))
            taken.add(copy)
            out.name = copy
        seen.add(out.name)
    for i, want in enumerate(names):
        current = graph.output[i].name
        if current == want:
            continue
        if want in taken:  # an internal tensor (or a later output) has the name: move it out of the way
            moved = _fresh(want, taken | set(names))
            _rename(graph, want, moved)
            taken.add(moved)
            is_output = any(o.name == moved for o in graph.output)
            if not is_output:
                notes.append(f"internal tensor {want!r} renamed to {moved!r} to free the output name")
        _rename(graph, current, want)
        taken.discard(current)
        taken.add(want)
    return notes
