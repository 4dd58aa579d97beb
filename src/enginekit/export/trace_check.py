"""The TorchScript tracer's own warnings, recorded while exporting and sorted into data- and shape-dependent.

Tracing runs ``forward`` once in Python. Where the code turns a tensor into a Python value (``if x.sum() > 0``,
``float(x.max())``, ``.item()``, ``.numpy()``) the tracer warns (``torch.jit.TracerWarning``) and records the
value it saw as a constant: the ONNX graph then takes the traced branch, or uses the traced number, for every
input. Such a warning is a verification failure when the converted value depends on the *values* of a model
input; when it depends only on shapes (``assert x.shape[1] == 3``, torch's own checks in multi-head attention)
it is kept as a note, since verification at another size of every dynamic axis covers it.

The tracer does not say which tensor it converted. The value converted is the one just computed, so the last
node recorded in the trace graph at the time of the warning is taken as its producer, and its inputs are
followed back: a path to a model input that does not pass through a shape query (``aten::size``) makes it
data-dependent. When the producer cannot be told (no node yet, or it is not a one-element tensor) the warning
counts as data-dependent: a false alarm is cheaper than a wrong model shipped.
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Graph operators whose result depends on a tensor's shape, type or device only, never on its values.
SHAPE_OPS = frozenset({"aten::size", "aten::dim", "aten::numel", "aten::sym_size", "aten::sym_numel",
                       "prim::shape", "prim::device", "prim::dtype", "prim::layout", "aten::len"})

#: Warning texts about Python values taken from tensors (the data-dependence check applies to them).
_CONVERSIONS = ("Converting a tensor to a Python", "Converting a tensor to a NumPy array")
#: Warning texts that concern shapes only: the loop count of ``for row in x`` and ``len(x)``, and constants
#: made with torch.tensor() from Python values (a data-dependent Python value has warned already).
_SHAPE_ONLY = ("Iterating over a tensor", "Using len to get tensor shape", "results are registered as constants")

DATA, SHAPE = "data", "shape"


@dataclass
class TraceWarning:
    """One place where tracing took a Python value (aggregated over repeated hits)."""

    kind: str  # DATA (a failure) or SHAPE (a note)
    message: str  # the tracer's first sentence, e.g. "Converting a tensor to a Python boolean might ..."
    file: str  # where the warning was raised
    line: int
    code: str  # that source line, stripped ("" when unreadable)
    model_file: str = ""  # the model's own frame that led there, when the warning was raised in torch
    model_line: int = 0
    count: int = 1

    @property
    def where(self) -> str:
        text = f"{display_path(self.file)}:{self.line}"
        if self.model_file and (self.model_file, self.model_line) != (self.file, self.line):
            text += f" (called from {display_path(self.model_file)}:{self.model_line})"
        return text

    def describe(self, message: bool = True) -> str:
        """``file:line `code`: message (2x)``."""
        text = self.where + (f" `{self.code}`" if self.code else "")
        if message:
            text += f": {self.message}"
        return text + (f" ({self.count}x)" if self.count > 1 else "")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "file": self.file, "line": self.line,
                "code": self.code, "model_file": self.model_file, "model_line": self.model_line,
                "count": self.count}


@dataclass
class TraceRecorder:
    """Collects the tracer's warnings; ``n_inputs`` leading graph inputs are the model's inputs."""

    n_inputs: int
    warnings: list[TraceWarning] = field(default_factory=list)

    @property
    def data_dependent(self) -> list[TraceWarning]:
        return [w for w in self.warnings if w.kind == DATA]

    @property
    def shape_dependent(self) -> list[TraceWarning]:
        return [w for w in self.warnings if w.kind == SHAPE]

    def add(self, message: str, filename: str, lineno: int, kind: str, frame: Any) -> None:
        head = _first_sentence(message)
        for w in self.warnings:
            if (w.file, w.line, w.message) == (filename, lineno, head):
                w.count += 1
                return
        model_file, model_line = _model_frame(frame)
        self.warnings.append(TraceWarning(kind, head, filename, lineno, _source_line(filename, lineno),
                                          model_file, model_line))


@contextlib.contextmanager
def record_trace_warnings(n_inputs: int) -> Iterator[TraceRecorder]:
    """Silence every other warning and record the tracer's, classified, while the block runs."""
    import torch
    from torch.jit._trace import TracerWarning

    recorder = TraceRecorder(n_inputs)

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if not issubclass(category, TracerWarning):
            return
        text = str(message)
        state = torch._C._get_tracing_state()
        if text.startswith(_SHAPE_ONLY):
            kind = SHAPE
        elif text.startswith(_CONVERSIONS) and state is not None:
            try:
                kind = DATA if converted_value_depends_on_data(state.graph(), n_inputs) else SHAPE
            except Exception:  # noqa: BLE001 - torch's graph API changed: count it, never break the export
                kind = DATA
        else:  # any other tracer warning ("might cause the trace to be incorrect"): not known to be harmless
            kind = DATA
        recorder.add(text, filename, lineno, kind, sys._getframe(1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # torch ignores tracer warnings raised inside torch by default (TracerWarning.ignore_lib_warnings);
        # record them too: a data-dependent branch in torch's code is as wrong in the graph as one in the model's
        warnings.simplefilter("always", TracerWarning)
        warnings.showwarning = show
        yield recorder


def converted_value_depends_on_data(graph: Any, n_inputs: int) -> bool:
    """Whether the value the tracer just converted depends on the values of the first ``n_inputs`` inputs."""
    node = _last_node(graph.block())
    if node is None:
        return True
    outputs = list(node.outputs())
    if len(outputs) != 1 or _numel(outputs[0]) not in (1, None):
        return True  # not the producer of a one-element tensor: cannot tell what was converted
    data = {v.unique() for v in list(graph.inputs())[:n_inputs]}
    seen: set[int] = set()
    stack = [outputs[0]]
    while stack:
        value = stack.pop()
        if value.unique() in seen:
            continue
        seen.add(value.unique())
        if value.unique() in data:
            return True
        producer = value.node()
        if producer.kind() in SHAPE_OPS or producer.kind() == "prim::Param":
            continue  # a shape query, or a graph input that is a parameter (weights are constants)
        stack.extend(producer.inputs())
    return False


def _last_node(block: Any) -> Any:
    """The node recorded last, looking inside the blocks of a submodule's forward that is still open."""
    nodes = list(block.nodes())
    if not nodes:
        return None
    node = nodes[-1]
    blocks = list(node.blocks())
    if blocks:
        inner = _last_node(blocks[-1])
        if inner is not None:
            return inner
        if not list(node.outputs()):
            return None  # an open submodule forward with nothing recorded in it yet
    return node


def _numel(value: Any) -> int | None:
    try:
        sizes = value.type().sizes()
    except (AttributeError, RuntimeError):
        return None
    if sizes is None:
        return None
    n = 1
    for s in sizes:
        if s is None:
            return None
        n *= int(s)
    return n


def display_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, else as it is."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith(os.pardir) else rel


def _first_sentence(message: str) -> str:
    text = " ".join(message.split())
    end = text.find(". ")
    return text[: end + 1] if end > 0 else text


def _source_line(filename: str, lineno: int) -> str:
    import linecache

    return linecache.getline(filename, lineno).strip()


def _dirs(*paths: str) -> tuple[str, ...]:
    return tuple(os.path.realpath(p) + os.sep for p in paths if p)


def _is_library(filename: str) -> bool:
    """torch, enginekit or the standard library (installed packages such as timm count as model code)."""
    import torch

    import enginekit

    if filename.startswith("<"):
        return True
    path = os.path.realpath(filename)
    paths = sysconfig.get_paths()
    if path.startswith(_dirs(os.path.dirname(torch.__file__), os.path.dirname(enginekit.__file__))):
        return True
    if path.startswith(_dirs(paths.get("purelib", ""), paths.get("platlib", ""))):
        return False
    return path.startswith(_dirs(paths.get("stdlib", ""), paths.get("platstdlib", "")))


def _model_frame(frame: Any) -> tuple[str, int]:
    """The innermost frame outside torch, enginekit and the standard library: the model's code."""
    while frame is not None:
        if not _is_library(frame.f_code.co_filename):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return "", 0
