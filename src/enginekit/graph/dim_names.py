"""Symbolic dim names of graph inputs that TensorRT would tie together, and renaming them apart.

TensorRT (and TensorRT-RTX) treat input dims that carry one ``dim_param`` as one size: PaddleOCR's
classifier names both H and W of ``x [?, 3, ?, ?]`` ``?``, so a profile with H 48 and W 192 fails with
"Input dimensions with this name have different constant values". Two kinds of names are involved:

- *placeholders* (``?`` or an empty name): exporters write them for "unknown", not to say that dims are
  equal. When two or more input dims carry one, each of them is renamed ``<input>_dim<axis>``;
- *names the author chose* (``batch`` on two inputs): kept, unless the given shapes (profile MIN/OPT/MAX,
  or feeds) show different sizes for dims sharing one; then those dims are renamed, and the caller says so.

Dims with no name (unset, or a negative ``dim_value`` such as -1) are not tied by TensorRT and are left alone.
Renaming touches only shape annotations (graph inputs, outputs, value_info), never a computation. The same
names in outputs and value_info become ``<tensor>_dim<axis>`` too, so no stale tie is left behind.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from enginekit.errors import InvalidArgumentError, UnknownNameError

if TYPE_CHECKING:
    import onnx

PLACEHOLDERS = ("?", "")
Shapes = Mapping[str, Sequence[Sequence[int]]]  # input name -> concrete shapes it will see, aligned across inputs


@dataclass(frozen=True)
class SharedDimName:
    """Input dims that carry one dim name, and the sizes the given shapes give each of them."""

    name: str
    dims: tuple[tuple[str, int], ...]  # (input, axis)
    values: tuple[tuple[int, ...] | None, ...]  # per dim: its size in each given shape (None: not given)

    @property
    def placeholder(self) -> bool:
        return self.name in PLACEHOLDERS

    @property
    def one_tensor(self) -> bool:
        """Two axes of one input share the name (TensorRT forces them equal, rarely what was meant)."""
        return len({t for t, _ in self.dims}) < len(self.dims)

    @property
    def differ(self) -> bool:
        """The given shapes give these dims different sizes, so TensorRT cannot treat them as one."""
        return len({v for v in self.values if v is not None}) > 1

    def describe(self) -> str:
        """``x dim 2 (48) and x dim 3 (192) share the name '?'``."""
        parts = []
        for (tensor, axis), v in zip(self.dims, self.values, strict=True):
            sizes = "" if v is None else " (" + "/".join(str(d) for d in dict.fromkeys(v)) + ")"
            parts.append(f"{tensor} dim {axis}{sizes}")
        listed = ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{listed} share the dim name {self.name!r}"


@dataclass(frozen=True)
class DimRename:
    """One renamed graph-input dim."""

    tensor: str
    axis: int
    old: str
    new: str
    why: str  # "placeholder" | "sizes differ"

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.tensor, "axis": self.axis, "old": self.old, "new": self.new, "why": self.why}

    def describe(self) -> str:
        return f"{self.tensor} dim {self.axis} {self.old!r} -> {self.new!r}"


def _dims(vi: onnx.ValueInfoProto) -> Iterator[tuple[int, onnx.TensorShapeProto.Dimension]]:
    tt = vi.type.tensor_type
    if vi.type.HasField("tensor_type") and tt.HasField("shape"):
        yield from enumerate(tt.shape.dim)


def _named(dim: onnx.TensorShapeProto.Dimension) -> bool:
    return bool(dim.WhichOneof("value") == "dim_param")


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def check_shapes(model: onnx.ModelProto, shapes: Shapes, what: str = "--profile") -> None:
    """Raise a user error when ``shapes`` names an input the model lacks or gives it another rank."""
    from enginekit.errors import did_you_mean

    ranks = {vi.name: len(vi.type.tensor_type.shape.dim) if vi.type.tensor_type.HasField("shape") else None
             for vi in _graph_inputs(model)}
    for name, given in shapes.items():
        if name not in ranks:
            raise UnknownNameError(f"{what} names input {name!r}, which the model does not have"
                                   f"{did_you_mean(name, list(ranks))}. Model inputs: {', '.join(ranks) or '(none)'}.")
        for shape in given:
            if ranks[name] is not None and len(shape) != ranks[name]:
                raise InvalidArgumentError(f"{what} gives input {name!r} rank {len(shape)}; the model input has "
                                           f"rank {ranks[name]}.")


def shared_dim_names(model: onnx.ModelProto, shapes: Shapes | None = None) -> list[SharedDimName]:
    """Every dim name carried by two or more graph-input dims, in model order, with sizes from ``shapes``."""
    by_name: dict[str, list[tuple[str, int]]] = {}
    for vi in _graph_inputs(model):
        for axis, dim in _dims(vi):
            if _named(dim):
                by_name.setdefault(dim.dim_param, []).append((vi.name, axis))
    out = []
    for name, dims in by_name.items():
        if len(dims) < 2:
            continue
        values: list[tuple[int, ...] | None] = []
        for tensor, axis in dims:
            given = (shapes or {}).get(tensor)
            ok = given and all(len(s) > axis for s in given)
            values.append(tuple(int(s[axis]) for s in given) if given and ok else None)
        out.append(SharedDimName(name, tuple(dims), tuple(values)))
    return out


def plan_renames(model: onnx.ModelProto, shapes: Shapes | None = None) -> list[DimRename]:
    """The input dims to rename: shared placeholders always, shared author names when their sizes differ."""
    taken = {dim.dim_param for vi in _all_value_infos(model) for _, dim in _dims(vi) if _named(dim)}
    renames = []
    for shared in shared_dim_names(model, shapes):
        if not (shared.placeholder or shared.differ):
            continue
        why = "placeholder" if shared.placeholder else "sizes differ"
        for tensor, axis in shared.dims:
            new = _fresh(f"{tensor}_dim{axis}", taken)
            renames.append(DimRename(tensor, axis, shared.name, new, why))
    return renames


def _fresh(base: str, taken: set[str]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def _all_value_infos(model: onnx.ModelProto) -> Iterator[onnx.ValueInfoProto]:
    yield from model.graph.input
    yield from model.graph.output
    yield from model.graph.value_info


def apply_renames(model: onnx.ModelProto, renames: Sequence[DimRename]) -> int:
    """Rename in place; returns how many output / value_info dims carrying a renamed name were renamed too."""
    if not renames:
        return 0
    by_dim = {(r.tensor, r.axis): r.new for r in renames}
    names = {r.old for r in renames}
    inputs = {vi.name for vi in _graph_inputs(model)}
    taken = {dim.dim_param for vi in _all_value_infos(model) for _, dim in _dims(vi) if _named(dim)}
    taken |= set(by_dim.values())
    for vi in _graph_inputs(model):
        for axis, dim in _dims(vi):
            if _named(dim) and (vi.name, axis) in by_dim:
                dim.dim_param = by_dim[(vi.name, axis)]
    others = 0
    for vi in [*model.graph.output, *model.graph.value_info]:
        for axis, dim in _dims(vi):
            if _named(dim) and dim.dim_param in names and vi.name not in inputs:
                dim.dim_param = _fresh(f"{vi.name}_dim{axis}", taken)
                others += 1
    return others


def rename_summary(renames: Sequence[DimRename], limit: int = 6) -> str:
    """``x dim 2 '?' -> 'x_dim2', x dim 3 '?' -> 'x_dim3'`` (the first ``limit``)."""
    more = f" and {len(renames) - limit} more" if len(renames) > limit else ""
    return ", ".join(r.describe() for r in renames[:limit]) + more


def profile_shapes(pairs: Sequence[tuple[str, Sequence[int]]]) -> dict[str, list[tuple[int, ...]]]:
    """``[(name, shape), ...]`` (as :class:`enginekit.settings.LintSettings` keeps them) grouped by input."""
    out: dict[str, list[tuple[int, ...]]] = {}
    for name, shape in pairs:
        out.setdefault(name, []).append(tuple(int(d) for d in shape))
    return out
