"""`enginekit lint`'s static TensorRT checks, from the support table ``graph/support/tensorrt.json``: opset, ops,
attributes, data types, INT64, dynamic inputs, shared dim names, data-dependent shapes."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from enginekit.graph.dim_names import Shapes, plan_renames, shared_dim_names
from enginekit.graph.inspect import ModelInfo
from enginekit.graph.lint_findings import (
    Finding,
    all_nodes,
    first_names,
    node_attr,
    node_label,
    quoted_list,
    walk_nodes,
)
from enginekit.graph.load import model_tensors
from enginekit.graph.schemas import DEFAULT_DOMAINS
from enginekit.graph.support import VersionSupport, version_tuple
from enginekit.graph.values import value_types
from enginekit.tensors import onnx_type_name

if TYPE_CHECKING:
    import onnx


# Inputs (by index) that set the output shape of an op: when computed from tensor values, the shape is data-dependent.
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Range": (0, 1, 2), "TopK": (1,), "Resize": (2, 3),
    "Upsample": (1,), "ConstantOfShape": (0,), "Slice": (1, 2, 3, 4), "Pad": (1, 3), "OneHot": (1,),
    "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "CenterCropPad": (1,),
}  # fmt: skip
DATA_DEPENDENT_OPS = frozenset({"NonZero", "Unique", "NonMaxSuppression", "Compress"})
SHAPE_ONLY_OPS = frozenset({"Shape", "Size", "EyeLike"})  # outputs depend on input shapes, not values


def trt_checks(model: onnx.ModelProto, info: ModelInfo, s: VersionSupport, version: str | None) -> list[Finding]:
    return (_opset(model, info, s) + _ops(model, s, version) + _attributes(model, s) + _dtypes(model, s)
            + _int64(model, info, s) + _dynamic_inputs(info, s) + _data_dependent_shapes(model, s))


def _opset(model: onnx.ModelProto, info: ModelInfo, s: VersionSupport) -> list[Finding]:
    import onnx

    opset = info.max_opset
    if opset is None:
        return []
    if s.min_opset is not None and opset < s.min_opset:
        return [Finding("warning", "EK-TRT-OPSET", f"Opset {opset} is below {s.min_opset}, the lowest {s.label} reads.",
                        f"Convert the model up: enginekit prepare --opset {s.min_opset}, or re-export it.")]
    if s.max_opset is None or opset <= s.max_opset:
        return []
    changed: dict[str, list[str]] = defaultdict(list)
    for node in walk_nodes(model.graph):
        if node.domain in DEFAULT_DOMAINS:
            try:
                since = onnx.defs.get_schema(node.op_type, opset, "").since_version
            except Exception:  # noqa: BLE001 - unknown op: the op check reports it
                continue
            if since > s.max_opset:
                changed[f"{node.op_type} (opset {since})"].append(node_label(node))
    fix = (f"Convert the model: enginekit prepare --opset {s.max_opset} (onnx.version_converter), or re-export "
           f"with opset <= {s.max_opset} (enginekit export --target {s.target}=={s.version}).")
    exact = "" if s.max_opset_exact else " (this maximum is assumed, see the support table's note)"
    base = f"Opset {opset} is above {s.max_opset}, the highest {s.label} reads{exact}."
    if changed:
        ops = ", ".join(changed)
        return [Finding("error", "EK-TRT-OPSET", f"{base} These ops changed after opset {s.max_opset} and will fail or "
                        f"be imported with the older meaning: {ops}.", fix,
                        nodes=first_names([n for v in changed.values() for n in v]))]
    severity = "warning" if s.max_opset_exact else "info"
    return [Finding(severity, "EK-TRT-OPSET", f"{base} No op used here changed after opset {s.max_opset}, so it "
                    "may still parse.", fix)]


def _ops(model: onnx.ModelProto, s: VersionSupport, version: str | None) -> list[Finding]:
    local = {(f.domain, f.name) for f in model.functions}
    by_op: dict[tuple[str, str], list[str]] = defaultdict(list)
    calls: list[str] = []
    for node in all_nodes(model):
        if (node.domain, node.op_type) in local:
            calls.append(node_label(node))
        else:
            by_op[(node.domain, node.op_type)].append(node_label(node))
    found = []
    if calls and not s.local_functions:
        found.append(Finding("error", "EK-TRT-LOCAL-FUNCTION", f"{s.label} cannot import ONNX local functions "
                             f"(TensorRT >= 9 can); called by {len(calls)} node(s).",
                             "Inline them: onnx.inliner.inline_local_functions(model), then save the model.",
                             nodes=first_names(calls)))
    target_minor = version_tuple(version) if version and "." in version else None
    for (domain, op), nodes in by_op.items():
        n = f"{len(nodes)} node(s)"
        if domain not in DEFAULT_DOMAINS:
            what = "has no ai.onnx.ml operators" if domain == "ai.onnx.ml" else "looks it up as a plugin"
            found.append(Finding(
                "error", "EK-TRT-CUSTOM-OP", f"{domain}::{op} ({n}) is not an ONNX standard op: {s.label} {what}.",
                f"Register a TensorRT plugin named '{op}' and load its library when parsing and building (trtexec "
                "--staticPlugins/--dynamicPlugins), or export the model with standard ONNX operators (no contrib "
                "ops or fusions).", nodes=first_names(nodes)))
        elif op in s.ops:
            found += _since(op, nodes, s, target_minor)
            if op in s.restrictions:
                found.append(Finding("info", "EK-TRT-OP-RESTRICTION", f"{op} ({n}) has restrictions in {s.label}: "
                                     f"{s.restrictions[op]}", "Check that these nodes meet them; the real parser "
                                     "confirms it (install tensorrt or tensorrt-rtx).", nodes=first_names(nodes)))
        else:
            listed = op in s.unsupported
            note = s.unsupported_notes.get(op, "")
            how = "is not supported by" if listed else "is not in the operator matrix of"
            found.append(Finding(
                "error" if listed else "warning", "EK-TRT-UNSUPPORTED-OP" if listed else "EK-TRT-UNLISTED-OP",
                f"{op} ({n}) {how} {s.label}." + (f" {note}" if note else ""),
                s.fixes.get(op, f"Replace {op} with supported ops (change the model code or the export opset), "
                        f"implement it as a TensorRT plugin, or use a TensorRT version that supports it."),
                nodes=first_names(nodes)))
    return found


def _since(op: str, nodes: list[str], s: VersionSupport, target_minor: tuple[int, ...] | None) -> list[Finding]:
    if op not in s.since:
        return []
    first, exact = s.since[op]
    if target_minor is None:
        return [Finding("info", "EK-TRT-OP-SINCE", f"{op} needs TensorRT >= {first}" + ("" if exact else
                        " (listed in that matrix; the first release with it may be earlier)") + ".",
                        f"Build with TensorRT {first} or newer.", nodes=first_names(nodes))]
    if target_minor >= version_tuple(first):
        return []
    severity = "error" if exact else "warning"
    return [Finding(severity, "EK-TRT-UNSUPPORTED-OP", f"{op} is supported from TensorRT {first}, after the targeted "
                    f"{'.'.join(map(str, target_minor))}.", f"Use TensorRT >= {first}, or replace {op}.",
                    nodes=first_names(nodes))]


def _attributes(model: onnx.ModelProto, s: VersionSupport) -> list[Finding]:
    consts = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                            for o in n.output}
    found = []
    bad: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)  # (severity, op, what, note) -> nodes
    for node in walk_nodes(model.graph):
        if node.domain not in DEFAULT_DOMAINS:
            continue
        for rule in s.attribute_rules:
            if node.op_type in rule.ops:
                value = node_attr(node, rule.attribute, rule.default)
                if value not in rule.allowed:
                    allowed = ", ".join(map(str, rule.allowed))
                    what = f"{rule.attribute}={value} (supported: {allowed})"
                    bad[(rule.severity, node.op_type, what, rule.note)].append(node_label(node))
        limit = s.max_outputs.get(node.op_type)
        if limit is not None and any(o for o in node.output[limit:]):
            bad[("error", node.op_type, f"more than {limit} output(s) used", "")].append(node_label(node))
        const_input = s.const_inputs.get(node.op_type)
        if const_input and len(node.input) > const_input[0] and node.input[const_input[0]] and (
                node.input[const_input[0]] not in consts):
            bad[("error", node.op_type, f"input `{const_input[1]}` is computed, not an initializer", "")].append(
                node_label(node))
    for (severity, op, what, note), nodes in bad.items():
        found.append(Finding(severity, "EK-TRT-UNSUPPORTED-ATTR", f"{op} with {what} is not supported by {s.label}"
                             + (f" ({note})" if note else "") + ".",
                             f"Re-export {op} with supported settings (or fold the input to a constant: enginekit "
                             "prepare), or use a TensorRT version without this restriction.", nodes=first_names(nodes)))
    return found


def _tensor_types(model: onnx.ModelProto) -> tuple[dict[str, int], set[str]]:
    """Element type of every known tensor (IO, weights, inferred value_info, Cast targets) and the IO names."""
    types = value_types(model, failure_log_level=logging.DEBUG)  # shape inference is a best effort here
    io = {vi.name for vi in (*model.graph.input, *model.graph.output)}
    for ref in model_tensors(model):  # weights and constants of subgraphs and functions too
        if ref.kind in ("initializer", "constant", "attribute"):
            types.setdefault(ref.name, ref.tensor.data_type)
    for node in all_nodes(model):
        if node.op_type == "Cast" and node.output:
            to = node_attr(node, "to", 0)
            if isinstance(to, int) and to:
                types[node.output[0]] = to
    return {k: v for k, v in types.items() if v}, io


def _dtypes(model: onnx.ModelProto, s: VersionSupport) -> list[Finding]:
    types, io = _tensor_types(model)
    by_dtype: dict[str, list[str]] = defaultdict(list)
    for name, t in types.items():
        by_dtype[onnx_type_name(t)].append(name)
    found = []
    d = s.dtypes
    for dtype, names in sorted(by_dtype.items()):
        if dtype in d.supported or dtype == "int64" and s.int64 == "cast-to-int32":
            continue  # int64 on TensorRT < 9 is the INT64 check's
        if dtype in d.io_only:
            names = [n for n in names if n not in io]
            if names:
                found.append(Finding("error", "EK-TRT-DTYPE", f"{dtype} is allowed only as a network input/output "
                                     f"in {s.label}; these tensors are inside the graph: {quoted_list(names)}.",
                                     f"Cast {dtype} tensors to a supported type (float32, int32) right after the "
                                     "inputs, or quantize with Q/DQ nodes.", tensors=first_names(names)))
        elif dtype in d.cast_down:
            found.append(Finding("warning", "EK-TRT-DTYPE", f"{len(names)} {dtype} tensor(s) "
                                 f"({quoted_list(names)}) are converted to {d.cast_down[dtype]} by {s.label} "
                                 "(values clamped to its range): results can differ from the original.",
                                 f"Export in {d.cast_down[dtype]} "
                                 f"(model.{d.cast_down[dtype].replace('float32', 'float')}() before export) to "
                                 "control the conversion.", tensors=first_names(names)))
        else:
            found.append(Finding("error", "EK-TRT-DTYPE", f"{len(names)} {dtype} tensor(s) ({quoted_list(names)}): "
                                 f"{s.label} does not support {dtype}.", "Compute this part outside the engine "
                                 "(pre/post-processing) or change it to a supported type "
                                 f"({', '.join(sorted(d.supported))}).",
                                 tensors=first_names(names)))
    return found


def _int64(model: onnx.ModelProto, info: ModelInfo, s: VersionSupport) -> list[Finding]:
    io64 = [t.name for t in (*info.inputs, *info.outputs) if t.dtype == "int64"]
    n_weights, wide = info.int64_initializers, list(info.int64_out_of_int32_names)
    if not (io64 or n_weights):
        return []
    what = " and ".join(([f"{n_weights} INT64 weight(s)"] if n_weights else [])
                        + ([f"INT64 inputs/outputs {quoted_list(io64)}"] if io64 else []))
    found = []
    if s.int64 == "cast-to-int32":
        found.append(Finding("info", "EK-TRT-INT64", f"{what}: {s.label} has no INT64, the parser casts INT64 "
                             "weights to INT32 (one warning each) and INT64 inputs/outputs are bound as INT32.",
                             "Convert ahead of time with enginekit prepare (INT64->INT32 pass) and feed int32 data.",
                             tensors=first_names(io64)))
        if wide:
            found.append(Finding("warning", "EK-TRT-INT64-RANGE", f"{info.int64_out_of_int32} INT64 weight(s) hold "
                                 f"values outside int32 ({quoted_list(wide)}): {s.label} clamps them to +-(2**31-1). "
                                 "Harmless for Slice ends such as INT64_MAX; wrong results anywhere else.",
                                 "Run enginekit prepare (INT64->INT32 pass) and check the tensors it reports, or "
                                 "change the model so these values fit in int32.", tensors=first_names(wide)))
    else:
        extra = (f" Values outside int32 in {quoted_list(wide)} are kept (TensorRT < 9 would clamp them)."
                 if wide else "")
        found.append(Finding("info", "EK-TRT-INT64", f"{what}: INT64 is native in {s.label} (TensorRT >= 9): weights "
                             f"keep their values; INT64 inputs/outputs need int64 buffers.{extra}",
                             "No action needed; enginekit prepare (INT64->INT32 pass) makes the model portable to "
                             "TensorRT 8.x.", tensors=first_names(io64 + wide)))
    return found


def _dynamic_inputs(info: ModelInfo, s: VersionSupport) -> list[Finding]:
    parts, names, examples = [], [], []
    for spec in info.inputs:
        if spec.shape is None:
            parts.append(f"{spec.name} (unknown rank)")
        elif spec.is_dynamic:
            axes = ", ".join(str(a) for a, _ in spec.symbolic_dims())
            parts.append(f"{spec.name} {spec.shape_str()} (dynamic axes {axes})")
            examples.append(f"{spec.name}:" + "x".join(str(d) if isinstance(d, int) else "?" for d in spec.shape))
        else:
            continue
        names.append(spec.name)
    if not names:
        return []
    example = ",".join(examples) or "NAME:DIMS"
    return [Finding(
        "warning", "EK-TRT-DYNAMIC-SHAPE",
        f"{len(names)} input(s) have dynamic dims: {'; '.join(parts)}. {s.label} needs an optimization profile "
        "(min/opt/max shape) for each at build time; kernels are tuned for the opt shape.",
        f"Give a profile when building: trtexec --minShapes={example} --optShapes=... --maxShapes=... (replace each ? "
        "with a size), or enginekit build --profile NAME:MIN:OPT:MAX (check one first: enginekit lint --profile "
        "NAME:MIN:OPT:MAX); or make the shapes static first.",
        tensors=first_names(names))]


def shared_dim_name_checks(model: onnx.ModelProto, shapes: Shapes, s: VersionSupport) -> list[Finding]:
    """Input dims that share a name are one size to TensorRT: an error where the given shapes differ, a warning
    for shared ``?``/empty placeholders and for names shared by axes of one input."""
    renames = {(r.tensor, r.axis): r.new for r in plan_renames(model, shapes)}
    found = []
    for shared in shared_dim_names(model, shapes):
        if not (shared.differ or shared.placeholder or shared.one_tensor):
            continue  # a name the author gave several inputs (batch): meant to be one size
        new = ", ".join(f"{t} dim {a} -> {renames[(t, a)]!r}" for t, a in shared.dims if (t, a) in renames)
        fix = (f"enginekit build renames them by default ({new}); for other tools, `enginekit prepare MODEL -o "
               "OUT.onnx -p unique-dim-names --input NAME:DIMS` writes the renamed model (verified with onnxruntime)")
        tensors = first_names([t for t, _ in shared.dims])
        if shared.differ:
            found.append(Finding(
                "error", "EK-TRT-DIM-NAMES",
                f"{shared.describe()}, but the given shapes make them differ: {s.label} forces input dims with one "
                "name to be equal, so the build fails (\"Input dimensions with this name have different constant "
                "values\").", fix + ("; or give these dims equal sizes." if not shared.placeholder else "."),
                tensors=tensors))
            continue
        why = "a placeholder exporters write for 'unknown'" if shared.placeholder else "one name on two axes"
        found.append(Finding(
            "warning", "EK-TRT-DIM-NAMES",
            f"{shared.describe()} ({why}): {s.label} forces input dims with one name to be equal, so a profile or "
            "input where they differ will not build or run.",
            (fix if shared.placeholder else "Give the dims equal sizes, or rename one (edit the input's dim_param)")
            + "; check a profile with enginekit lint --profile NAME:MIN:OPT:MAX.", tensors=tensors))
    return found


def _data_dependent_shapes(model: onnx.ModelProto, s: VersionSupport) -> list[Finding]:
    """Ops whose output shape depends on tensor values (not only on input shapes or constants)."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    values: dict[str, bool] = {i.name: False for i in graph.initializer}  # tensor -> computed from input values
    shape_dd: dict[str, bool] = {}  # tensor -> its shape depends on values
    for vi in graph.input:
        if vi.name not in inits:
            values[vi.name] = True
    flagged: list[str] = []
    reasons: list[str] = []
    for node in graph.node:
        ins = [i for i in node.input if i]
        outer = _subgraph_inputs(node)
        dd_in = any(shape_dd.get(i, False) for i in ins)
        if node.op_type in SHAPE_ONLY_OPS:
            val, shp = dd_in, False
        elif node.op_type in DATA_DEPENDENT_OPS:
            val, shp = True, True
            flagged.append(node_label(node))
            reasons.append(f"{node.op_type} '{node_label(node)}' (output size depends on values)")
        elif node.op_type == "Constant":
            val, shp = False, False
        else:
            val = any(values.get(i, False) for i in [*ins, *outer])
            shp = dd_in
            for idx in SHAPE_INPUTS.get(node.op_type, ()) if node.domain in DEFAULT_DOMAINS else ():
                if idx < len(node.input) and node.input[idx] and values.get(node.input[idx], False):
                    shp = True
                    flagged.append(node_label(node))
                    reasons.append(f"{node.op_type} '{node_label(node)}' (input '{node.input[idx]}' is computed from "
                                   "tensor values)")
                    break
        for out in node.output:
            values[out], shape_dd[out] = val, shp
    if not flagged:
        return []
    more = f" and {len(reasons) - 5} more" if len(reasons) > 5 else ""
    return [Finding(
        "warning", "EK-TRT-DATA-DEPENDENT-SHAPE",
        f"{len(flagged)} node(s) produce shapes known only at run time: {'; '.join(reasons[:5])}{more}. "
        f"Optimization profiles cannot bound them: {s.label} needs data-dependent shapes (an output allocator "
        "for such outputs), or the values must come straight from an input given as a shape tensor.",
        "Make the shape inputs constants or Shape-derived (fix the export, enginekit prepare folds constants), "
        "move the op to post-processing, or run the engine with an output allocator (IOutputAllocator).",
        nodes=first_names(flagged))]


def _subgraph_inputs(node: onnx.NodeProto) -> list[str]:
    names: list[str] = []
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            names += [i for n in walk_nodes(sub) for i in n.input if i]
    return names
