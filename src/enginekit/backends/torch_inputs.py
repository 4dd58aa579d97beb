"""Inputs and output specs of PyTorch sources for the torch/inductor/aoti backends.

Inputs come from ``BackendSettings.torch_inputs`` (``NAME:DIMS[:DTYPE]``, symbolic dims allowed, parsed like
export's ``--input``); outputs are named like the exporter names them (``output``, or ``output_0..N`` for nested
tuples/lists/dicts, flattened in order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from enginekit.errors import InvalidArgumentError
from enginekit.sources.shapes import InputPlan
from enginekit.tensors import Dim, TensorSpec


# inputs ----------------------------------------------------------------------------------------------
def plan_torch_inputs(texts: Sequence[str], dynamic_policy: str = "static") -> list[InputPlan]:
    """Input plans from ``torch_inputs``. With ``dynamic`` and no symbolic dim given, axis 0 is ``batch``."""
    from enginekit.settings import DynamicDim
    from enginekit.sources.shapes import parse_export_input, plan_inputs

    if not texts:
        raise InvalidArgumentError(
            "The torch backends need the model's inputs: give --input NAME:DIMS[:DTYPE] per forward() argument, "
            "e.g. x:batch,3,224,224 (symbolic dims are dynamic) or x:1x3x224x224."
        )
    parsed = tuple(parse_export_input(t) for t in texts)
    names = [p.name for p in parsed]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"--input names repeat: {', '.join(names)}.")
    dynamic: tuple[DynamicDim, ...] = ()
    if dynamic_policy == "dynamic" and all(isinstance(d, int) for p in parsed for d in p.dims):
        dynamic = tuple(DynamicDim(p.name, 0, "batch") for p in parsed if p.dims)
    return plan_inputs(parsed, dynamic)


def feed_shapes(texts: Sequence[str]) -> list[str]:
    """``--input`` values of a PyTorch source as concrete ``NAME:DIMS:DTYPE`` (symbolic dims at trace size),
    for the random feed of `run` (``x:batch,3,32,32`` -> ``x:2x3x32x32:float32``)."""
    return [f"{p.name}:{'x'.join(map(str, p.trace_shape))}:{p.dtype}" for p in plan_torch_inputs(texts)]


def probe_sizes(plans: Sequence[InputPlan]) -> dict[str, tuple[int, int]]:
    """(trace size, second size) per dynamic dim label; the second sizes differ between labels where possible,
    so that an output dim that changed can be told apart (batch vs seq)."""
    sizes: dict[str, tuple[int, int]] = {}
    for p in plans:
        for a in p.dynamic:
            if a.label in sizes or a.other is None:
                continue
            taken = {o for _, o in sizes.values()}
            candidates = [a.trace + 1 + len(sizes) + k for k in range(8)] + [a.other]
            fits = [c for c in candidates if c != a.trace and (a.min is None or c >= a.min)
                    and (a.max is None or c <= a.max) and c not in taken]
            sizes[a.label] = (a.trace, fits[0] if fits else a.other)
    return sizes


def example_feed(plans: Sequence[InputPlan], which: str = "trace", seed: int = 0) -> dict[str, np.ndarray]:
    """Example data for warm-up and output discovery (``which``: the trace shape, or "other" dynamic sizes).

    Floats are uniform in [0, 1); integer inputs are 0 (valid ids), masks 1, bools True.
    """
    rng = np.random.default_rng(seed)
    other = probe_sizes(plans) if which == "other" else {}
    feed: dict[str, np.ndarray] = {}
    for p in plans:
        shape = list(p.trace_shape)
        for a in p.dynamic:
            if a.label in other:
                shape[a.axis] = other[a.label][1]
        dtype = np.dtype(p.dtype)
        if np.issubdtype(dtype, np.floating):
            feed[p.name] = rng.uniform(0.0, 1.0, shape).astype(dtype)
        elif dtype == np.bool_ or "mask" in p.name.lower():
            feed[p.name] = np.ones(shape, dtype)
        else:
            feed[p.name] = np.zeros(shape, dtype)
    return feed


def output_names(n: int) -> list[str]:
    """The exporter's names: ``output`` for one tensor, ``output_0..N`` for several."""
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def boundary_dtype(torch_dtype: Any) -> str:
    """numpy dtype name of an output at the runner boundary (float16 / bfloat16 come back as float32)."""
    name = str(torch_dtype).removeprefix("torch.")
    return "float32" if name in ("float16", "bfloat16") else name


def output_specs(first: Sequence[Any], second: Sequence[Any] | None, plans: Sequence[InputPlan]) -> list[TensorSpec]:
    """Output specs from runs at the trace shape (and at the other shape, when some dim is dynamic).

    A dim that changes between the two runs is named after the input dim that changed the same way, or "?".
    """
    changed = {sizes: label for label, sizes in probe_sizes(plans).items()}
    names = output_names(len(first))
    specs = []
    for i, t in enumerate(first):
        dims: list[Dim] = [int(d) for d in t.shape]
        if second is not None and len(second) == len(first) and second[i].dim() == t.dim():
            for axis, (d1, d2) in enumerate(zip(t.shape, second[i].shape, strict=True)):
                if d1 != d2:
                    dims[axis] = changed.get((int(d1), int(d2)), "?")
        specs.append(TensorSpec(names[i], tuple(dims), boundary_dtype(t.dtype)))
    return specs
