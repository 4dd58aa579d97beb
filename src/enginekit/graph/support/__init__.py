"""What each target's ONNX parser supports, as data (``tensorrt.json``), and target/version name parsing.

The JSON table lists per TensorRT (and TensorRT-RTX) parser version the ONNX operators it imports, the
opsets it reads, the data types it accepts and the documented restrictions, each with its source.
A version entry may name a ``base`` version and list only what it ``add``s or ``remove``s.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from enginekit.errors import UnknownNameError

TENSORRT = "tensorrt"
TENSORRT_RTX = "tensorrt-rtx"
TARGETS: tuple[str, ...] = (TENSORRT, TENSORRT_RTX, "ort", "openvino")
TARGET_ALIASES: dict[str, str] = {
    "trt": TENSORRT,
    "tensorrt_rtx": TENSORRT_RTX,
    "trt-rtx": TENSORRT_RTX,
    "trt_rtx": TENSORRT_RTX,
    "rtx": TENSORRT_RTX,
    "onnxruntime": "ort",
    "ov": "openvino",
}
TABLE_TARGETS = (TENSORRT, TENSORRT_RTX)  # targets with a support table; the others get the generic checks

_VERSION_RE = re.compile(r"^\d+(\.\d+)*$")


@dataclass(frozen=True)
class AttributeRule:
    """An attribute of ``ops`` must take one of ``allowed`` values (``default`` when the attribute is absent)."""

    ops: tuple[str, ...]
    attribute: str
    allowed: tuple[str | int, ...]
    default: str | int
    severity: str = "error"
    note: str = ""


@dataclass(frozen=True)
class DtypeSupport:
    supported: frozenset[str]
    io_only: frozenset[str]  # allowed only as network inputs/outputs
    cast_down: dict[str, str]  # dtype -> the dtype the parser converts it to
    note: str = ""


@dataclass(frozen=True)
class VersionSupport:
    """One parser version's support, with the base version (if any) already applied."""

    target: str
    version: str  # the table key: "8.5", "8.6", "10", "11", "1" (tensorrt-rtx)
    source: str  # a key of the table's "sources"
    source_text: str
    note: str
    assumed: bool  # no matrix of this version was available: copied from another one
    min_opset: int | None
    max_opset: int | None
    max_opset_exact: bool
    int64: str  # "cast-to-int32" (TensorRT < 9) or "native"
    local_functions: bool
    ops: frozenset[str]
    unsupported: frozenset[str]
    unsupported_notes: dict[str, str]
    since: dict[str, tuple[str, bool]]  # op -> (first version with it, whether that version is exact)
    restrictions: dict[str, str]
    fixes: dict[str, str]
    const_inputs: dict[str, tuple[int, str]]  # op -> (input index, input name) that must be an initializer
    attribute_rules: tuple[AttributeRule, ...]
    max_outputs: dict[str, int]
    dtypes: DtypeSupport = field(repr=False)

    @property
    def label(self) -> str:
        name = "TensorRT-RTX" if self.target == TENSORRT_RTX else "TensorRT"
        return f"{name} {self.version}" + (".x" if "." not in self.version else "")


@cache
def load_table() -> dict[str, Any]:
    """The parsed ``tensorrt.json`` (cached; treat as read-only)."""
    text = resources.files(__package__).joinpath("tensorrt.json").read_text(encoding="utf-8")
    table: dict[str, Any] = json.loads(text)
    return table


def table_versions(target: str) -> list[str]:
    return list(load_table()["targets"][target]["versions"])


def normalize_target(name: str) -> str:
    """Canonical target name; raises :class:`UnknownNameError` with a suggestion for unknown names."""
    from enginekit.errors import did_you_mean

    key = name.strip().lower()
    key = TARGET_ALIASES.get(key, key)
    if key not in TARGETS:
        raise UnknownNameError(
            f"Unknown lint target {name!r}{did_you_mean(key, [*TARGETS, *TARGET_ALIASES])}",
            hint=f"Choose one of {', '.join(TARGETS)}; TensorRT takes a version: tensorrt==8.5|8.6|10|11.",
        )
    return key


def parse_target(text: str) -> tuple[str, str | None]:
    """``tensorrt==8.5`` -> ("tensorrt", "8.5"); ``tensorrt-rtx`` -> ("tensorrt-rtx", None)."""
    from enginekit.errors import InvalidArgumentError

    name, sep, version = text.partition("==")
    if not sep and "=" in text:
        raise InvalidArgumentError(f"--target {text!r}: write a version as NAME==VERSION, e.g. tensorrt==8.5.")
    target = normalize_target(name)
    version = version.strip()
    if sep and not _VERSION_RE.match(version):
        raise InvalidArgumentError(f"--target {text!r}: version {version!r} is not a number like 8.5 or 10.")
    return target, (version or None)


def table_key(target: str, version: str) -> str:
    """The support-table key of ``version`` ("8.5.3" -> "8.5", "10.3" -> "10", "1.7.1" -> "1")."""
    from enginekit.errors import did_you_mean

    keys = table_versions(target)
    parts = version.split(".")
    for n in (2, 1):  # most specific key first
        candidate = ".".join(parts[:n])
        if len(parts) >= n and candidate in keys:
            return candidate
    shown = "tensorrt-rtx" if target == TENSORRT_RTX else "tensorrt"
    raise UnknownNameError(
        f"{shown}=={version} is not in the support table (versions: {', '.join(keys)}){did_you_mean(version, keys)}",
        hint=f"Use one of {', '.join(f'{shown}=={k}' for k in keys)}, or leave the version out.",
    )


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def version_support(target: str, key: str) -> VersionSupport:
    """The support of table version ``key`` of ``target`` (a base version's fields are inherited)."""
    table = load_table()
    raw = _merged(table["targets"][target]["versions"], key)
    source = str(raw.get("source", ""))
    dt = raw["dtypes"]
    return VersionSupport(
        target=target,
        version=key,
        source=source,
        source_text=str(table["sources"].get(source, source)),
        note=str(raw.get("note", "")),
        assumed=bool(raw.get("assumed", False)),
        min_opset=raw.get("min_opset"),
        max_opset=raw.get("max_opset"),
        max_opset_exact=bool(raw.get("max_opset_exact", True)),
        int64=str(raw["int64"]),
        local_functions=bool(raw["local_functions"]),
        ops=frozenset(raw["ops"]),
        unsupported=frozenset(raw.get("unsupported", [])),
        unsupported_notes=dict(raw.get("unsupported_notes", {})),
        since={op: (str(v["version"]), bool(v["exact"])) for op, v in raw.get("since", {}).items()},
        restrictions=dict(raw.get("restrictions", {})),
        fixes=dict(raw.get("fixes", {})),
        const_inputs={op: (int(v[0]), str(v[1])) for op, v in raw.get("const_inputs", {}).items()},
        attribute_rules=tuple(
            AttributeRule(
                ops=tuple(r["ops"]),
                attribute=r["attribute"],
                allowed=tuple(r["allowed"]),
                default=r["default"],
                severity=r.get("severity", "error"),
                note=r.get("note", ""),
            )
            for r in raw.get("attribute_rules", [])
        ),
        max_outputs=dict(raw.get("max_outputs", {})),
        dtypes=DtypeSupport(
            supported=frozenset(dt["supported"]),
            io_only=frozenset(dt.get("io_only", [])),
            cast_down=dict(dt.get("cast_down", {})),
            note=str(dt.get("note", "")),
        ),
    )


def _merged(versions: dict[str, Any], key: str) -> dict[str, Any]:
    entry = dict(versions[key])
    base_key = entry.pop("base", None)
    if base_key is None:
        return entry
    merged = _merged(versions, base_key)
    ops = (set(merged["ops"]) | set(entry.pop("add", []))) - set(entry.get("remove", []))
    removed = set(entry.pop("remove", []))
    merged["ops"] = sorted(ops)
    merged["unsupported"] = sorted((set(merged.get("unsupported", [])) - ops) | removed)
    merged.update(entry)
    return merged
