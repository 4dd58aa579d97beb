"""ONNX → ONNX graph passes of `enginekit prepare`, registered by name in :data:`PASSES`.

A pass is a function ``(model, context) -> PassOutput``. It receives its own copy of the model
(it may change it in place and return it) and says what it changed in ``summary`` and ``details``.
It raises when it cannot do its work; :func:`enginekit.graph.prepare.prepare_model` then keeps the
previous model, marks the pass failed and goes on. Verification against the original model's
outputs is done by ``prepare_model``, not by the passes.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

from enginekit.errors import EnginekitError, InvalidArgumentError, UnknownNameError
from enginekit.graph.inspect import INT32_MAX, INT32_MIN
from enginekit.graph.io import input_specs, output_specs
from enginekit.graph.schemas import DEFAULT_DOMAINS, node_schema, opset_map, subgraph_reads

if TYPE_CHECKING:
    from enginekit.data import InputShape
    from enginekit.settings import PrepareSettings

log = logging.getLogger(__name__)

MAX_EXAMPLES = 10  # names / reasons listed in a pass's details
PROTOBUF_LIMIT = 2**31 - 2**20  # above this a model cannot be serialized in memory (2 GiB, with margin)
_INT32 = "tensor(int32)"


class PassError(EnginekitError):
    """A pass could not do its work; the pass is marked failed and the other passes go on."""


@dataclass(frozen=True)
class PassContext:
    """What a pass may read besides the model: the settings of this `prepare` run."""

    settings: PrepareSettings
    model_path: Path
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the verification feed's shapes


@dataclass(frozen=True)
class PassOutput:
    """The model a pass produced and what it did (``details`` must be JSON-safe)."""

    model: onnx.ModelProto
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)


PassFn = Callable[[onnx.ModelProto, PassContext], PassOutput]


# --- helpers ----------------------------------------------------------------------------------


def default_opset(model: onnx.ModelProto) -> int | None:
    """Version of the ai.onnx domain the model imports, or None."""
    versions = [int(op.version) for op in model.opset_import if op.domain in DEFAULT_DOMAINS]
    return max(versions) if versions else None


def infer_shapes(model: onnx.ModelProto, *, strict: bool) -> onnx.ModelProto:
    """onnx shape inference with data propagation; through a temp folder for models over 2 GiB."""
    if model.ByteSize() < PROTOBUF_LIMIT:
        return onnx.shape_inference.infer_shapes(model, check_type=strict, strict_mode=strict, data_prop=True)
    with tempfile.TemporaryDirectory(prefix="enginekit-infer-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save_model(model, str(src), save_as_external_data=True, location="in.onnx.data")
        onnx.shape_inference.infer_shapes_path(str(src), str(dst), check_type=strict, strict_mode=strict,
                                               data_prop=True)
        return onnx.load_model(str(dst))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _is_static(vi: onnx.ValueInfoProto) -> bool:
    tt = vi.type.tensor_type
    return tt.HasField("shape") and all(d.HasField("dim_value") and d.dim_value >= 0 for d in tt.shape.dim)


def _output_shapes(model: onnx.ModelProto) -> dict[str, str]:
    return {s.name: s.shape_str() for s in output_specs(model)}


def _shape_changes(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    return {n: f"{before.get(n, '?')} -> {s}" for n, s in after.items() if before.get(n) != s}


def _op_counts(model: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type if n.domain in DEFAULT_DOMAINS else f"{n.domain}::{n.op_type}" for n in model.graph.node)


def _op_diff(before: Counter[str], after: Counter[str]) -> tuple[dict[str, int], dict[str, int]]:
    removed = {op: before[op] - after[op] for op in sorted(before) if before[op] > after[op]}
    added = {op: after[op] - before[op] for op in sorted(after) if after[op] > before[op]}
    return removed, added


def _top(counts: dict[str, int], n: int = 4) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{op} x{c}" for op, c in items[:n])
    return text + (", ..." if len(items) > n else "")


# --- shape inference --------------------------------------------------------------------------


def shape_inference(model: onnx.ModelProto, ctx: PassContext) -> PassOutput:
    """onnx shape inference, strict when the model allows it (else lenient, and said so)."""
    outputs_before = _output_shapes(model)
    vi_before = len(model.graph.value_info)
    static_before = sum(_is_static(v) for v in model.graph.value_info)
    strict, note = True, ""
    try:
        inferred = infer_shapes(model, strict=True)
    except Exception as exc:  # noqa: BLE001 - strict mode refuses what lenient mode accepts
        strict, note = False, _first_line(exc)
        log.info("strict shape inference failed (%s); running it in lenient mode", note)
        inferred = infer_shapes(model, strict=False)
    vi_after = len(inferred.graph.value_info)
    static_after = sum(_is_static(v) for v in inferred.graph.value_info)
    changes = _shape_changes(outputs_before, _output_shapes(inferred))
    details: dict[str, Any] = {
        "strict": strict,
        "value_info_before": vi_before,
        "value_info_after": vi_after,
        "static_value_info_before": static_before,
        "static_value_info_after": static_after,
        "output_shapes_changed": changes,
    }
    if note:
        details["strict_error"] = note
    summary = f"{vi_after - vi_before:+d} value_info ({static_after} fully static)" + ("" if strict else
                                                                                        "; lenient mode")
    if changes:
        summary += f"; outputs {', '.join(f'{n}: {c}' for n, c in changes.items())}"
    return PassOutput(inferred, summary, details)


# --- simplify (onnxslim) ----------------------------------------------------------------------


def simplify(model: onnx.ModelProto, ctx: PassContext) -> PassOutput:
    """Constant folding, dead-node removal and fusions through onnxslim's Python API."""
    from enginekit.deps import dist_version, require

    onnxslim = require("onnxslim", purpose="the 'simplify' pass")
    ops_before, inits_before = _op_counts(model), len(model.graph.initializer)
    slimmed = onnxslim.slim(model)  # returns a new ModelProto; no file written, no table printed
    if not isinstance(slimmed, onnx.ModelProto):
        raise PassError(f"onnxslim returned {type(slimmed).__name__} instead of a model.")
    removed, added = _op_diff(ops_before, _op_counts(slimmed))
    details: dict[str, Any] = {
        "onnxslim_version": dist_version("onnxslim"),
        "removed_ops": removed,
        "added_ops": added,
        "initializers_before": inits_before,
        "initializers_after": len(slimmed.graph.initializer),
    }
    parts = [f"removed {_top(removed)}" if removed else "", f"added {_top(added)}" if added else ""]
    return PassOutput(slimmed, "; ".join(p for p in parts if p) or "no op changes", details)


# --- INT64 -> INT32 ---------------------------------------------------------------------------


@dataclass
class _Int64Tensor:
    name: str  # the value name consumers use: initializer name or Constant output
    kind: str  # "initializer" | "constant"
    tensor: onnx.TensorProto  # the proto inside the model, rewritten in place
    values: np.ndarray


def _int64_tensors(graph: onnx.GraphProto) -> Iterator[_Int64Tensor]:
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.INT64:
            yield _Int64Tensor(init.name, "initializer", init, numpy_helper.to_array(init))
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in DEFAULT_DOMAINS or not node.output:
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.HasField("t") and attr.t.data_type == onnx.TensorProto.INT64:
                yield _Int64Tensor(node.output[0], "constant", attr.t, numpy_helper.to_array(attr.t))


_Formal = onnx.defs.OpSchema.FormalParameter


def _formal(params: Sequence[_Formal], index: int) -> _Formal | None:
    if index < len(params):
        return params[index]
    if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return params[-1]
    return None


def _allowed(schema: onnx.defs.OpSchema, type_str: str) -> list[str]:
    for tc in schema.type_constraints:
        if tc.type_param_str == type_str:
            return list(tc.allowed_type_strs)
    return [type_str]  # a concrete type such as tensor(int64)


def _int32_blocker(
    name: str, uses: Sequence[tuple[onnx.NodeProto, int]], candidates: dict[str, _Int64Tensor],
    opsets: dict[str, int],
) -> tuple[str, str] | None:
    """(category, reason) when ``name`` must stay INT64 for one of its consumers, else None."""
    for node, index in uses:
        label = node.name or (node.output[0] if node.output else "")
        where = f"{node.op_type} node {label!r}"
        schema = node_schema(node, opsets)
        if schema is None:
            return "other", f"consumer {where} has no ONNX schema here to check (custom or unknown op)"
        param = _formal(schema.inputs, index)
        if param is None:
            return "other", f"consumer {where} has no formal input at position {index}"
        allowed = _allowed(schema, param.type_str)
        if _INT32 not in allowed:
            kinds = ", ".join(t.removeprefix("tensor(").removesuffix(")") for t in allowed)
            return "op", f"{node.op_type} input '{param.name}' accepts only {kinds}"
        if param.type_str.startswith(("tensor(", "seq(")):
            continue  # a concrete type list with int32 in it: no type variable ties it to others
        for j, other in enumerate(node.input):
            other_param = _formal(schema.inputs, j)
            if j != index and other and other_param is not None and other_param.type_str == param.type_str \
                    and other not in candidates:
                return "op", (f"{node.op_type} input '{param.name}' must have the type of input "
                              f"'{other_param.name}' ({other!r}), which stays int64")
        for out in schema.outputs:
            if out.type_str == param.type_str:
                return "op", (f"{node.op_type} output '{out.name}' has the type of input '{param.name}' "
                              "and would change to int32")
    return None


def int64_to_int32(model: onnx.ModelProto, ctx: PassContext) -> PassOutput:
    """INT64 initializers and Constant values → INT32 where every consumer accepts int32 by its schema.

    A tensor stays INT64 when a value is outside the int32 range (named, never clamped), when a
    consumer needs int64 (Reshape shape, Expand shape, Unsqueeze axes, ...) or shares a type
    variable with an int64 input or with its output, or when it is a graph input/output, is used
    in a subgraph, or feeds an op without a schema here.
    """
    graph = model.graph
    opsets = opset_map(model)
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name:
                uses[name].append((node, i))
    in_subgraphs = subgraph_reads(graph)
    graph_inputs, graph_outputs = {v.name for v in graph.input}, {v.name for v in graph.output}
    tensors = list(_int64_tensors(graph))
    out_of_range: list[str] = []
    kept: dict[str, tuple[str, str]] = {}
    candidates: dict[str, _Int64Tensor] = {}
    for t in tensors:
        if t.values.size and (int(t.values.min()) < INT32_MIN or int(t.values.max()) > INT32_MAX):
            out_of_range.append(t.name)
        elif t.name in graph_outputs:
            kept[t.name] = ("other", "is a graph output (its dtype is part of the model's interface)")
        elif t.name in graph_inputs:
            kept[t.name] = ("other", "is also a graph input (callers may override it)")
        elif t.name in in_subgraphs:
            kept[t.name] = ("other", "is read inside a subgraph")
        elif not uses.get(t.name):
            kept[t.name] = ("other", "has no consumer")
        else:
            candidates[t.name] = t
    changed = True
    while changed:  # dropping one candidate can tie another to int64 (Slice starts/ends share a type)
        changed = False
        for name in list(candidates):
            blocker = _int32_blocker(name, uses[name], candidates, opsets)
            if blocker is not None:
                kept[name] = blocker
                del candidates[name]
                changed = True
    for t in candidates.values():
        t.tensor.CopyFrom(numpy_helper.from_array(t.values.astype(np.int32), t.tensor.name))
    for vi in graph.value_info:
        if vi.name in candidates and vi.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            vi.type.tensor_type.elem_type = onnx.TensorProto.INT32
    if out_of_range:
        log.warning("int64-to-int32: %d tensor(s) hold values outside int32 and stay INT64: %s",
                    len(out_of_range), ", ".join(out_of_range[:MAX_EXAMPLES]))
    op_kept = [f"{n}: {why}" for n, (cat, why) in kept.items() if cat == "op"]
    other_kept = [f"{n}: {why}" for n, (cat, why) in kept.items() if cat == "other"]
    details: dict[str, Any] = {
        "int64_tensors": len(tensors),
        "converted": len(candidates),
        "converted_names": list(candidates)[:MAX_EXAMPLES],
        "kept_out_of_range": out_of_range,
        "kept_op_requires_int64": len(op_kept),
        "op_requires_int64_examples": op_kept[:MAX_EXAMPLES],
        "kept_other": len(other_kept),
        "other_examples": other_kept[:MAX_EXAMPLES],
    }
    summary = (f"converted {len(candidates)} of {len(tensors)} INT64 tensors; kept {len(op_kept)} (op needs int64)"
               f", {len(out_of_range)} (outside int32)" + (f": {', '.join(out_of_range[:3])}" if out_of_range else "")
               + (f", {len(other_kept)} (other)" if other_kept else ""))
    return PassOutput(model, summary, details)


# --- opset conversion -------------------------------------------------------------------------


def convert_opset(model: onnx.ModelProto, ctx: PassContext) -> PassOutput:
    """onnx.version_converter to ``settings.target_opset``; the IR version is raised when the opset needs it."""
    target = ctx.settings.target_opset
    if target is None:
        raise PassError("The 'opset' pass needs a target opset (--opset N).")
    current = default_opset(model)
    details: dict[str, Any] = {"from_opset": current, "to_opset": target, "ir_version_before": int(model.ir_version)}
    if current == target:
        return PassOutput(model, f"already opset {target}", {**details, "ir_version_after": int(model.ir_version)})
    try:
        converted = onnx.version_converter.convert_version(model, target)
    except Exception as exc:  # noqa: BLE001 - the converter's C++ assertions arrive as RuntimeError
        text = " ".join(str(exc).split())
        text = text.split("failed: ", 1)[-1] if "Assertion" in text else text
        raise PassError(
            f"onnx.version_converter cannot convert opset {current} to {target}: {text}",
            hint="Export the model at the target opset instead, or choose another --opset.",
        ) from exc
    min_ir = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", target)], ignore_unknown=True)
    if converted.ir_version < min_ir:
        converted.ir_version = min_ir
    details["ir_version_after"] = int(converted.ir_version)
    return PassOutput(converted, f"opset {current} -> {target} (IR {details['ir_version_before']} -> "
                      f"{converted.ir_version})", details)


# --- fix input shapes -------------------------------------------------------------------------


def check_fixed_shapes(model: onnx.ModelProto, shapes: Iterable[InputShape]) -> None:
    """Raise a user error when a ``--fix-input-shapes`` value does not fit the model's inputs."""
    from enginekit.errors import did_you_mean

    specs = {s.name: s for s in input_specs(model)}
    for fixed in shapes:
        spec = specs.get(fixed.name)
        arg = f"--fix-input-shapes {fixed.to_arg()}"
        if spec is None:
            raise UnknownNameError(f"{arg}: the model has no input "
                                   f"{fixed.name!r}{did_you_mean(fixed.name, list(specs))}. "
                                   f"Model inputs: {', '.join(specs) or '(none)'}.")
        if fixed.dtype and fixed.dtype != spec.dtype:
            raise InvalidArgumentError(f"{arg}: dtype {fixed.dtype} differs from the model's {spec.dtype} "
                                       f"for input {fixed.name!r}; leave the dtype out.")
        if spec.shape is None:
            continue
        if len(spec.shape) != len(fixed.shape):
            raise InvalidArgumentError(
                f"{arg}: rank {len(fixed.shape)} does not match input {fixed.name!r} of shape {spec.shape_str()} "
                f"(rank {len(spec.shape)}).", hint=f"Give {len(spec.shape)} dims, e.g. --fix-input-shapes "
                f"{fixed.name}:" + "x".join(str(d) if isinstance(d, int) else "1" for d in spec.shape) + ".")
        for axis, (dim, value) in enumerate(zip(spec.shape, fixed.shape, strict=True)):
            if isinstance(dim, int) and dim != value:
                raise InvalidArgumentError(f"{arg}: axis {axis} of input {fixed.name!r} is fixed at {dim} in the "
                                           f"model (shape {spec.shape_str()}), not {value}.")


def fix_input_shapes(model: onnx.ModelProto, ctx: PassContext) -> PassOutput:
    """Freeze symbolic input dims, drop the symbolic shapes they invalidate and infer shapes again."""
    shapes = ctx.settings.fix_input_shapes
    if not shapes:
        raise PassError("The 'fix-input-shapes' pass needs shapes (--fix-input-shapes NAME:DIMS).")
    check_fixed_shapes(model, shapes)
    inputs_before = {s.name: s.shape_str() for s in input_specs(model)}
    outputs_before = _output_shapes(model)
    by_name = {s.name: s.shape for s in shapes}
    for vi in model.graph.input:
        if vi.name in by_name:
            shape = vi.type.tensor_type.shape
            shape.ClearField("dim")
            for value in by_name[vi.name]:
                shape.dim.add().dim_value = value
    # Stale symbolic shapes would be merged into (or contradict) the new inference: drop them.
    saved = {o.name: onnx.TypeProto() for o in model.graph.output}
    for o in model.graph.output:
        saved[o.name].CopyFrom(o.type)
        if not _is_static(o):
            o.type.tensor_type.ClearField("shape")
    dropped_vi = len(model.graph.value_info)
    del model.graph.value_info[:]
    try:
        fixed = infer_shapes(model, strict=False)
    except Exception as exc:  # noqa: BLE001 - lenient inference still refuses contradictions
        raise PassError(f"Shape inference failed on the fixed shapes: {_first_line(exc)}") from exc
    still_dynamic = []
    for o in fixed.graph.output:
        if not o.type.tensor_type.HasField("shape"):
            o.type.CopyFrom(saved[o.name])  # inference could not tell: keep what the model said
        if not _is_static(o):
            still_dynamic.append(o.name)
    inputs_after = {s.name: s.shape_str() for s in input_specs(fixed)}
    out_changes = _shape_changes(outputs_before, _output_shapes(fixed))
    details: dict[str, Any] = {
        "inputs": _shape_changes(inputs_before, inputs_after),
        "outputs": out_changes,
        "outputs_still_dynamic": still_dynamic,
        "value_info_dropped": dropped_vi,
        "value_info_after": len(fixed.graph.value_info),
    }
    summary = "inputs " + ", ".join(f"{n}: {c}" for n, c in details["inputs"].items())
    if out_changes:
        summary += "; outputs " + ", ".join(f"{n}: {c}" for n, c in out_changes.items())
    if still_dynamic:
        summary += f"; still dynamic: {', '.join(still_dynamic)}"
    return PassOutput(fixed, summary, details)


# --- unique dim names -------------------------------------------------------------------------


def unique_dim_names(model: onnx.ModelProto, ctx: PassContext) -> PassOutput:
    """Rename input dims TensorRT would tie: shared ``?``/empty names always, shared author names when the
    verification feed gives them different sizes (see :mod:`enginekit.graph.dim_names`)."""
    from enginekit.graph.dim_names import apply_renames, plan_renames, rename_summary, shared_dim_names

    shapes = {name: [shape] for name, shape in ctx.input_shapes.items()}
    renames = plan_renames(model, shapes)
    others = apply_renames(model, renames)
    kept = [s.describe() for s in shared_dim_names(model, shapes)]
    details: dict[str, Any] = {"renamed": [r.to_dict() for r in renames], "output_value_info_dims_renamed": others,
                               "shared_names_kept": kept[:MAX_EXAMPLES]}
    if not renames:
        return PassOutput(model, "no shared placeholder or conflicting dim names", details)
    summary = f"renamed {rename_summary(renames)}" + (f"; {others} output/value_info dim(s)" if others else "")
    return PassOutput(model, summary, details)


PASSES: dict[str, PassFn] = {
    "fix-input-shapes": fix_input_shapes,
    "unique-dim-names": unique_dim_names,
    "opset": convert_opset,
    "shape-inference": shape_inference,
    "simplify": simplify,
    "int64-to-int32": int64_to_int32,
}
