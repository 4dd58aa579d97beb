"""Paddle inference model → ONNX with paddle2onnx, verified against Paddle Inference.

The conversion runs in a child process by default: paddle2onnx aborts the whole process (SIGABRT)
on an unsupported operator or opset, and calls ``sys.exit`` on an unreadable program; in a child
both become a :class:`ModelLoadError` carrying paddle2onnx's own log.

Verification feeds the same seeded random data to Paddle Inference (CPU) and ONNX Runtime at the
model's shapes (dynamic batch → 1) and once more with every dynamic axis changed (batch → 3), and
compares the outputs position by position (paddle2onnx may rename them).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.backends.paddle import PaddleRunner, import_paddle, read_program_info
from enginekit.deps import dist_version, require
from enginekit.errors import (
    EnginekitError,
    FeedError,
    InvalidArgumentError,
    MissingDependencyError,
    ModelLoadError,
    VerificationError,
)
from enginekit.sources.paddle_files import PaddleModelFiles, resolve_paddle_model
from enginekit.tensors import TensorSpec

if TYPE_CHECKING:
    from enginekit.export.verify import ExportResult, VerifyCase
    from enginekit.settings import ExportSettings

log = logging.getLogger(__name__)

#: paddle2onnx 2.x accepts opsets 7..21 and aborts the process outside that range.
MIN_OPSET, MAX_OPSET = 7, 21
#: Default: supported by every target here (TensorRT >= 8.5, ORT, OpenVINO) and has LayerNormalization.
DEFAULT_OPSET = 17


def _require_paddle2onnx() -> Any:
    try:
        return require("paddle2onnx", purpose="exporting a Paddle model to ONNX")
    except MissingDependencyError as exc:
        exc.hint = ("pip install --no-deps paddle2onnx (its own pins would downgrade onnx; the ONNX it returns "
                    "is checked here with the installed onnx, and its optional post-processing is not used)")
        raise


# conversion ---------------------------------------------------------------------------------------------

def _convert_here(files: PaddleModelFiles, opset: int) -> bytes:
    """paddle2onnx in this process. Unsupported operators abort the process: prefer the child."""
    import_paddle("exporting a Paddle model")
    p2o = _require_paddle2onnx()
    try:
        data = p2o.export(
            str(files.program),
            str(files.params or ""),
            None,  # return the bytes; with a file paddle2onnx post-processes with tools it may pip-install
            opset_version=opset,
            auto_upgrade_opset=True,
            enable_onnx_checker=True,
            enable_optimize=True,
            deploy_backend="onnxruntime",
        )
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - paddle2onnx logs, then sys.exit()s or leaves data unset
        raise ModelLoadError(f"paddle2onnx could not convert {str(files.program)!r}: {exc!r}") from None
    if not isinstance(data, bytes) or not data:
        raise ModelLoadError(f"paddle2onnx returned no model for {str(files.program)!r}.")
    return data


_NOISE = re.compile(r"^(I\d{4} |W\d{4} |---|\s*$)|Running (PIR|IR) pass|ccache|warnings\.warn")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _log_tail(text: str, lines: int = 25) -> str:
    kept = [ln for ln in _ANSI.sub("", text).splitlines() if not _NOISE.search(ln)]
    return "\n".join(kept[-lines:])


def _convert_in_child(files: PaddleModelFiles, opset: int) -> bytes:
    """paddle2onnx in a child Python: a crash becomes an ExportError with the converter's log."""
    _require_paddle2onnx()  # fail fast with the install hint
    import enginekit

    with tempfile.TemporaryDirectory(prefix="enginekit-p2o-") as tmp:
        out = Path(tmp) / "model.onnx"
        args = {"program": str(files.program), "params": None if files.params is None else str(files.params),
                "format": files.format, "opset": opset, "output": str(out)}
        env = dict(os.environ)
        src_root = str(Path(enginekit.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH", "")) if p)
        env.setdefault("GLOG_minloglevel", "2")
        proc = subprocess.run(
            [sys.executable, "-m", "enginekit.export.paddle", json.dumps(args)],
            capture_output=True, text=True, env=env, check=False,
        )
        log.debug("paddle2onnx child (rc %s):\n%s%s", proc.returncode, proc.stdout, proc.stderr)
        if proc.returncode != 0 or not out.is_file():
            why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
            raise ModelLoadError(
                f"paddle2onnx could not convert {str(files.program)!r} ({why}). Its log ends with:\n"
                f"{_log_tail(proc.stdout + proc.stderr)}",
                hint="An unsupported operator is the usual cause: check paddle2onnx's operator list, "
                     f"or try another opset ({MIN_OPSET}..{MAX_OPSET}).",
            )
        return out.read_bytes()


def _child_main(argv: Sequence[str]) -> int:
    args = json.loads(argv[0])
    files = PaddleModelFiles(Path(args["program"]), None if args["params"] is None else Path(args["params"]),
                             args["format"])
    try:
        data = _convert_here(files, int(args["opset"]))
    except EnginekitError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    Path(args["output"]).write_bytes(data)
    return 0


def choose_opset(settings: ExportSettings) -> int:
    opset = DEFAULT_OPSET if settings.opset is None else settings.opset
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise InvalidArgumentError(
            f"--opset {opset}: paddle2onnx exports opsets {MIN_OPSET} to {MAX_OPSET}.",
            hint=f"Leave --opset out to get {DEFAULT_OPSET}.",
        )
    return opset


def _check_options(settings: ExportSettings) -> None:
    unused = [flag for flag, value in (("--dynamic", settings.dynamic), ("--output-name", settings.output_names),
                                       ("--weights", settings.weights)) if value]
    if settings.exporter not in ("auto", "paddle2onnx"):
        unused.append(f"--exporter {settings.exporter}")
    if unused:
        raise InvalidArgumentError(
            f"Options that do not apply to a Paddle model: {', '.join(unused)}. Its input shapes, dynamic axes, "
            "output names and weights come from the saved program (paddle.jit.save with an InputSpec).",
        )


# verification -------------------------------------------------------------------------------------------

def _second_value(axis: int, value: int) -> int:
    """Another valid size for a dynamic axis: batch 1 → 3, other axes doubled (keeps strides' divisors)."""
    return 2 * value + 1 if axis == 0 else 2 * value


def verification_shapes(specs: Sequence[TensorSpec], given: Sequence[str] = ()) -> list[dict[str, tuple[int, ...]]]:
    """The shapes to verify at: the model's (``given`` ``NAME:DIMS`` first, dynamic batch → 1), and,
    when any axis is dynamic, once more with every dynamic axis changed."""
    from enginekit.data import parse_input_shape, resolve_shapes

    given_shapes = [parse_input_shape(text) for text in given]
    named = {g.name for g in given_shapes}
    # The batch axis is the only dynamic axis whose size we dare to guess (1); others need --input.
    guessed = [
        TensorSpec(s.name, (1, *s.shape[1:]), s.dtype)
        if s.name not in named and s.shape and not isinstance(s.shape[0], int) else s
        for s in specs
    ]
    first = resolve_shapes(guessed, given_shapes)
    shapes = [first]
    dynamic = {s.name: [axis for axis, _ in s.symbolic_dims()] for s in specs}
    if any(dynamic.values()):
        shapes.append({n: tuple(_second_value(a, v) if a in dynamic[n] else v for a, v in enumerate(shape))
                       for n, shape in first.items()})
    return shapes


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def comparison_table(cases: Sequence[VerifyCase]) -> str:
    """Plain-text table of every output at every verification shape (what a failing export prints)."""
    headers = ("shapes", "output", "status", "max abs", "max rel", "p99 abs", "cosine", "failed", "atol", "rtol",
               "worst (paddle vs onnx)")
    rows: list[tuple[str, ...]] = []
    reasons: list[str] = []
    for case in cases:
        shapes = ", ".join(f"{n}={'x'.join(map(str, v)) or 'scalar'}" for n, v in case.shapes.items())
        for o in case.comparison.outputs:
            worst = "-"
            if o.worst_index is not None:
                worst = f"{list(o.worst_index)}: {o.worst_ref:.7g} vs {o.worst_cand:.7g}"
            rows.append((shapes, o.name, "ok" if o.passed else "FAIL", _fmt(o.max_abs_err), _fmt(o.max_rel_err),
                         _fmt(o.p99_abs_err), f"{o.cosine:.6f}", f"{o.failed_elements}/{o.total_elements}",
                         _fmt(o.atol), _fmt(o.rtol), worst))
            if not o.passed and o.reason:
                reasons.append(f"{shapes}, {o.name}: {o.reason}")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines + reasons)


def verify_paddle_export(files: PaddleModelFiles, proto: Any, settings: ExportSettings) -> list[VerifyCase]:
    """Paddle Inference (reference) and ONNX Runtime on the same seeded feeds, at every verification shape.

    Inputs are matched by name when paddle2onnx kept the names, else by position; outputs always by position.
    """
    from enginekit.data import random_feed
    from enginekit.export.verify import verify_cases
    from enginekit.export.write import run_onnx_factory
    from enginekit.graph.io import input_specs, output_specs
    from enginekit.settings import BackendSettings

    runner = PaddleRunner(files.program, BackendSettings())
    p_in, p_out = runner.inputs(), runner.outputs()
    o_in, o_out = input_specs(proto), output_specs(proto)
    if len(p_in) != len(o_in) or len(p_out) != len(o_out):
        raise VerificationError(
            f"The ONNX model has {len(o_in)} inputs and {len(o_out)} outputs, the Paddle model {len(p_in)} and "
            f"{len(p_out)}: paddle2onnx changed the interface."
        )
    onnx_names = {s.name for s in o_in}
    in_map = {p.name: (p.name if p.name in onnx_names else o.name) for p, o in zip(p_in, o_in, strict=True)}
    out_map = [(p.name, o.name) for p, o in zip(p_out, o_out, strict=True)]
    run_onnx = run_onnx_factory(proto)
    feeds = []
    for i, shapes in enumerate(verification_shapes(p_in, settings.inputs)):
        label = f"{'saved' if i == 0 else 'other'} shape, seed {settings.seed}"
        feeds.append((label, random_feed(p_in, shapes, seed=settings.seed, ranges=settings.val_ranges)))
    with runner:
        def run_source(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = runner.infer(feed)
            return {o: out[p] for p, o in out_map}

        def run_converted(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return run_onnx({in_map[n]: v for n, v in feed.items()})

        return verify_cases(run_source, run_converted, feeds, settings.compare)


# entry point --------------------------------------------------------------------------------------------

def export_paddle(settings: ExportSettings, *, isolate: bool = True) -> ExportResult:
    """Export the Paddle model ``settings.source`` to ``settings.output`` and verify it (unless told not to).

    ``isolate`` runs paddle2onnx in a child process (it aborts its process on unsupported operators).
    Raises :class:`ModelLoadError` for missing/unreadable files and failed conversions, and
    :class:`VerificationError` (with the comparison table) when the outputs differ; the ONNX model is
    then written to ``NAME.failed.onnx`` for inspection, not to ``settings.output``.
    """
    import onnx

    from enginekit.export.verify import ExportResult
    from enginekit.export.write import opset_of, save_onnx
    from enginekit.graph.io import input_specs, output_specs

    t0 = time.perf_counter()
    _check_options(settings)
    opset = choose_opset(settings)
    files = resolve_paddle_model(settings.source)
    read_program_info(files)  # user errors (bad program, missing params) before any conversion
    if settings.output.is_dir():
        raise InvalidArgumentError(f"-o {str(settings.output)!r} is a folder; give the .onnx file to write.")
    data = _convert_in_child(files, opset) if isolate else _convert_here(files, opset)
    try:
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - DecodeError, ValidationError
        raise ModelLoadError(f"paddle2onnx wrote an invalid ONNX model for {str(files.program)!r}: {exc}") from exc
    del data
    result = ExportResult(settings.output, settings.source, "paddle", "paddle2onnx", opset, opset_of(proto))
    result.inputs, result.outputs = input_specs(proto), output_specs(proto)
    if result.opset_produced != opset:
        result.notes.append(f"paddle2onnx raised the opset from {opset} to {result.opset_produced} for some operator")
    result.notes.append(f"source: {files.format} program {files.program.name}; paddlepaddle "
                        f"{dist_version('paddlepaddle')}, paddle2onnx {dist_version('paddle2onnx')}")
    if settings.verify:
        try:
            result.cases = verify_paddle_export(files, proto, settings)
        except FeedError as exc:
            raise FeedError(f"Cannot verify the export: {exc.message}", hint="Or pass --no-verify.") from exc
        result.verified = all(c.comparison.passed for c in result.cases)
        if not result.verified:
            failed = settings.output.with_name(settings.output.stem + ".failed.onnx")
            save_onnx(proto, failed, settings.external_data_threshold)
            raise VerificationError(
                f"The exported ONNX does not match the Paddle model {str(files.program)!r} "
                f"(Paddle Inference on CPU is the reference):\n{comparison_table(result.cases)}\n"
                f"The model was written to {str(failed)!r} for inspection, not to {str(settings.output)!r}.",
                hint="Loosen --atol/--rtol if these errors are acceptable for your model.",
            )
    result.external_data = save_onnx(proto, settings.output, settings.external_data_threshold)
    result.duration_s = time.perf_counter() - t0
    log.info("paddle2onnx wrote %s (opset %d) in %.1f s", settings.output, result.opset_produced, result.duration_s)
    return result


if __name__ == "__main__":  # the child process of _convert_in_child
    sys.exit(_child_main(sys.argv[1:]))
