"""`enginekit lint`: what will break or degrade when an ONNX model meets a target (TensorRT first), each with a fix.

Static checks use the support table ``graph/support/tensorrt.json`` (ops per parser version, opsets, data
types, documented restrictions). When ``tensorrt`` or ``tensorrt_rtx`` is installed the real ONNX parser also
runs (:mod:`enginekit.graph.trt_parser`) and each of its errors becomes a finding. ONNX Runtime and OpenVINO
targets get the generic checks only (model size and external data, custom operator domains, the ONNX checker).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from enginekit.errors import BackendError, MissingDependencyError
from enginekit.graph.dim_names import Shapes, check_shapes, plan_renames, profile_shapes, shared_dim_names
from enginekit.graph.inspect import ModelInfo, summarize_model
from enginekit.graph.load import load_model, model_tensors
from enginekit.graph.support import (
    TABLE_TARGETS,
    TENSORRT,
    TENSORRT_RTX,
    VersionSupport,
    load_table,
    normalize_target,
    parse_target,
    table_key,
    version_support,
    version_tuple,
)
from enginekit.settings import LintSettings
from enginekit.tensors import ONNX_TYPE_NAMES

if TYPE_CHECKING:
    import onnx

    from enginekit.graph.trt_parser import ParseResult

logger = logging.getLogger(__name__)

SEVERITIES = ("error", "warning", "info")  # error: will not build; warning: builds but degrades/needs action
MAX_NAMES = 20
PROTOBUF_LIMIT = 2**31  # bytes: protobuf cannot serialize or parse a larger message
_DEFAULT = ("", "ai.onnx")
# Domains each generic target runs without a custom-op library (beyond ai.onnx).
_KNOWN_DOMAINS = {
    "ort": {"ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc"},
    "openvino": {"ai.onnx.ml", "com.microsoft", "org.openvinotoolkit"},
}
# Inputs (by index) that set the output shape of an op: when computed from tensor values, the shape is data-dependent.
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Range": (0, 1, 2), "TopK": (1,), "Resize": (2, 3),
    "Upsample": (1,), "ConstantOfShape": (0,), "Slice": (1, 2, 3, 4), "Pad": (1, 3), "OneHot": (1,),
    "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "CenterCropPad": (1,),
}  # fmt: skip
DATA_DEPENDENT_OPS = frozenset({"NonZero", "Unique", "NonMaxSuppression", "Compress"})
SHAPE_ONLY_OPS = frozenset({"Shape", "Size", "EyeLike"})  # outputs depend on input shapes, not values


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


@dataclass(frozen=True)
class LintResult:
    path: str
    target: str
    target_version: str | None  # requested or installed version ("8.5", "10.3"); None: the table's default
    table_version: str | None  # support-table entry used (None for targets without a table)
    table_source: str  # where the support table's entry comes from
    table_note: str  # caveats of that entry
    findings: tuple[Finding, ...]  # sorted: errors, warnings, infos
    parse: ParseResult | None = None
    parse_note: str = ""  # why the real parser did not run, or what to keep in mind about its result
    model: dict[str, object] = field(default_factory=dict)

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    @property
    def ok(self) -> bool:
        return self.count("error") == 0

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path, "target": self.target, "target_version": self.target_version,
            "table_version": self.table_version, "table_source": self.table_source, "table_note": self.table_note,
            "ok": self.ok,
            "counts": {s: self.count(s) for s in SEVERITIES},
            "parser": None if self.parse is None else self.parse.to_dict(), "parser_note": self.parse_note,
            "model": self.model, "findings": [f.to_dict() for f in self.findings],
        }


def lint_model(path: str | Path, settings: LintSettings | None = None) -> LintResult:
    """Check the ONNX model at ``path`` against ``settings.target``; see the module docstring.

    Raises:
        ModelLoadError: the file is missing or not a readable ONNX model.
        UnknownNameError: unknown target or a version missing from the support table.
    """
    settings = settings or LintSettings()
    target, version = _resolve_target(settings)
    model_path = Path(path)
    model = load_model(model_path, load_external_data=False, check=False)
    shapes = profile_shapes(settings.profile_shapes)
    check_shapes(model, shapes)
    info = summarize_model(model, model_path)
    findings = _checker(model, info) + _size(info)
    support: VersionSupport | None = None
    if target in TABLE_TARGETS:
        key = table_key(target, version) if version else load_table()["targets"][target]["default_version"]
        support = version_support(target, key)
        findings += _trt_checks(model, info, support, version) + _shared_dim_names(model, shapes, support)
    else:
        findings += _custom_domains_generic(model, target)
    parse, note = None, ""
    if target in TABLE_TARGETS and settings.parse:
        parse, note, parser_findings = _run_parser(model_path, model, target, version)
        findings += parser_findings
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return LintResult(
        path=str(model_path), target=target, target_version=version,
        table_version=support.version if support else None,
        table_source=support.source_text if support else "", table_note=support.note if support else "",
        findings=tuple(sorted(findings, key=lambda f: rank[f.severity])),
        parse=parse, parse_note=note,
        model={"opset": info.max_opset, "inputs": [s.to_dict() for s in info.inputs],
               "nodes": info.total_node_count, "file_size_bytes": info.file_size_bytes,
               "external_data_bytes": info.external_data_bytes},
    )


def _resolve_target(settings: LintSettings) -> tuple[str, str | None]:
    if "==" in settings.target:
        target, version = parse_target(settings.target)
        version = settings.target_version or version
    else:
        target, version = normalize_target(settings.target), settings.target_version
    if version is None and target in TABLE_TARGETS:  # None: the installed one, else the table's default
        from enginekit.deps import dist_version

        dists = ("tensorrt", "tensorrt-cu12", "tensorrt-cu13") if target == TENSORRT else (
            "tensorrt-rtx-cu13", "tensorrt-rtx-cu12", "tensorrt-rtx")
        version = next((v for v in map(dist_version, dists) if v), None)
        if version is not None:
            try:
                table_key(target, version)
            except Exception:  # noqa: BLE001 - an installed version the table lacks: use the default entry
                logger.warning("installed %s %s is not in the support table; using its newest entry", target, version)
                version = None
    return target, version


# --- graph walking ---------------------------------------------------------------------------------------


def _walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _walk(sub)


def _all_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    yield from _walk(model.graph)
    for func in model.functions:
        yield from func.node


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}->{node.output[0] if node.output else '?'}"


def _names(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))[:MAX_NAMES]


def _listed(items: list[str]) -> str:
    unique = list(dict.fromkeys(items))
    more = f" and {len(unique) - MAX_NAMES} more" if len(unique) > MAX_NAMES else ""
    return ", ".join(f"'{n}'" for n in unique[:MAX_NAMES]) + more


def _attr(node: onnx.NodeProto, name: str, default: str | int) -> str | int:
    for a in node.attribute:
        if a.name == name:
            if a.type == 2:  # INT
                return int(a.i)
            if a.type == 3:  # STRING
                return str(a.s.decode("utf-8", errors="replace"))
    return default


# --- generic checks --------------------------------------------------------------------------------------


def _checker(model: onnx.ModelProto, info: ModelInfo) -> list[Finding]:
    if info.external_data_files:
        return []  # the checker would need the external data; load_model already checked its files
    import onnx

    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - the checker's message is the finding
        text = " ".join(str(exc).split())
        return [Finding("warning", "EK-ONNX-CHECKER", f"The ONNX checker rejects the model: {text}",
                        "Fix the exporter or the graph; parsers are often more lenient than the checker, but an "
                        "invalid graph may import wrongly.")]
    return []


def _size(info: ModelInfo) -> list[Finding]:
    total = info.file_size_bytes + info.external_data_bytes
    found = []
    if info.file_size_bytes >= PROTOBUF_LIMIT:
        found.append(Finding(
            "error", "EK-MODEL-TOO-LARGE",
            f"The .onnx file is {info.file_size_bytes:,} bytes, over protobuf's 2 GiB limit: most parsers cannot "
            "read it.",
            "Save the weights as external data: onnx.save_model(model, path, save_as_external_data=True, "
            "location='weights.bin').", tensors=()))
    if info.external_data_files:
        over = " The model is over the 2 GiB protobuf limit, so the external data is required." if (
            total >= PROTOBUF_LIMIT) else ""
        found.append(Finding(
            "info", "EK-EXTERNAL-DATA",
            f"Weights are stored in external data ({info.external_data_bytes:,} bytes in "
            f"{_listed(list(info.external_data_files))}).{over}",
            "Keep the data files next to the .onnx file when copying it: TensorRT reads them relative to the model "
            "(trtexec --onnx=PATH, parser.parse_from_file(PATH)); parsing the model's bytes without its path fails."))
    return found


def _custom_domains_generic(model: onnx.ModelProto, target: str) -> list[Finding]:
    local = {(f.domain, f.name) for f in model.functions}
    by_op: dict[str, list[str]] = defaultdict(list)
    for node in _all_nodes(model):
        if node.domain not in _DEFAULT and node.domain not in _KNOWN_DOMAINS.get(target, set()) and (
                (node.domain, node.op_type) not in local):
            by_op[f"{node.domain}::{node.op_type}"].append(_label(node))
    return [Finding("warning", "EK-CUSTOM-OP",
                    f"Custom operator {op} ({len(nodes)} node(s)) is not built into {target}: it needs a custom-op "
                    "library.", f"Register the custom-op library with {target} before loading the model, or export "
                    "the model with standard ONNX operators.", nodes=_names(nodes)) for op, nodes in by_op.items()]


# --- TensorRT checks -------------------------------------------------------------------------------------


def _trt_checks(model: onnx.ModelProto, info: ModelInfo, s: VersionSupport, version: str | None) -> list[Finding]:
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
    for node in _walk(model.graph):
        if node.domain in _DEFAULT:
            try:
                since = onnx.defs.get_schema(node.op_type, opset, "").since_version
            except Exception:  # noqa: BLE001 - unknown op: the op check reports it
                continue
            if since > s.max_opset:
                changed[f"{node.op_type} (opset {since})"].append(_label(node))
    fix = (f"Convert the model: enginekit prepare --opset {s.max_opset} (onnx.version_converter), or re-export "
           f"with opset <= {s.max_opset} (enginekit export --target {s.target}=={s.version}).")
    exact = "" if s.max_opset_exact else " (this maximum is assumed, see the support table's note)"
    base = f"Opset {opset} is above {s.max_opset}, the highest {s.label} reads{exact}."
    if changed:
        ops = ", ".join(changed)
        return [Finding("error", "EK-TRT-OPSET", f"{base} These ops changed after opset {s.max_opset} and will fail or "
                        f"be imported with the older meaning: {ops}.", fix,
                        nodes=_names([n for v in changed.values() for n in v]))]
    severity = "warning" if s.max_opset_exact else "info"
    return [Finding(severity, "EK-TRT-OPSET", f"{base} No op used here changed after opset {s.max_opset}, so it "
                    "may still parse.", fix)]


def _ops(model: onnx.ModelProto, s: VersionSupport, version: str | None) -> list[Finding]:
    local = {(f.domain, f.name) for f in model.functions}
    by_op: dict[tuple[str, str], list[str]] = defaultdict(list)
    calls: list[str] = []
    for node in _all_nodes(model):
        if (node.domain, node.op_type) in local:
            calls.append(_label(node))
        else:
            by_op[(node.domain, node.op_type)].append(_label(node))
    found = []
    if calls and not s.local_functions:
        found.append(Finding("error", "EK-TRT-LOCAL-FUNCTION", f"{s.label} cannot import ONNX local functions "
                             f"(TensorRT >= 9 can); called by {len(calls)} node(s).",
                             "Inline them: onnx.inliner.inline_local_functions(model), then save the model.",
                             nodes=_names(calls)))
    target_minor = version_tuple(version) if version and "." in version else None
    for (domain, op), nodes in by_op.items():
        n = f"{len(nodes)} node(s)"
        if domain not in _DEFAULT:
            what = "has no ai.onnx.ml operators" if domain == "ai.onnx.ml" else "looks it up as a plugin"
            found.append(Finding(
                "error", "EK-TRT-CUSTOM-OP", f"{domain}::{op} ({n}) is not an ONNX standard op: {s.label} {what}.",
                f"Register a TensorRT plugin named '{op}' and load its library when parsing and building (trtexec "
                "--staticPlugins/--dynamicPlugins), or export the model with standard ONNX operators (no contrib "
                "ops or fusions).", nodes=_names(nodes)))
        elif op in s.ops:
            found += _since(op, nodes, s, target_minor)
            if op in s.restrictions:
                found.append(Finding("info", "EK-TRT-OP-RESTRICTION", f"{op} ({n}) has restrictions in {s.label}: "
                                     f"{s.restrictions[op]}", "Check that these nodes meet them; the real parser "
                                     "confirms it (install tensorrt or tensorrt-rtx).", nodes=_names(nodes)))
        else:
            listed = op in s.unsupported
            note = s.unsupported_notes.get(op, "")
            how = "is not supported by" if listed else "is not in the operator matrix of"
            found.append(Finding(
                "error" if listed else "warning", "EK-TRT-UNSUPPORTED-OP" if listed else "EK-TRT-UNLISTED-OP",
                f"{op} ({n}) {how} {s.label}." + (f" {note}" if note else ""),
                s.fixes.get(op, f"Replace {op} with supported ops (change the model code or the export opset), "
                        f"implement it as a TensorRT plugin, or use a TensorRT version that supports it."),
                nodes=_names(nodes)))
    return found


def _since(op: str, nodes: list[str], s: VersionSupport, target_minor: tuple[int, ...] | None) -> list[Finding]:
    if op not in s.since:
        return []
    first, exact = s.since[op]
    if target_minor is None:
        return [Finding("info", "EK-TRT-OP-SINCE", f"{op} needs TensorRT >= {first}" + ("" if exact else
                        " (listed in that matrix; the first release with it may be earlier)") + ".",
                        f"Build with TensorRT {first} or newer.", nodes=_names(nodes))]
    if target_minor >= version_tuple(first):
        return []
    severity = "error" if exact else "warning"
    return [Finding(severity, "EK-TRT-UNSUPPORTED-OP", f"{op} is supported from TensorRT {first}, after the targeted "
                    f"{'.'.join(map(str, target_minor))}.", f"Use TensorRT >= {first}, or replace {op}.",
                    nodes=_names(nodes))]


def _attributes(model: onnx.ModelProto, s: VersionSupport) -> list[Finding]:
    consts = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                            for o in n.output}
    found = []
    bad: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)  # (severity, op, what, note) -> nodes
    for node in _walk(model.graph):
        if node.domain not in _DEFAULT:
            continue
        for rule in s.attribute_rules:
            if node.op_type in rule.ops:
                value = _attr(node, rule.attribute, rule.default)
                if value not in rule.allowed:
                    allowed = ", ".join(map(str, rule.allowed))
                    what = f"{rule.attribute}={value} (supported: {allowed})"
                    bad[(rule.severity, node.op_type, what, rule.note)].append(_label(node))
        limit = s.max_outputs.get(node.op_type)
        if limit is not None and any(o for o in node.output[limit:]):
            bad[("error", node.op_type, f"more than {limit} output(s) used", "")].append(_label(node))
        const_input = s.const_inputs.get(node.op_type)
        if const_input and len(node.input) > const_input[0] and node.input[const_input[0]] and (
                node.input[const_input[0]] not in consts):
            bad[("error", node.op_type, f"input `{const_input[1]}` is computed, not an initializer", "")].append(
                _label(node))
    for (severity, op, what, note), nodes in bad.items():
        found.append(Finding(severity, "EK-TRT-UNSUPPORTED-ATTR", f"{op} with {what} is not supported by {s.label}"
                             + (f" ({note})" if note else "") + ".",
                             f"Re-export {op} with supported settings (or fold the input to a constant: enginekit "
                             "prepare), or use a TensorRT version without this restriction.", nodes=_names(nodes)))
    return found


def _tensor_types(model: onnx.ModelProto) -> tuple[dict[str, int], set[str]]:
    """Element type of every known tensor (IO, weights, inferred value_info, Cast targets) and the IO names."""
    import onnx

    types: dict[str, int] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        for vi in inferred.graph.value_info:
            types[vi.name] = vi.type.tensor_type.elem_type
    except Exception as exc:  # noqa: BLE001 - shape inference is a best effort here
        logger.debug("shape inference failed: %s", exc)
    io = set()
    for vi in list(model.graph.input) + list(model.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
        io.add(vi.name)
    for ref in model_tensors(model):
        if ref.kind in ("initializer", "constant", "attribute"):
            types.setdefault(ref.name, ref.tensor.data_type)
    for node in _all_nodes(model):
        if node.op_type == "Cast" and node.output:
            to = _attr(node, "to", 0)
            if isinstance(to, int) and to:
                types[node.output[0]] = to
    return {k: v for k, v in types.items() if v}, io


def _dtype_name(elem_type: int) -> str:
    import onnx

    try:
        return ONNX_TYPE_NAMES.get(elem_type) or onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"onnx-type-{elem_type}"


def _dtypes(model: onnx.ModelProto, s: VersionSupport) -> list[Finding]:
    types, io = _tensor_types(model)
    by_dtype: dict[str, list[str]] = defaultdict(list)
    for name, t in types.items():
        by_dtype[_dtype_name(t)].append(name)
    found = []
    d = s.dtypes
    for dtype, names in sorted(by_dtype.items()):
        if dtype in d.supported or dtype == "int64" and s.int64 == "cast-to-int32":
            continue  # int64 on TensorRT < 9 is the INT64 check's
        if dtype in d.io_only:
            names = [n for n in names if n not in io]
            if names:
                found.append(Finding("error", "EK-TRT-DTYPE", f"{dtype} is allowed only as a network input/output "
                                     f"in {s.label}; these tensors are inside the graph: {_listed(names)}.",
                                     f"Cast {dtype} tensors to a supported type (float32, int32) right after the "
                                     "inputs, or quantize with Q/DQ nodes.", tensors=_names(names)))
        elif dtype in d.cast_down:
            found.append(Finding("warning", "EK-TRT-DTYPE", f"{len(names)} {dtype} tensor(s) ({_listed(names)}) are "
                                 f"converted to {d.cast_down[dtype]} by {s.label} (values clamped to its range): "
                                 "results can differ from the original.", f"Export in {d.cast_down[dtype]} "
                                 f"(model.{d.cast_down[dtype].replace('float32', 'float')}() before export) to "
                                 "control the conversion.", tensors=_names(names)))
        else:
            found.append(Finding("error", "EK-TRT-DTYPE", f"{len(names)} {dtype} tensor(s) ({_listed(names)}): "
                                 f"{s.label} does not support {dtype}.", "Compute this part outside the engine "
                                 "(pre/post-processing) or change it to a supported type "
                                 f"({', '.join(sorted(d.supported))}).",
                                 tensors=_names(names)))
    return found


def _int64(model: onnx.ModelProto, info: ModelInfo, s: VersionSupport) -> list[Finding]:
    io64 = [t.name for t in (*info.inputs, *info.outputs) if t.dtype == "int64"]
    n_weights, wide = info.int64_initializers, list(info.int64_out_of_int32_names)
    if not (io64 or n_weights):
        return []
    what = " and ".join(([f"{n_weights} INT64 weight(s)"] if n_weights else [])
                        + ([f"INT64 inputs/outputs {_listed(io64)}"] if io64 else []))
    found = []
    if s.int64 == "cast-to-int32":
        found.append(Finding("info", "EK-TRT-INT64", f"{what}: {s.label} has no INT64, the parser casts INT64 "
                             "weights to INT32 (one warning each) and INT64 inputs/outputs are bound as INT32.",
                             "Convert ahead of time with enginekit prepare (INT64->INT32 pass) and feed int32 data.",
                             tensors=_names(io64)))
        if wide:
            found.append(Finding("warning", "EK-TRT-INT64-RANGE", f"{info.int64_out_of_int32} INT64 weight(s) hold "
                                 f"values outside int32 ({_listed(wide)}): {s.label} clamps them to +-(2**31-1). "
                                 "Harmless for Slice ends such as INT64_MAX; wrong results anywhere else.",
                                 "Run enginekit prepare (INT64->INT32 pass) and check the tensors it reports, or "
                                 "change the model so these values fit in int32.", tensors=_names(wide)))
    else:
        extra = f" Values outside int32 in {_listed(wide)} are kept (TensorRT < 9 would clamp them)." if wide else ""
        found.append(Finding("info", "EK-TRT-INT64", f"{what}: INT64 is native in {s.label} (TensorRT >= 9): weights "
                             f"keep their values; INT64 inputs/outputs need int64 buffers.{extra}",
                             "No action needed; enginekit prepare (INT64->INT32 pass) makes the model portable to "
                             "TensorRT 8.x.", tensors=_names(io64 + wide)))
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
        tensors=_names(names))]


def _shared_dim_names(model: onnx.ModelProto, shapes: Shapes, s: VersionSupport) -> list[Finding]:
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
        tensors = _names([t for t, _ in shared.dims])
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
            flagged.append(_label(node))
            reasons.append(f"{node.op_type} '{_label(node)}' (output size depends on values)")
        elif node.op_type == "Constant":
            val, shp = False, False
        else:
            val = any(values.get(i, False) for i in [*ins, *outer])
            shp = dd_in
            for idx in SHAPE_INPUTS.get(node.op_type, ()) if node.domain in _DEFAULT else ():
                if idx < len(node.input) and node.input[idx] and values.get(node.input[idx], False):
                    shp = True
                    flagged.append(_label(node))
                    reasons.append(f"{node.op_type} '{_label(node)}' (input '{node.input[idx]}' is computed from "
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
        nodes=_names(flagged))]


def _subgraph_inputs(node: onnx.NodeProto) -> list[str]:
    names: list[str] = []
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            names += [i for n in _walk(sub) for i in n.input if i]
    return names


# --- the real parser -------------------------------------------------------------------------------------


def _run_parser(path: Path, model: onnx.ModelProto, target: str, version: str | None
                ) -> tuple[ParseResult | None, str, list[Finding]]:
    from enginekit.graph import trt_parser

    prefer = ("tensorrt_rtx", "tensorrt") if target == TENSORRT_RTX else ("tensorrt", "tensorrt_rtx")
    module = trt_parser.installed_parser(prefer)
    if module is None:
        note = ("Real parser not run: neither tensorrt nor tensorrt_rtx is installed "
                "(pip install 'enginekit[tensorrt-rtx]').")
        return None, note, [Finding("info", "EK-TRT-PARSER-SKIPPED", note, "Install tensorrt or tensorrt-rtx to "
                                    "confirm these findings with the real ONNX parser.")]
    try:
        result = trt_parser.parse_onnx(path, module=module)
    except (BackendError, MissingDependencyError) as exc:
        note = f"Real parser not run: {exc.message}"
        return None, note, [Finding("info", "EK-TRT-PARSER-SKIPPED", note, "Check the install: enginekit doctor.")]
    matches = trt_parser.matches_target(module, result.version, target, version)
    note = ""
    if matches and module == "tensorrt_rtx" and target == TENSORRT:
        note = "tensorrt is not installed: the TensorRT-RTX parser (built on TensorRT 10) stands in for it."
    if not matches:
        note = (f"The installed parser is {module} {result.version}, not the targeted {target}"
                f"{'==' + version if version else ''}: its errors are reported as warnings.")
    if result.cuda_errors_logged:
        note += (" The parser logged CUDA errors (no usable GPU here): errors from its shape analysis may come "
                 "from that rather than from the model.")
    labels = [_label(n) for n in model.graph.node]
    findings = []
    for issue in result.errors:
        node = issue.node_name or (labels[issue.node_index] if 0 <= issue.node_index < len(labels) else "")
        where = f"{issue.node_operator or 'node'} '{node}'" if node else "graph inputs/initializers"
        findings.append(Finding(
            "error" if matches else "warning", "EK-TRT-PARSER",
            f"{module} {result.version} parser, {where}: {issue.desc} ({issue.code})",
            trt_parser.fix_for(issue.code), nodes=(node,) if node else ()))
    return result, note.strip(), findings
