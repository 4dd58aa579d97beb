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
from enginekit.export.shapes import InputPlan, parse_export_input, plan_inputs
from enginekit.export.source import EXPORTED_PROGRAM, TORCHSCRIPT, Source, load_torch_model
from enginekit.export.targets import parse_target
from enginekit.export.verify import ExportResult, failure_table, verify_cases
from enginekit.settings import ExportSettings

log = logging.getLogger(__name__)


def flatten_outputs(obj: Any) -> list[Any]:
    """Tensors of a (nested) tuple/list/dict output, in order; dict values in insertion order."""
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in flatten_outputs(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in flatten_outputs(item)]
    if obj is None:
        return []
    raise InvalidArgumentError(f"The model returned a {type(obj).__name__}; only tensors (in tuples, lists or "
                               "dicts) can be exported.")


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


def _export_dynamo(module: Any, args: tuple[Any, ...], plans: list[InputPlan], names: list[str],
                   opset: int) -> Any:
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
                output_names=names or None,
                # forward(*args): the varargs are one positional tuple, so the specs nest one level deeper
                dynamic_shapes=(tuple(dynamic_shapes),) if any(dynamic_shapes) else None,
                verbose=False,
            )
    finally:
        log.debug("dynamo exporter output:\n%s", printed.getvalue())
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto


def _export_torchscript(module: Any, args: tuple[Any, ...], plans: list[InputPlan], names: list[str],
                        opset: int, tmp: Path) -> Any:
    import onnx
    import torch

    dynamic_axes: dict[str, dict[int, str]] = {p.name: {a.axis: a.label for a in p.dynamic} for p in plans if p.dynamic}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=opset,
                          input_names=[p.name for p in plans], output_names=names or None,
                          dynamic_axes=dynamic_axes or None)
    return onnx.load(str(tmp))


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
    model = load_torch_model(src, settings.weights)
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

    notes: list[str] = []
    exporter = settings.exporter
    if exporter == "auto" and src.kind == TORCHSCRIPT:
        exporter = "torchscript"
        notes.append("auto: a TorchScript archive is exported with the TorchScript exporter")
    proto = None
    if exporter in ("auto", "dynamo"):
        try:
            proto = _export_dynamo(module, args, plans, names, opset)
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
            if exporter == "dynamo":
                raise ModelLoadError(f"The dynamo exporter failed: {type(exc).__name__}: {_short(exc)}",
                                     hint="Try --exporter torchscript (or auto).") from exc
            notes.append(f"auto: dynamo failed ({type(exc).__name__}: {_short(exc)}); falling back to TorchScript")
            log.info(notes[-1])
    if proto is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmpdir:
            try:
                proto = _export_torchscript(module, args, plans, names, opset, Path(tmpdir) / "model.onnx")
            except Exception as exc:  # noqa: BLE001
                raise ModelLoadError(f"The TorchScript exporter failed: {type(exc).__name__}: {_short(exc)}") from exc
        used = "torchscript"
        if opset_of(proto) != opset:
            notes.append(f"torchscript produced opset {opset_of(proto)}, not the requested {opset}")

    result = ExportResult(settings.output, settings.source, "torch", used, opset, opset_of(proto), notes=notes)

    def run_source(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outs = call(*(torch.from_numpy(feed[p.name]) for p in plans))
        return {n: o.detach().cpu().numpy() for n, o in zip(names, outs, strict=True)}

    finish(result, proto, plans, settings, run_source)
    result.duration_s = time.perf_counter() - t_start
    return result


def finish(result: ExportResult, proto: Any, plans: list[InputPlan], settings: ExportSettings,
           run_source: Any) -> None:
    """Verify (at the traced shape and another valid shape, two seeds each), then save or refuse."""
    from enginekit.export.write import run_onnx_factory, save_onnx
    from enginekit.graph.io import input_specs, output_specs

    result.inputs, result.outputs = input_specs(proto), output_specs(proto)
    if settings.verify:
        feeds = []
        for which in ("trace", "other"):
            if which == "other" and not any(a.other is not None for p in plans for a in p.dynamic):
                continue
            for seed in (settings.seed, settings.seed + 1):
                feeds.append((f"{which} shape, seed {seed}", _feed(plans, which, seed, settings)))
        failed = settings.output.with_name(settings.output.stem + ".failed.onnx")
        hint = ("Shapes or branches baked in by tracing show up as errors at the other shape or seed: make the "
                "code shape-generic, mark the axis with --dynamic, or use --exporter dynamo.")
        try:
            run_onnx = run_onnx_factory(proto)
            result.cases = verify_cases(run_source, run_onnx, feeds, settings.compare)
        except VerificationError as exc:
            save_onnx(proto, failed, settings.external_data_threshold)
            raise VerificationError(f"{exc.message}\nThe model was written to {str(failed)!r} for inspection, "
                                    f"not to {str(settings.output)!r}.", hint=hint) from exc
        result.verified = all(c.comparison.passed for c in result.cases)
        if not result.verified:
            save_onnx(proto, failed, settings.external_data_threshold)
            raise VerificationError(
                f"The exported ONNX does not match the {result.framework} model:\n{failure_table(result.cases)}\n"
                f"The model was written to {str(failed)!r} for inspection, not to {str(settings.output)!r}.",
                hint=hint,
            )
    result.external_data = save_onnx(proto, settings.output, settings.external_data_threshold)


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
    """The root cause of an exporter error in one line: ANSI codes stripped, torch's boilerplate dropped."""
    import re

    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("For more information", "The error above", "Refer to", "-"))]
    text = " ".join(keep[:3]) if keep else text
    return text if len(text) <= limit else text[:limit] + "…"
