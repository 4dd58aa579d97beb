"""`enginekit prepare`: ONNX graph passes in order, each verified against the ORIGINAL model.

Every pass gets a copy of the current model. Its result is kept only when onnxruntime (CPU, graph
optimizations off, so the graph is run as written) loads it and gives the original model's outputs,
with the same shapes and dtypes, on the same feed (within ``settings.compare``). Otherwise the pass
is *rejected* with the evidence, the previous model is kept and the remaining passes still run.
A pass that raises is *failed*; one that changes nothing is *skipped*. The output is written
atomically in every case; exit code 0 when every pass applied or was a no-op, 1 otherwise.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from enginekit.compare import CompareSettings, compare_outputs, json_safe, validate_tolerance_names
from enginekit.data import InputShape
from enginekit.errors import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EnginekitError,
    InvalidArgumentError,
    UnknownNameError,
    UserError,
)
from enginekit.graph.io import input_specs, output_specs
from enginekit.graph.load import load_model
from enginekit.graph.passes import PASSES, PROTOBUF_LIMIT, PassContext, PassFn, PassOutput, check_fixed_shapes
from enginekit.settings import FeedSettings, PrepareSettings
from enginekit.status import Status
from enginekit.tensors import TensorSpec

log = logging.getLogger(__name__)

#: Models at least this large are written with their weights in ``<output>.data`` next to the .onnx.
EXTERNAL_DATA_THRESHOLD = PROTOBUF_LIMIT
_MAX_REASON = 600


@dataclass(frozen=True)
class PassResult:
    """What one pass did: status applied / rejected / skipped (no change) / failed, and why."""

    name: str
    status: str
    nodes_before: int
    nodes_after: int  # of the model the pass produced (also for a rejected pass: the model thrown away)
    summary: str = ""  # what changed
    reason: str = ""  # why rejected / failed / skipped
    details: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0  # the pass itself
    verify_s: float = 0.0  # onnxruntime load + run + comparison
    verified: bool = False  # outputs were compared with the original's
    comparison: dict[str, Any] | None = None  # CompareResult.to_dict() of the verification

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "summary": self.summary,
            "reason": self.reason,
            "details": json_safe(self.details),
            "duration_s": round(self.duration_s, 4),
            "verify_s": round(self.verify_s, 4),
            "verified": self.verified,
            "comparison": self.comparison,
        }


@dataclass(frozen=True)
class PrepareResult:
    """Every pass in order, the file written and the overall verdict."""

    model: str
    output: str
    external_data: str | None  # file name of the weights beside the output (models over 2 GiB), else None
    passes: tuple[PassResult, ...]
    verify: bool
    inputs: dict[str, dict[str, Any]]  # name -> {"shape", "dtype"} of the verification feed
    nodes_before: int
    nodes_after: int
    compare: CompareSettings = field(default_factory=CompareSettings)

    @property
    def passed(self) -> bool:
        """True when every pass applied or changed nothing."""
        return all(p.status in (Status.APPLIED, Status.SKIPPED) for p in self.passes)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_CHECK_FAILED

    def named(self, name: str) -> PassResult:
        """The first pass row called ``name``."""
        return next(p for p in self.passes if p.name == name)

    @property
    def message(self) -> str:
        where = self.output + (f" (weights in {self.external_data} beside it)" if self.external_data else "")
        if self.passed:
            n_applied = sum(p.status == Status.APPLIED for p in self.passes)
            n_same = sum(p.status == Status.SKIPPED for p in self.passes)
            how = ("each verified against the original model with onnxruntime (CPU)" if self.verify
                   else "NOT verified (--no-verify)")
            return f"Wrote {where}: {n_applied} pass(es) applied, {n_same} without change; {how}."
        bad = [f"{p.name} {p.status}" for p in self.passes if p.status in (Status.REJECTED, Status.FAILED)]
        return (f"Wrote {where} with the passes that survived; {', '.join(bad)}: the model before "
                f"{'it' if len(bad) == 1 else 'each of them'} was kept.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "message": self.message,
            "model": self.model,
            "output": self.output,
            "external_data": self.external_data,
            "verified": self.verify,
            "inputs": self.inputs,
            "tolerances": {"atol": self.compare.atol.default, "rtol": self.compare.rtol.default,
                           "check_error_stat": self.compare.check_error_stat},
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "passes": [p.to_dict() for p in self.passes],
        }


# --- validation of the request ----------------------------------------------------------------


def resolve_passes(settings: PrepareSettings, registry: Mapping[str, PassFn]) -> list[str]:
    """Pass names in run order: fix-input-shapes and opset (when asked for) first, then ``settings.passes``."""
    from enginekit.errors import did_you_mean

    known = list(registry)
    for name in settings.passes:
        if name not in registry:
            raise UnknownNameError(
                f"Unknown pass {name!r}{did_you_mean(name, known)} Known passes: {', '.join(known)}.")
    names = list(settings.passes)
    if settings.target_opset is not None:
        top = onnx.defs.onnx_opset_version()
        if not 1 <= settings.target_opset <= top:
            raise InvalidArgumentError(f"--opset {settings.target_opset}: the installed onnx {onnx.__version__} "
                                       f"converts to opsets 1..{top}.")
        if "opset" not in names:
            names.insert(0, "opset")
    elif "opset" in names:
        raise InvalidArgumentError("The 'opset' pass needs a target: give --opset N.")
    if settings.fix_input_shapes:
        if "fix-input-shapes" not in names:
            names.insert(0, "fix-input-shapes")
    elif "fix-input-shapes" in names:
        raise InvalidArgumentError("The 'fix-input-shapes' pass needs shapes: give --fix-input-shapes NAME:DIMS.")
    for name in names:
        if name not in registry:
            raise UnknownNameError(f"Pass {name!r} is not in the registry given. Known passes: {', '.join(known)}.")
    return names


def _check_output(model_path: Path, output: Path) -> None:
    if output.is_dir():
        raise InvalidArgumentError(f"-o {str(output)!r} is a folder; give the .onnx file to write.")
    parent = next((q for q in output.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InvalidArgumentError(f"Cannot write {str(output)!r}: {str(parent)!r} is a file, not a folder.")
    if output.exists() and model_path.exists() and os.path.samefile(output, model_path):
        raise InvalidArgumentError(f"-o {str(output)!r} is the input model; write the prepared model elsewhere.")
    from enginekit.fileutil import check_output_file

    check_output_file(output, "-o")  # a device or pipe, or a folder that cannot be written


def _feed_plan(settings: PrepareSettings, specs: Sequence[TensorSpec]) -> tuple[FeedSettings, list[TensorSpec]]:
    """The feed settings and input specs of the verification feed: fixed inputs get their fixed shape."""
    fixed = {s.name: s.shape for s in settings.fix_input_shapes}
    feed_specs = [TensorSpec(s.name, fixed[s.name], s.dtype) if s.name in fixed else s for s in specs]
    feeds = settings.feeds
    if fixed and feeds.load_inputs is None:
        given = {i.name: i for i in feeds.inputs}
        for name, shape in fixed.items():
            g = given.get(name)
            if g is not None and g.shape != shape:
                raise InvalidArgumentError(
                    f"--input {g.to_arg()} and --fix-input-shapes {InputShape(name, shape).to_arg()} disagree: "
                    "the verification feed must have the fixed shape (leave --input out for this input).")
        extra = tuple(InputShape(n, s) for n, s in fixed.items() if n not in given)
        feeds = replace(feeds, inputs=feeds.inputs + extra)
    return feeds, feed_specs


# --- verification -----------------------------------------------------------------------------


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= _MAX_REASON else text[:_MAX_REASON] + " ..."
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, EnginekitError) else text


def _ort_session(model: onnx.ModelProto) -> Any:
    from enginekit.ortsession import ort_session

    def session(source: bytes | Path) -> Any:  # the graph run as written
        return ort_session(source, purpose="verifying prepared models", log_severity=3, graph_optimization="disable")

    if model.ByteSize() < PROTOBUF_LIMIT:
        return session(model.SerializeToString())
    with tempfile.TemporaryDirectory(prefix="enginekit-verify-") as tmp:
        path = Path(tmp) / "model.onnx"
        big = onnx.ModelProto()
        big.CopyFrom(model)
        onnx.save_model(big, str(path), save_as_external_data=True, location="model.onnx.data")
        return session(path)


def _run(session: Any, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, dict(feed))
    return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}


def _passes_checker(model: onnx.ModelProto) -> bool:
    if model.ByteSize() >= PROTOBUF_LIMIT:
        return False
    try:
        onnx.checker.check_model(model)
    except Exception:  # noqa: BLE001 - only decides whether results are checked too
        return False
    return True


class _Verifier:
    """Runs candidates on the verification feed and compares them with the original's outputs."""

    def __init__(self, original: onnx.ModelProto, feed: dict[str, np.ndarray], settings: CompareSettings) -> None:
        self.feed = feed
        self.settings = settings
        self.output_names = [o.name for o in original.graph.output]
        self.declared = {s.name: s for s in output_specs(original)}
        self.check_onnx = _passes_checker(original)
        try:
            self.reference = _run(_ort_session(original), feed)
        except EnginekitError:
            raise
        except Exception as exc:
            raise UserError(
                f"onnxruntime cannot run the original model on the verification feed, so no pass can be "
                f"verified: {_short(exc)}",
                hint="Check the --input shapes or --load-inputs file, or prepare without verification (--no-verify).",
            ) from exc

    def verify(self, candidate: onnx.ModelProto) -> tuple[str, dict[str, Any] | None]:
        """('' when the candidate matches, else the evidence) and the comparison, when one was made."""
        if self.check_onnx and candidate.ByteSize() < PROTOBUF_LIMIT:
            try:
                onnx.checker.check_model(candidate)
            except Exception as exc:  # noqa: BLE001 - the checker's verdict is the evidence
                return f"the ONNX checker rejects the result: {_short(exc)}", None
        names = [o.name for o in candidate.graph.output]
        if names != self.output_names:
            return f"graph outputs changed from {self.output_names} to {names}", None
        try:
            session = _ort_session(candidate)
        except Exception as exc:  # noqa: BLE001 - a load error is the evidence
            return f"onnxruntime cannot load the result: {_short(exc)}", None
        try:
            outputs = _run(session, self.feed)
        except Exception as exc:  # noqa: BLE001 - a run error is the evidence
            return f"onnxruntime failed to run the result on the feed: {_short(exc)}", None
        result = compare_outputs(self.reference, outputs, self.settings, check_names=False)
        if not result.passed:
            why = "; ".join(f"output {o.name!r}: {o.reason}" for o in result.failed_outputs())
            return f"outputs differ from the original's: {why}", result.to_dict()
        return self._declared_shapes(candidate, outputs), result.to_dict()

    def _declared_shapes(self, candidate: onnx.ModelProto, outputs: Mapping[str, np.ndarray]) -> str:
        """An output shape the pass wrote into the graph that contradicts the shape onnxruntime produced."""
        for spec in output_specs(candidate):
            if spec.shape is None or spec == self.declared.get(spec.name):
                continue  # unchanged declarations are the original model's business
            actual = tuple(outputs[spec.name].shape)
            if len(spec.shape) != len(actual) or any(
                isinstance(d, int) and d != a for d, a in zip(spec.shape, actual, strict=False)
            ):
                return (f"output {spec.name!r} is declared with shape {spec.shape_str()} in the result, but "
                        f"onnxruntime produced {list(actual)}")
        return ""


# --- the run ----------------------------------------------------------------------------------


def _same_model(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    if a is b:
        return True
    if max(a.ByteSize(), b.ByteSize()) >= PROTOBUF_LIMIT:
        return False
    same: bool = a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    return same


def _run_pass(
    name: str, fn: PassFn, current: onnx.ModelProto, ctx: PassContext, verifier: _Verifier | None
) -> tuple[PassResult, onnx.ModelProto]:
    before = len(current.graph.node)
    work = onnx.ModelProto()
    work.CopyFrom(current)
    t0 = time.perf_counter()
    try:
        out = fn(work, ctx)
        if not isinstance(out, PassOutput):
            raise TypeError(f"pass returned {type(out).__name__}, expected PassOutput")
    except Exception as exc:  # noqa: BLE001 - a failing pass is a row, never a crash
        log.debug("pass %s failed", name, exc_info=True)
        reason = _short(exc) + (f" ({exc.hint})" if isinstance(exc, EnginekitError) and exc.hint else "")
        failed = PassResult(name, Status.FAILED, before, before, reason=reason, duration_s=time.perf_counter() - t0)
        return failed, current
    duration = time.perf_counter() - t0
    after = len(out.model.graph.node)
    common: dict[str, Any] = {"summary": out.summary, "details": dict(out.details), "duration_s": duration}
    if _same_model(current, out.model):
        return PassResult(name, Status.SKIPPED, before, after, reason="no change", **common), current
    if verifier is None:
        return PassResult(name, Status.APPLIED, before, after, **common), out.model
    t1 = time.perf_counter()
    reason, comparison = verifier.verify(out.model)
    verify_s = time.perf_counter() - t1
    if reason:
        log.warning("pass %s rejected: %s", name, reason)
        return PassResult(name, Status.REJECTED, before, after, reason=reason, verify_s=verify_s, verified=True,
                          comparison=comparison, **common), current
    return PassResult(name, Status.APPLIED, before, after, verify_s=verify_s, verified=True, comparison=comparison,
                      **common), out.model


def write_model(model: onnx.ModelProto, path: Path) -> str | None:
    """Write atomically; models over :data:`EXTERNAL_DATA_THRESHOLD` keep their weights in ``<name>.data``.

    Returns the external data file name, or None when everything is in the .onnx file.
    """
    from enginekit.fileutil import atomic_write_bytes

    try:
        if model.ByteSize() < EXTERNAL_DATA_THRESHOLD:
            atomic_write_bytes(path, model.SerializeToString())
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        data_name = f"{path.name}.data"
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        try:
            onnx.save_model(model, str(tmp / path.name), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            if (tmp / data_name).exists():
                os.replace(tmp / data_name, path.parent / data_name)
            os.replace(tmp / path.name, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise InvalidArgumentError(f"Cannot write {str(path)!r}: {exc.strerror or exc}.") from exc
    return data_name


def prepare_model(
    model_path: Path, settings: PrepareSettings, passes_registry: Mapping[str, PassFn] | None = None
) -> PrepareResult:
    """Run the requested passes on the model at ``model_path``, verify each, write ``settings.output``.

    ``passes_registry`` maps pass names to functions (default :data:`PASSES`). User errors (unknown
    pass, bad shapes, feed that does not fit) raise before any pass runs.
    """
    from enginekit.data import prepare_feed

    registry = PASSES if passes_registry is None else passes_registry
    model_path, output = Path(model_path), Path(settings.output)
    names = resolve_passes(settings, registry)
    _check_output(model_path, output)
    original = load_model(model_path, load_external_data=True, check=False)
    check_fixed_shapes(original, settings.fix_input_shapes)
    validate_tolerance_names(settings.compare, [o.name for o in original.graph.output])
    verifier: _Verifier | None = None
    feed: dict[str, np.ndarray] = {}
    if settings.verify:
        feeds, specs = _feed_plan(settings, input_specs(original))
        feed = prepare_feed(specs, feeds)
        verifier = _Verifier(original, feed, settings.compare)
    shapes = {k: tuple(int(d) for d in v.shape) for k, v in feed.items()} if feed else {
        i.name: tuple(i.shape) for i in (*settings.feeds.inputs, *settings.fix_input_shapes)}
    ctx = PassContext(settings, model_path, shapes)
    current = original
    rows: list[PassResult] = []
    for name in names:
        row, current = _run_pass(name, registry[name], current, ctx, verifier)
        log.info("pass %s: %s (%d -> %d nodes) %s%s", name, row.status, row.nodes_before, row.nodes_after,
                 row.summary, f" [{row.reason}]" if row.reason else "")
        rows.append(row)
    external = write_model(current, output)
    if external:
        log.info("model is over 2 GiB: weights written to %s beside %s", external, output)
    return PrepareResult(
        model=str(model_path),
        output=str(output),
        external_data=external,
        passes=tuple(rows),
        verify=settings.verify,
        inputs={k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feed.items()},
        nodes_before=len(original.graph.node),
        nodes_after=len(current.graph.node),
        compare=settings.compare,
    )
