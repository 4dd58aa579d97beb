"""PyTorch → ONNX with the dynamo or TorchScript exporter, then automatic verification in onnxruntime.

``--exporter auto`` tries dynamo first and falls back to TorchScript when dynamo fails or cannot produce
the requested opset (it silently keeps opset 18 when LayerNormalization cannot be converted down).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.errors import InvalidArgumentError, ModelLoadError, VerificationError
from enginekit.export.feeds import verification_feeds
from enginekit.export.names import check_output_names, set_output_names
from enginekit.export.targets import parse_target
from enginekit.export.trace_check import TraceWarning, display_path, record_trace_warnings
from enginekit.export.verify import ExportResult, VerifyCase, failure_table, summary, verify_cases
from enginekit.settings import ExportSettings
from enginekit.sources.detect import EXPORTED_PROGRAM, TORCHSCRIPT, Source
from enginekit.sources.shapes import InputPlan, parse_export_input, plan_inputs
from enginekit.sources.torch_load import flatten_outputs, load_torch_model

log = logging.getLogger(__name__)


def _flat_module(model: Any, *, eval_mode: bool = True) -> Any:
    import torch

    class FlatOutputs(torch.nn.Module):
        """Calls the model with positional inputs and returns its tensors as one flat tuple."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> tuple[Any, ...]:
            return tuple(flatten_outputs(self.inner(*args)))

    wrapper = FlatOutputs(model)
    # The GraphModule of a torch.export program refuses train()/eval(); it is already in inference form.
    return wrapper.eval() if eval_mode else wrapper


def _feed(plans: list[InputPlan], which: str, seed: int, settings: ExportSettings) -> dict[str, np.ndarray]:
    from enginekit.data import random_feed

    specs = [p.spec() for p in plans]
    shapes = {p.name: p.shape_with(which) for p in plans}
    return random_feed(specs, shapes, seed=seed, ranges=settings.val_ranges)


def _export_dynamo(module: Any, args: tuple[Any, ...], plans: list[InputPlan], opset: int) -> Any:
    import torch

    dims: dict[str, Any] = {}
    dynamic_shapes = []
    for p in plans:
        spec = {}
        for a in p.dynamic:
            if a.label not in dims:
                kwargs = {k: v for k, v in (("min", a.min), ("max", a.max)) if v is not None}
                dims[a.label] = torch.export.Dim(a.label, **kwargs)
            spec[a.axis] = dims[a.label]
        dynamic_shapes.append(spec or None)
    import contextlib
    import io

    printed = io.StringIO()  # the exporter prints progress and, on failure, the traced graph
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, args, None, dynamo=True, opset_version=opset, input_names=[p.name for p in plans],
                output_names=None,  # named afterwards (names.set_output_names): the exporter lets names collide
                # forward(*args): the varargs are one positional tuple, so the specs nest one level deeper
                dynamic_shapes=(tuple(dynamic_shapes),) if any(dynamic_shapes) else None,
                verbose=False,
            )
    finally:
        log.debug("dynamo exporter output:\n%s", printed.getvalue())
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto


def _export_torchscript(module: Any, args: tuple[Any, ...], plans: list[InputPlan], opset: int,
                        tmp: Path) -> tuple[Any, list[TraceWarning]]:
    """The ONNX model and the tracer's warnings (Python values taken from tensors while tracing)."""
    import onnx
    import torch

    dynamic_axes: dict[str, dict[int, str]] = {p.name: {a.axis: a.label for a in p.dynamic} for p in plans if p.dynamic}
    with record_trace_warnings(len(args)) as recorder:
        torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=opset,
                          input_names=[p.name for p in plans], output_names=None,  # named afterwards
                          dynamic_axes=dynamic_axes or None)
    return onnx.load(str(tmp)), recorder.warnings


def _static_axes(proto: Any, plans: list[InputPlan]) -> list[str]:
    """Notes on axes asked to be dynamic that the exporter wrote with a fixed size."""
    from enginekit.graph.io import input_specs

    shapes = {s.name: s.shape for s in input_specs(proto)}
    notes = []
    for p in plans:
        for a in p.dynamic:
            shape = shapes.get(p.name) or ()
            if a.axis < len(shape) and isinstance(shape[a.axis], int):
                notes.append(f"input {p.name!r} axis {a.axis} ({a.label}) was asked to be dynamic but the exporter "
                             f"fixed it at {shape[a.axis]}")
    return notes


def _default_output_names(n: int) -> list[str]:
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def export_torch(settings: ExportSettings, src: Source) -> ExportResult:
    """Export a PyTorch source to ONNX; verify unless ``settings.verify`` is False."""
    import torch

    from enginekit.export.write import opset_of

    t_start = time.perf_counter()
    if not log.isEnabledFor(logging.INFO):  # torch's exporter logs warnings about opsets and torchvision
        for name in ("torch", "onnxscript"):  # exporter warnings and dynamo's graph dumps on failure
            logging.getLogger(name).setLevel(logging.ERROR)
    target = parse_target(settings.target)
    opset = settings.opset or target.opset
    if not settings.inputs:
        raise InvalidArgumentError("Give every model input with --input NAME:DIMS[:DTYPE] (e.g. x:batch,3,224,224).")
    plans = plan_inputs(tuple(parse_export_input(t) for t in settings.inputs), settings.dynamic)
    if settings.exporter not in ("auto", "dynamo", "torchscript"):
        raise InvalidArgumentError(f"--exporter {settings.exporter!r}: choose dynamo, torchscript or auto.")
    model = load_torch_model(src, settings.weights, trust_remote_code=settings.trust_remote_code)
    if src.kind == EXPORTED_PROGRAM:
        model = model.module()
    # A ScriptModule cannot be called from a traced Python wrapper: export it as it is.
    module = model if src.kind == TORCHSCRIPT else _flat_module(model, eval_mode=src.kind != EXPORTED_PROGRAM)

    def call(*inputs: Any) -> list[Any]:
        return flatten_outputs(module(*inputs))

    trace_feed = _feed(plans, "trace", settings.seed, settings)
    args = tuple(torch.from_numpy(trace_feed[p.name]) for p in plans)
    try:
        with torch.no_grad():
            n_out = len(call(*args))
    except Exception as exc:  # noqa: BLE001 - the user's model failed on the example inputs
        raise ModelLoadError(f"The model failed on example inputs {[list(a.shape) for a in args]}: "
                             f"{type(exc).__name__}: {exc}",
                             hint="Check --input shapes and dtypes; integer inputs take --val-range.") from exc
    names = list(settings.output_names) or _default_output_names(n_out)
    if len(names) != n_out:
        raise InvalidArgumentError(f"--output-names gives {len(names)} names but the model returns {n_out} tensors.")
    check_output_names(names, [p.name for p in plans])

    notes: list[str] = []
    exporter = settings.exporter
    if exporter == "auto" and src.kind == TORCHSCRIPT:
        exporter = "torchscript"
        notes.append("auto: a TorchScript archive is exported with the TorchScript exporter")
    proto = None
    if exporter in ("auto", "dynamo"):
        try:
            proto = _export_dynamo(module, args, plans, opset)
            produced = opset_of(proto)
            converted, why = _convert(proto, opset) if produced != opset else (None, "")
            if converted is not None:
                notes.append(f"dynamo wrote opset {produced}; converted to {opset} with onnx.version_converter")
                proto = converted
            elif produced != opset:
                msg = f"dynamo produced opset {produced}, not the requested {opset} ({why})"
                if exporter == "auto":
                    notes.append(f"auto: {msg}; falling back to the TorchScript exporter")
                    proto = None
                else:
                    notes.append(msg)
            used = "dynamo"
        except Exception as exc:  # noqa: BLE001 - dynamo failures are common; auto falls back
            why = _dynamo_failure(exc)
            if exporter == "dynamo":
                hint = ("Write the branch with tensor ops (torch.where) or torch.cond; the TorchScript exporter "
                        "would keep only the traced branch." if why.startswith("data-dependent")
                        else "Try --exporter torchscript (or auto).")
                raise ModelLoadError(f"The dynamo exporter failed: {why}", hint=hint) from exc
            notes.append(f"auto: dynamo failed ({why}); falling back to TorchScript")
            log.info(notes[-1])
    trace_warnings: list[TraceWarning] = []
    if proto is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmpdir:
            try:
                proto, trace_warnings = _export_torchscript(module, args, plans, opset, Path(tmpdir) / "model.onnx")
            except Exception as exc:  # noqa: BLE001
                raise ModelLoadError(f"The TorchScript exporter failed: {type(exc).__name__}: {_short(exc)}") from exc
        used = "torchscript"
        if opset_of(proto) != opset:
            notes.append(f"torchscript produced opset {opset_of(proto)}, not the requested {opset}")
    if len(proto.graph.output) != n_out:
        raise ModelLoadError(f"The {used} exporter wrote {len(proto.graph.output)} outputs; the model returns "
                             f"{n_out} tensors.")
    notes += set_output_names(proto, names)

    result = ExportResult(settings.output, settings.source, "torch", used, opset, opset_of(proto), notes=notes,
                          trace_warnings=trace_warnings)
    if shape_warnings := result.shape_dependent_warnings:
        places = "; ".join(w.describe(message=False) for w in shape_warnings[:3])
        more = f" and {len(shape_warnings) - 3} more" if len(shape_warnings) > 3 else ""
        notes.append(f"the tracer warned about Python values taken from shapes only (kept for the traced shape; "
                     f"checked at another size of each dynamic axis): {places}{more}")
    notes += _static_axes(proto, plans)

    def run_source(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outs = call(*(torch.from_numpy(feed[p.name]) for p in plans))
        return {n: o.detach().cpu().numpy() for n, o in zip(names, outs, strict=True)}

    finish(result, proto, plans, settings, run_source)
    result.duration_s = time.perf_counter() - t_start
    return result


_TRACE_HINT = ("Shapes or branches baked in by tracing show up as errors at the other shape or on the varied feeds: "
               "make the code shape-generic, mark the axis with --dynamic, or use --exporter dynamo.")
_DATA_HINT = ("Keep the values tensors: write the branch with tensor ops (torch.where, masks) or torch.cond so the "
              "graph holds every path, and avoid .item(), float(), int(), bool() and .numpy() on tensors computed "
              "from the inputs. --exporter dynamo shows where torch.export stops; --no-verify writes the model "
              "anyway.")


def finish(result: ExportResult, proto: Any, plans: list[InputPlan], settings: ExportSettings,
           run_source: Any) -> None:
    """Verify on every verification feed (see feeds.py) and against the tracer's warnings; save or refuse.

    A failure writes the model to NAME.failed.onnx for inspection, never to the output, and raises
    VerificationError (exit 1) with the failed cases and the source lines the tracer warned about.
    """
    from enginekit.export.write import run_onnx_factory, save_onnx
    from enginekit.graph.io import input_specs, output_specs

    result.inputs, result.outputs = input_specs(proto), output_specs(proto)
    data_warnings = result.data_dependent_warnings
    if not settings.verify:
        for w in data_warnings:
            result.notes.append(f"NOT VERIFIED (--no-verify) and tracing took an input-dependent value as a "
                                f"constant at {w.describe()}")
        result.external_data = save_onnx(proto, settings.output, settings.external_data_threshold)
        return
    failed = settings.output.with_name(settings.output.stem + ".failed.onnx")
    where = (f"{_notes_text(result)}The model was written to {str(failed)!r} for inspection, not to "
             f"{str(settings.output)!r}.")
    try:
        run_onnx = run_onnx_factory(proto)
        for case in verification_feeds(plans, settings.seed, settings.val_ranges):
            result.cases += verify_cases(run_source, run_onnx, [(case.label, case.feed)],
                                         _variant_settings(settings) if case.variant else settings.compare)
    except VerificationError as exc:
        save_onnx(proto, failed, settings.external_data_threshold)
        raise VerificationError(f"{exc.message}{_trace_text(data_warnings)}\n{where}",
                                hint=_DATA_HINT if data_warnings else _TRACE_HINT) from exc
    result.verified = all(c.comparison.passed for c in result.cases) and not data_warnings
    if not result.verified:
        save_onnx(proto, failed, settings.external_data_threshold)
        if all(c.comparison.passed for c in result.cases):
            headline = (f"The exported ONNX matches the {result.framework} model on every verification feed but "
                        "cannot be trusted on other inputs:")
        else:
            headline = f"The exported ONNX does not match the {result.framework} model:"
        raise VerificationError(
            f"{headline}{_cases_text(result.cases)}{_trace_text(data_warnings)}\n{where}",
            hint=_DATA_HINT if data_warnings else _TRACE_HINT,
        )
    result.external_data = save_onnx(proto, settings.output, settings.external_data_threshold)


def _variant_settings(settings: ExportSettings) -> Any:
    """Comparison on the varied feeds: they may leave the model's domain (log, sqrt of a negative value), so a
    NaN the source and the ONNX model both produce at the same element counts as a match there."""
    import dataclasses

    compare = settings.compare
    if "equal_nan" in {f.name for f in dataclasses.fields(compare)}:
        return dataclasses.replace(compare, equal_nan=True)
    return compare


def _cases_text(cases: list[VerifyCase]) -> str:
    if all(c.comparison.passed for c in cases):
        return "\n" + summary(cases)
    return "\n" + failure_table(cases) + "\n" + summary(cases)


def _trace_text(warnings: list[TraceWarning]) -> str:
    if not warnings:
        return ""
    lines = ["", "Tracing turned tensors computed from the inputs into Python values; the ONNX graph keeps the value "
             "(or the branch) of the trace for every input:"]
    lines += [f"  {w.describe()}" for w in warnings]
    return "\n".join(lines)


def _notes_text(result: ExportResult) -> str:
    head = f"Exported with the {result.exporter} exporter, opset {result.opset_produced}.\n"
    return head + "".join(f"note: {n}\n" for n in result.notes)


def _convert(proto: Any, opset: int) -> tuple[Any | None, str]:
    """``proto`` at ``opset`` through onnx's version converter, or None and the converter's reason."""
    import onnx.checker
    import onnx.version_converter

    try:
        converted = onnx.version_converter.convert_version(proto, opset)
        onnx.checker.check_model(converted)  # the converter can emit invalid attributes (ReduceMean 18→17)
        return converted, ""
    except Exception as exc:  # noqa: BLE001
        return None, "version converter: " + _short(exc, 160)


def _short(exc: BaseException, limit: int = 300) -> str:
    """The root cause of an exporter error in one line: ANSI codes stripped, torch's boilerplate dropped,
    and the model's source line torch.export names ("The following call raised this error") kept."""
    import re

    where = _raised_at(exc)
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("For more information", "The error above", "Refer to", "-"))]
    text = " ".join(keep[:3]) if keep else text
    text = text if len(text) <= limit else text[:limit] + "…"
    return f"{text} (raised at {where})" if where and where not in text else text


def _dynamo_failure(exc: BaseException) -> str:
    """Why torch.export failed, in one line; data-dependent control flow named as such, with its source line."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    where = _raised_at(exc)
    if where and ("DataDependent" in type(root).__name__ or "data-dependent" in str(root)[:200]):
        return f"data-dependent control flow at {where}, {type(root).__name__}"
    return f"{type(exc).__name__}: {_short(exc)}"


def _raised_at(exc: BaseException) -> str:
    """``file:line `code``` of the model's call that torch.export reports as raising the error, or ''."""
    import re

    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(current))
        m = re.search(r'The following call raised this error:\s*File "([^"]+)", line (\d+), in [^\n]*\n\s*(.*)', text)
        if m:
            return f"{display_path(m[1])}:{m[2]} `{m[3].strip()}`"
        current, seen = current.__cause__, seen + 1
    return ""
