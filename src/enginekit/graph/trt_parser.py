"""Run the real TensorRT ONNX parser (``tensorrt`` or ``tensorrt_rtx``) on a model file and collect its errors.

Only the parser runs: no engine is built, so this works where the library imports (TensorRT-RTX parses on a
CPU-only machine). The library is imported lazily. TensorRT-RTX networks are always strongly typed
(``create_network(0)`` already has ``STRONGLY_TYPED`` set); TensorRT 8.x needs the ``EXPLICIT_BATCH`` flag.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginekit.deps import is_installed, require
from enginekit.errors import BackendError

logger = logging.getLogger(__name__)

PARSER_MODULES: tuple[str, ...] = ("tensorrt", "tensorrt_rtx")
MAX_LOG_LINES = 50


@dataclass(frozen=True)
class ParserIssue:
    """One ``IParserError``: its ErrorCode name, description, node (index -1: graph inputs/initializers)."""

    code: str
    desc: str
    node_index: int
    node_name: str
    node_operator: str
    location: str  # parser source file:function:line, for bug reports

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "desc": self.desc,
            "node_index": self.node_index,
            "node_name": self.node_name,
            "node_operator": self.node_operator,
            "location": self.location,
        }


@dataclass(frozen=True)
class ParseResult:
    library: str  # module name: tensorrt or tensorrt_rtx
    version: str
    ok: bool
    errors: tuple[ParserIssue, ...]
    num_layers: int
    log: tuple[str, ...]  # warnings and errors the parser logged (first MAX_LOG_LINES)
    cuda_errors_logged: bool  # the library logged CUDA errors (no usable GPU here)
    duration_s: float

    def summary(self) -> str:
        state = f"parsed OK ({self.num_layers} layers)" if self.ok else f"{len(self.errors)} parser error(s)"
        return f"{self.library} {self.version}: {state}"

    def to_dict(self) -> dict[str, object]:
        return {
            "library": self.library,
            "version": self.version,
            "ok": self.ok,
            "num_errors": len(self.errors),
            "errors": [e.to_dict() for e in self.errors],
            "num_layers": self.num_layers,
            "log": list(self.log),
            "cuda_errors_logged": self.cuda_errors_logged,
            "duration_s": round(self.duration_s, 3),
        }


def installed_parser(prefer: Sequence[str] = PARSER_MODULES) -> str | None:
    """The first of ``prefer`` that is installed (found without importing it), or None."""
    return next((m for m in prefer if is_installed(m)), None)


def parse_onnx(path: str | Path, *, module: str = "tensorrt") -> ParseResult:
    """Parse the ONNX file at ``path`` with ``module``'s ``OnnxParser`` (external data is read beside it).

    Raises:
        MissingDependencyError: ``module`` is not installed or fails to import.
        BackendError: the library could not create a builder or network here (not a model problem).
    """
    trt = require(module, purpose="parsing ONNX models with TensorRT")
    version = str(getattr(trt, "__version__", "?"))
    messages: list[tuple[int, str]] = []
    trt_logger = _make_logger(trt, messages)
    start = time.perf_counter()
    try:
        builder = trt.Builder(trt_logger)
        network = builder.create_network(_network_flags(trt, module, version))
        parser = trt.OnnxParser(network, trt_logger)
    except Exception as exc:  # noqa: BLE001 - native library: any failure here is environmental
        raise BackendError(f"{module} {version} could not create a builder/network/parser here: {exc}") from exc
    if builder is None or network is None or parser is None:
        log = "; ".join(m for _, m in messages[-3:])
        raise BackendError(f"{module} {version} could not create a builder/network/parser here. {log}".strip())
    printed: list[str] = []
    try:
        with _native_output(printed):
            ok = bool(parser.parse_from_file(str(path)))
        errors = tuple(_issue(parser.get_error(i)) for i in range(int(parser.num_errors)))
    except Exception as exc:  # noqa: BLE001 - report a crash of the parser as one error
        ok, errors = False, (ParserIssue("EXCEPTION", f"{type(exc).__name__}: {exc}", -1, "", "", ""),)
    duration = time.perf_counter() - start
    severe = printed + [m for sev, m in messages if sev <= _severity(trt, "WARNING")]
    result = ParseResult(
        library=module,
        version=version,
        ok=ok and not errors,
        errors=errors,
        num_layers=int(network.num_layers),
        log=tuple(severe[:MAX_LOG_LINES]),
        cuda_errors_logged=any("cuda" in m.lower() and "error" in m.lower() for m in severe),
        duration_s=duration,
    )
    logger.info("%s parsed %s in %.2f s: %s", module, path, duration, result.summary())
    return result


def matches_target(module: str, lib_version: str, target: str, version: str | None) -> bool:
    """Whether ``module`` at ``lib_version`` is the parser of lint target ``target`` (``version``: as asked).

    TensorRT-RTX stands for an unversioned ``tensorrt`` target (it is the TensorRT 10 parser) but not for a
    pinned version; a ``tensorrt`` library matches when its support-table entry is the targeted one.
    """
    from enginekit.graph.support import TENSORRT, TENSORRT_RTX, table_key

    if module == "tensorrt_rtx":
        return target == TENSORRT_RTX or (target == TENSORRT and version is None)
    if target != TENSORRT:
        return False
    try:
        return version is None or table_key(TENSORRT, lib_version) == table_key(TENSORRT, version)
    except Exception:  # noqa: BLE001 - a library version the table lacks
        return False


_FIXES = {
    "UNSUPPORTED_NODE": "Replace the op (or the input/dtype the message names) with supported ones, or add a plugin.",
    "UNSUPPORTED_NODE_ATTR": "Re-export the node with supported attribute values.",
    "UNSUPPORTED_NODE_INPUT": "Make the named input a constant or a supported type.",
    "UNSUPPORTED_NODE_DATATYPE": "Cast to a supported data type before the node, or re-export in float32.",
    "UNSUPPORTED_NODE_DYNAMIC": "Make the named dims static (fix the input shapes) or give profiles.",
    "UNSUPPORTED_NODE_SHAPE": "Reshape the tensor to a supported rank/shape in the model.",
    "INVALID_NODE": "For custom ops: register and load the TensorRT plugin; otherwise fix the node in the export.",
    "INVALID_GRAPH": "Fix the graph (run the ONNX checker and shape inference) and re-export.",
    "MODEL_DESERIALIZE_FAILED": "The file is not a valid ONNX model for this parser: re-export it.",
}


def fix_for(code: str) -> str:
    """What to try for a parser ErrorCode name."""
    return _FIXES.get(code, "See the other findings for this node; the parser's message names the failing check.")


@contextlib.contextmanager
def _native_output(sink: list[str]) -> Iterator[None]:
    """Collect what native code writes straight to file descriptors 1 and 2 (it would spoil --json output)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved: list[tuple[int, int]] = []
    with tempfile.TemporaryFile() as tmp:
        try:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(tmp.fileno(), fd)
        except OSError:  # no usable descriptors (embedded interpreter): leave the output alone
            pass
        try:
            yield
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            tmp.seek(0)
            sink += [line for line in tmp.read().decode("utf-8", errors="replace").splitlines() if line.strip()]


def _network_flags(trt: Any, module: str, version: str) -> int:
    if module == "tensorrt_rtx":
        return 0  # strongly typed by default; there is no other creation flag
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 10
    flags = trt.NetworkDefinitionCreationFlag
    if major < 10 and hasattr(flags, "EXPLICIT_BATCH"):  # required for ONNX before TensorRT 10
        return 1 << int(flags.EXPLICIT_BATCH)
    return 0


def _severity(trt: Any, name: str) -> int:
    return int(getattr(trt.ILogger.Severity, name))


def _make_logger(trt: Any, sink: list[tuple[int, str]]) -> Any:
    """An ``ILogger`` that keeps messages (the stock ``trt.Logger`` prints to stdout, which would spoil --json)."""

    class _Collect(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            sink.append((int(severity), str(msg)))
            logger.debug("%s: %s", module_name, msg)

    module_name = getattr(trt, "__name__", "tensorrt")
    return _Collect()


def _issue(err: Any) -> ParserIssue:
    def call(name: str, default: Any) -> Any:
        fn = getattr(err, name, None)
        try:
            return fn() if callable(fn) else default
        except Exception:  # noqa: BLE001 - older versions lack some accessors
            return default

    code = call("code", "?")
    code_name = str(getattr(code, "name", code)).rsplit(".", 1)[-1]
    location = ":".join(str(p) for p in (call("file", ""), call("func", ""), call("line", "")) if p not in ("", None))
    return ParserIssue(
        code=code_name,
        desc=str(call("desc", str(err))),
        node_index=int(call("node", -1)),
        node_name=str(call("node_name", "")),
        node_operator=str(call("node_operator", "")),
        location=location,
    )
