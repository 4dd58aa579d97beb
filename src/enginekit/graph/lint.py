"""`enginekit lint`: what will break or degrade when an ONNX model meets a target (TensorRT first), each with a fix.

Static checks use the support table ``graph/support/tensorrt.json`` (ops per parser version, opsets, data
types, documented restrictions). When ``tensorrt`` or ``tensorrt_rtx`` is installed the real ONNX parser also
runs (:mod:`enginekit.graph.trt_parser`) and each of its errors becomes a finding. ONNX Runtime and OpenVINO
targets get the generic checks only (model size and external data, custom operator domains, the ONNX checker).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from enginekit.errors import BackendError, MissingDependencyError
from enginekit.graph.dim_names import check_shapes, profile_shapes
from enginekit.graph.inspect import ModelInfo, summarize_model
from enginekit.graph.lint_findings import SEVERITIES, Finding, all_nodes, first_names, node_label, quoted_list
from enginekit.graph.lint_trt import shared_dim_name_checks, trt_checks
from enginekit.graph.load import load_model
from enginekit.graph.schemas import DEFAULT_DOMAINS
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
)
from enginekit.settings import LintSettings

if TYPE_CHECKING:
    import onnx

    from enginekit.graph.trt_parser import ParseResult

__all__ = ["SEVERITIES", "Finding", "LintResult", "lint_model"]

logger = logging.getLogger(__name__)

PROTOBUF_LIMIT = 2**31  # bytes: protobuf cannot serialize or parse a larger message
# Domains each generic target runs without a custom-op library (beyond ai.onnx).
_KNOWN_DOMAINS = {
    "ort": {"ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc"},
    "openvino": {"ai.onnx.ml", "com.microsoft", "org.openvinotoolkit"},
}


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
        findings += trt_checks(model, info, support, version) + shared_dim_name_checks(model, shapes, support)
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
            f"{quoted_list(list(info.external_data_files))}).{over}",
            "Keep the data files next to the .onnx file when copying it: TensorRT reads them relative to the model "
            "(trtexec --onnx=PATH, parser.parse_from_file(PATH)); parsing the model's bytes without its path fails."))
    return found


def _custom_domains_generic(model: onnx.ModelProto, target: str) -> list[Finding]:
    local = {(f.domain, f.name) for f in model.functions}
    by_op: dict[str, list[str]] = defaultdict(list)
    for node in all_nodes(model):
        if node.domain not in DEFAULT_DOMAINS and node.domain not in _KNOWN_DOMAINS.get(target, set()) and (
                (node.domain, node.op_type) not in local):
            by_op[f"{node.domain}::{node.op_type}"].append(node_label(node))
    return [Finding("warning", "EK-CUSTOM-OP",
                    f"Custom operator {op} ({len(nodes)} node(s)) is not built into {target}: it needs a custom-op "
                    "library.", f"Register the custom-op library with {target} before loading the model, or export "
                    "the model with standard ONNX operators.", nodes=first_names(nodes)) for op, nodes in by_op.items()]


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
    labels = [node_label(n) for n in model.graph.node]
    findings = []
    for issue in result.errors:
        node = issue.node_name or (labels[issue.node_index] if 0 <= issue.node_index < len(labels) else "")
        where = f"{issue.node_operator or 'node'} '{node}'" if node else "graph inputs/initializers"
        findings.append(Finding(
            "error" if matches else "warning", "EK-TRT-PARSER",
            f"{module} {result.version} parser, {where}: {issue.desc} ({issue.code})",
            trt_parser.fix_for(issue.code), nodes=(node,) if node else ()))
    return result, note.strip(), findings
