"""The precision plan (``plan.json``): the target precision and the nodes kept in FP32 ("FP32 islands").

Written by the precision debugger, read by :func:`enginekit.graph.precision.convert_precision` and by the backends
that honour ``--precision-plan``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from enginekit.errors import InvalidArgumentError, UnknownNameError
from enginekit.registry import REDUCED_FLOAT_PRECISIONS

PRECISIONS: tuple[str, ...] = REDUCED_FLOAT_PRECISIONS  # low-precision conversion targets
PLAN_PRECISIONS: tuple[str, ...] = (*PRECISIONS, "int8")  # int8 plans: nodes left out of quantization
WIDE = "fp64"  # convert_precision's other target: the float64 reference of the precision debugger
PLAN_VERSION = 1


@dataclass(frozen=True)
class PlanEntry:
    """One node kept in FP32: its ONNX node name, why, and the measurements that led there."""

    node: str
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from enginekit.compare.result import json_safe

        return {"node": self.node, "reason": self.reason, "evidence": json_safe(dict(self.evidence))}


@dataclass(frozen=True)
class PrecisionPlan:
    """Target precision and the nodes that stay FP32; shared with the precision debugger as ``plan.json``."""

    precision: str
    keep_fp32: tuple[PlanEntry, ...] = ()
    version: int = PLAN_VERSION
    source: str = ""

    def __post_init__(self) -> None:
        check_precision(self.precision, "plan precision", PLAN_PRECISIONS)
        if self.version != PLAN_VERSION:
            raise InvalidArgumentError(f"Precision plan version {self.version!r} is not supported "
                                       f"(this enginekit reads version {PLAN_VERSION}).")
        entries: dict[str, PlanEntry] = {}
        for entry in self.keep_fp32:
            entries.setdefault(entry.node, entry)  # a node listed twice: the first entry wins
        object.__setattr__(self, "keep_fp32", tuple(entries.values()))

    def node_names(self) -> list[str]:
        return [e.node for e in self.keep_fp32]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "precision": self.precision,
                "keep_fp32": [e.to_dict() for e in self.keep_fp32], "source": self.source}

    @classmethod
    def from_dict(cls, data: object, *, where: str = "precision plan") -> PrecisionPlan:
        """Build a plan from parsed JSON; InvalidArgumentError names the malformed field."""
        if not isinstance(data, dict):
            raise InvalidArgumentError(f"{where}: expected a JSON object, got {type(data).__name__}.")
        unknown = sorted(set(data) - {"version", "precision", "keep_fp32", "source"})
        if unknown:
            raise InvalidArgumentError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
                                       "expected version, precision, keep_fp32, source.")
        version = data.get("version", PLAN_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise InvalidArgumentError(f"{where}: 'version' must be an integer, got {version!r}.")
        precision = data.get("precision")
        if not isinstance(precision, str):
            raise InvalidArgumentError(f"{where}: 'precision' must be one of {', '.join(PLAN_PRECISIONS)}, "
                                       f"got {precision!r}.")
        source = data.get("source", "")
        if not isinstance(source, str):
            raise InvalidArgumentError(f"{where}: 'source' must be a string, got {source!r}.")
        raw = data.get("keep_fp32", [])
        if not isinstance(raw, list):
            raise InvalidArgumentError(f"{where}: 'keep_fp32' must be a list, got {type(raw).__name__}.")
        entries = tuple(_entry_from(item, f"{where}: keep_fp32[{i}]") for i, item in enumerate(raw))
        try:
            return cls(precision, entries, version, source)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{where}: {exc.message}", hint=exc.hint) from exc


def _entry_from(item: object, where: str) -> PlanEntry:
    if isinstance(item, str):
        item = {"node": item}  # a bare node name is accepted for hand-written plans
    if not isinstance(item, dict):
        raise InvalidArgumentError(f"{where} must be an object with 'node', got {type(item).__name__}.")
    node, reason, evidence = item.get("node"), item.get("reason", ""), item.get("evidence", {})
    if not isinstance(node, str) or not node:
        raise InvalidArgumentError(f"{where}.node must be a non-empty string (an ONNX node name), got {node!r}.")
    if not isinstance(reason, str):
        raise InvalidArgumentError(f"{where}.reason must be a string, got {reason!r}.")
    if not isinstance(evidence, dict):
        raise InvalidArgumentError(f"{where}.evidence must be an object, got {type(evidence).__name__}.")
    extra = sorted(set(item) - {"node", "reason", "evidence"})
    if extra:
        raise InvalidArgumentError(f"{where}: unknown field(s) {', '.join(map(repr, extra))}.")
    return PlanEntry(node, reason, dict(evidence))


def load_plan(path: str | Path) -> PrecisionPlan:
    """Read ``plan.json``; InvalidArgumentError says what is wrong with a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(f"Precision plan {str(p)!r} does not exist or is not a file.")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"Precision plan {str(p)!r} is not valid JSON: {exc.msg} at line {exc.lineno} "
                                   f"column {exc.colno}.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"Cannot read precision plan {str(p)!r}: {exc}.") from exc
    return PrecisionPlan.from_dict(data, where=f"precision plan {str(p)!r}")


def save_plan(plan: PrecisionPlan, path: str | Path) -> Path:
    """Write ``plan`` as JSON atomically (temp file + rename)."""
    from enginekit.fileutil import atomic_write_text

    return atomic_write_text(path, json.dumps(plan.to_dict(), indent=2, allow_nan=False) + "\n")


def check_plan_nodes(plan: PrecisionPlan, model: onnx.ModelProto) -> None:
    """Raise UnknownNameError (with a suggestion) when the plan names nodes the model's graph lacks."""
    from enginekit.errors import did_you_mean

    known = [n.name for n in model.graph.node if n.name]
    known_set = set(known)
    unknown = [name for name in plan.node_names() if name not in known_set]
    if unknown:
        shown = "; ".join(f"{name!r}{did_you_mean(name, known)}" for name in unknown[:5])
        more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise UnknownNameError(
            f"The precision plan keeps {len(unknown)} node(s) in FP32 that the model does not have: {shown}{more}. "
            f"The model has {len(known)} named nodes.",
            hint="Plan entries are ONNX node names (see `enginekit inspect`); was the plan made for another model?")


def check_precision(precision: str, what: str, allowed: Sequence[str] = PRECISIONS) -> None:
    if precision not in allowed:
        from enginekit.errors import did_you_mean

        raise InvalidArgumentError(f"{what} {precision!r} is not one of {', '.join(allowed)}"
                                   f"{did_you_mean(str(precision), allowed)}.")
