"""Opening an onnxruntime session, in one place: every ``InferenceSession`` enginekit creates comes from here.

Each caller keeps its own options (providers, graph optimization level, log severity, threads, where to save
the optimized model). onnxruntime is imported only when a session is opened. This module imports nothing of
enginekit but ``deps``, so any layer (graph, debug, export, backends) may use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from enginekit.deps import require

# --ort-graph-optimization names → onnxruntime.GraphOptimizationLevel members
GRAPH_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                "all": "ORT_ENABLE_ALL"}
CPU_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)
Provider = str | tuple[str, dict[str, Any]]  # a provider name, or (name, provider options)


def ort_session(
    model: bytes | str | Path,
    *,
    purpose: str,
    providers: Sequence[Provider] = CPU_PROVIDERS,
    graph_optimization: str | None = None,
    log_severity: int | None = None,
    default_logger_severity: int | None = None,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    optimized_model_path: Path | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` over ``model`` (serialized bytes, or a file path).

    ``graph_optimization`` is a key of GRAPH_LEVELS (None: onnxruntime's default, all); ``log_severity`` is the
    session's log level and ``default_logger_severity`` onnxruntime's process-wide one (None: left as they are;
    4 silences errors that come back as exceptions anyway); threads of 0 keep onnxruntime's choice;
    ``optimized_model_path`` asks onnxruntime to write the optimized model there. ``purpose`` names the feature
    in the error raised when onnxruntime is not installed. onnxruntime's own load errors propagate.
    """
    ort = require("onnxruntime", purpose=purpose)
    if default_logger_severity is not None:
        ort.set_default_logger_severity(default_logger_severity)
    opts = ort.SessionOptions()
    if log_severity is not None:
        opts.log_severity_level = log_severity
    if graph_optimization is not None:
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_LEVELS[graph_optimization])
    if intra_op_threads:
        opts.intra_op_num_threads = intra_op_threads
    if inter_op_threads:
        opts.inter_op_num_threads = inter_op_threads
    if optimized_model_path is not None:
        opts.optimized_model_filepath = str(optimized_model_path)
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=opts, providers=list(providers))
