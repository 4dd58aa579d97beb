"""Shape points of a sweep: ``--batch`` values and ``--shapes`` sets, resolved against the model's inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from enginekit.data import InputShape, parse_input_shape, resolve_shapes
from enginekit.errors import InvalidArgumentError
from enginekit.tensors import TensorSpec


@dataclass(frozen=True)
class ShapePoint:
    """One point of the sweep: base shapes (``--input`` merged with one ``--shapes`` set) and a batch."""

    shapes: tuple[InputShape, ...] = ()
    batch: int | None = None  # --batch value: the leading dim of every input whose axis 0 is dynamic
    set_label: str = ""  # the --shapes set as given ("" without --shapes)

    @property
    def label(self) -> str:
        parts = [p for p in (self.set_label, f"batch {self.batch}" if self.batch is not None else "") if p]
        return ", ".join(parts) or "default"


class PointSkipped(Exception):
    """This point cannot run on this model (a static batch dim that differs from the requested batch)."""


def parse_shape_set(text: str) -> tuple[InputShape, ...]:
    """``NAME:DIMS[,NAME:DIMS...]`` (dims joined by 'x'): one shape per input, for one point of the sweep."""
    pieces: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part or not pieces:
            pieces.append(part)
        else:  # "ids:1,128" written with a comma inside the dims
            pieces[-1] += "," + part
    if not pieces:
        raise InvalidArgumentError(f"--shapes {text!r}: give NAME:DIMS for the inputs, e.g. x:1x3x224x224.")
    shapes = tuple(parse_input_shape(p) for p in pieces)
    names = [s.name for s in shapes]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"--shapes {text!r} names an input twice.")
    return shapes


def parse_batches(text: str) -> tuple[int, ...]:
    """``1,8,32`` → (1, 8, 32)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InvalidArgumentError(f"--batch {text!r}: give positive integers separated by commas, "
                                   "e.g. 1,8,32.") from None
    if not values or any(v < 1 for v in values):
        raise InvalidArgumentError(f"--batch {text!r}: give positive integers separated by commas, e.g. 1,8,32.")
    return values


def plan_points(
    base: Sequence[InputShape], shape_sets: Sequence[Sequence[InputShape]], batches: Sequence[int]
) -> list[ShapePoint]:
    """Every ``--shapes`` set (or just the base shapes) × every ``--batch`` (or none)."""
    sets: list[tuple[tuple[InputShape, ...], str]] = []
    for s in shape_sets or [()]:
        given = {g.name: g for g in s}
        merged = tuple(given.get(b.name, b) for b in base) + tuple(g for g in s if g.name not in
                                                                     {b.name for b in base})
        sets.append((merged, ",".join(g.to_arg() for g in s)))
    batch_values: list[int | None] = list(batches) if batches else [None]
    return [ShapePoint(shapes, b, label) for shapes, label in sets for b in batch_values]


def resolve_point(specs: Sequence[TensorSpec], point: ShapePoint) -> tuple[dict[str, tuple[int, ...]], int]:
    """Concrete shape of every input at ``point``, and the batch size used for throughput.

    Raises PointSkipped when a requested batch meets a static leading dim of another size, and
    FeedError (a user error) when a shape does not fit the model or a symbolic dim has no value.
    """
    given = list(point.shapes)
    if point.batch is not None:
        b = point.batch
        by_name = {g.name: g for g in given}
        for spec in specs:
            if not spec.shape:  # unknown rank or a scalar: no batch dim to set
                continue
            lead = spec.shape[0]
            g = by_name.get(spec.name)
            if isinstance(lead, int):
                if lead != b:
                    raise PointSkipped(f"input {spec.name!r} has a static batch dim of {lead} "
                                       f"(shape {spec.shape_str()}), so batch {b} cannot run")
                continue
            if g is not None:
                by_name[spec.name] = InputShape(g.name, (b, *g.shape[1:]), g.dtype) if g.shape else g
            elif all(isinstance(d, int) for d in spec.shape[1:]):
                by_name[spec.name] = InputShape(spec.name, (b, *(int(d) for d in spec.shape[1:])))
        given = list(by_name.values())
    shapes = resolve_shapes(specs, given)
    return shapes, point.batch if point.batch is not None else leading_dim(specs, shapes)


def leading_dim(specs: Sequence[TensorSpec], shapes: dict[str, tuple[int, ...]]) -> int:
    """Batch of a feed: the leading dim of the first input that has one (1 for scalar-only models)."""
    for spec in specs:
        shape = shapes.get(spec.name, ())
        if shape:
            return shape[0]
    return 1


def shape_text(shapes: dict[str, tuple[int, ...]]) -> str:
    """``x:1x3x224x224,y:1x4``."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in shape)}" for name, shape in shapes.items())
