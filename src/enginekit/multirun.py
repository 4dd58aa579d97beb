"""Run the same feeds on several backends and compare every one with a reference.

A failing backend never aborts the run: it becomes a row with status ``error`` (or ``skipped`` when
it cannot run here) and its reason; the other backends still run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from enginekit.errors import (
    EXIT_CHECK_FAILED,
    EXIT_MISSING_DEPENDENCY,
    EXIT_OK,
    EnginekitError,
    HardwareUnavailableError,
    InvalidArgumentError,
    MissingDependencyError,
)
from enginekit.registry import REDUCED_FLOAT_PRECISIONS, get_backend
from enginekit.status import Status
from enginekit.variants import (
    Options,
    apply_options,
    format_options,
    parse_options,
    quantized_kind,
    split_options,
)

if TYPE_CHECKING:
    from enginekit.backends.base import Runner
    from enginekit.compare import CompareResult, CompareSettings
    from enginekit.settings import BackendSettings, RunSettings
    from enginekit.tensors import TensorSpec

log = logging.getLogger(__name__)
T = TypeVar("T")



@dataclass(frozen=True)
class Candidate:
    """One backend at one precision, written ``NAME[:PRECISION][/KEY=VALUE]...`` on the command line (options:
    :mod:`enginekit.variants`)."""

    backend: str
    precision: str = "fp32"
    instance: int = 1  # the same backend listed again (a determinism check) is instance 2, labelled ``ort#2``
    options: Options = ()  # (key, value) in enginekit.variants' order: this candidate's BackendSettings changes

    @property
    def label(self) -> str:
        base = self.backend if self.precision == "fp32" else f"{self.backend}:{self.precision}"
        base += format_options(self.options)
        return base if self.instance == 1 else f"{base}#{self.instance}"

    def settings(self, base: BackendSettings) -> BackendSettings:
        """``base`` with this candidate's options applied."""
        return apply_options(base, self.options)

    @classmethod
    def parse(cls, text: str, default_precision: str = "fp32") -> Candidate:
        head, rest = split_options(text)
        name, _, precision = head.partition(":")
        info = get_backend(name)
        precision = precision.strip().lower() or default_precision
        if precision not in info.precisions:
            raise InvalidArgumentError(
                f"Backend {info.name!r} offers precisions {', '.join(info.precisions)}, not {precision!r}."
            )
        return cls(info.name, precision, options=parse_options(rest, info.name))


@dataclass
class BackendRow:
    """What happened to one candidate."""

    backend: str
    precision: str
    status: str
    reason: str = ""
    is_reference: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    comparison: CompareResult | None = None
    outputs: dict[str, np.ndarray] | None = None
    load_s: float | None = None
    infer_s: float | None = None
    instance: int = 1
    options: Options = ()

    @property
    def label(self) -> str:
        return Candidate(self.backend, self.precision, self.instance, self.options).label

    @property
    def judged_as(self) -> str:
        """The precision whose tolerance rule judges this row: ``fp8`` / ``int8`` when its linears run in 8 bits."""
        return quantized_kind(self.options) or self.precision

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.label,
            "precision": self.precision,
            "status": self.status,
            "reason": self.reason,
            "reference": self.is_reference,
            "details": self.details,
            "load_s": self.load_s,
            "infer_s": self.infer_s,
            "outputs": {} if self.comparison is None else self.comparison.to_dict()["outputs"],
        }


def use_runner(
    candidate: Candidate,
    model: Path,
    settings: BackendSettings,
    work: Callable[[Runner], T],
) -> tuple[BackendRow, T | None]:
    """Create, load and use a runner; any failure becomes the row's status and reason."""
    row = BackendRow(candidate.backend, candidate.precision, Status.OK, instance=candidate.instance,
                     options=candidate.options)
    settings = candidate.settings(settings)
    info = get_backend(candidate.backend)
    avail = info.available()
    if not avail.ok:
        row.status, row.reason = Status.SKIPPED, avail.reason
        return row, None
    try:
        runner = info.create_runner(model, settings, candidate.precision)
        t0 = time.perf_counter()
        with runner:
            row.load_s = time.perf_counter() - t0
            value = work(runner)
            row.details = runner.describe()  # after the work: compilations, graph breaks, eager fallbacks
        return row, value
    except (MissingDependencyError, HardwareUnavailableError) as exc:
        row.status, row.reason = Status.SKIPPED, str(exc)
    except EnginekitError as exc:
        row.status, row.reason = Status.ERROR, str(exc)
        _name_failing_node(row, exc, model)
    except Exception as exc:  # noqa: BLE001 - a backend's own failure becomes a row, never a crash
        log.debug("backend %s failed", candidate.label, exc_info=True)
        row.status, row.reason = Status.ERROR, f"{type(exc).__name__}: {exc}".strip()
        _name_failing_node(row, exc, model)
    return row, None


def _name_failing_node(row: BackendRow, exc: BaseException, model: Path) -> None:
    """Put the ONNX node a runtime failed in (when it says so) first in the row's reason and in its details."""
    from enginekit.backends.failing_node import failing_node

    graph = None
    if model.suffix.lower() == ".onnx" and model.is_file():
        try:
            from enginekit.graph.load import load_model

            graph = load_model(model, load_external_data=False, check=False)
        except EnginekitError:
            graph = None
    node = failing_node(exc, graph)
    if node is not None:
        row.details["failing_node"] = node.to_dict()
        row.reason = f"{node}: {row.reason}"


@dataclass
class RunResult:
    model: str
    reference: str
    feed: dict[str, np.ndarray]
    rows: list[BackendRow]

    @property
    def passed(self) -> bool:
        return all(r.status == Status.OK for r in self.rows)

    @property
    def exit_code(self) -> int:
        if any(r.status in (Status.FAILED, Status.ERROR) for r in self.rows):
            return EXIT_CHECK_FAILED
        if any(r.status == Status.SKIPPED for r in self.rows):
            return EXIT_MISSING_DEPENDENCY
        return EXIT_OK

    @property
    def weak_reference(self) -> list[str]:
        """Why a pass means little: reference outputs that are near-constant or saturated for some candidate."""
        return weak_reasons(self.rows)

    def outputs_of(self, label: str) -> dict[str, np.ndarray] | None:
        return next((r.outputs for r in self.rows if r.label == label), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "model": self.model,
            "reference": self.reference,
            "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in self.feed.items()},
            "weak_reference": self.weak_reference,
            "results": [r.to_dict() for r in self.rows],
        }


def weak_reasons(rows: Sequence[BackendRow]) -> list[str]:
    """The weak-reference reasons of passing rows, each once, in row order."""
    return list(dict.fromkeys(r for row in rows if row.status == Status.OK
                              for r in row.details.get("weak_reference", [])))


def compare_rows(
    rows: Sequence[BackendRow], reference: BackendRow, settings_for: Callable[[str], CompareSettings]
) -> None:
    """Fill each row's comparison against the reference (settings chosen by the row's precision)."""
    from dataclasses import replace

    from enginekit.compare import compare_outputs
    from enginekit.compare.reference_quality import weak_reference_reasons

    for row in rows:
        if row.status != Status.OK or row.outputs is None:
            continue
        if reference.status != Status.OK or reference.outputs is None:
            row.status, row.reason = Status.SKIPPED, f"reference {reference.label} has no outputs ({reference.status})"
            continue
        settings = settings_for(row.judged_as)
        if row is reference:  # the reference against itself: its NaNs are its own (only --validate fails them)
            settings = replace(settings, equal_nan=True)
        row.comparison = compare_outputs(reference.outputs, row.outputs, settings)
        weak = [] if row is reference else weak_reference_reasons(reference.outputs, settings)
        if weak:
            row.details["weak_reference"] = weak
        if not row.comparison.passed:
            failed = [o.name for o in row.comparison.outputs if not o.passed]
            row.status = Status.FAILED
            row.reason = "; ".join(
                f"{o.name}: {o.reason}" for o in row.comparison.outputs if not o.passed and o.reason
            ) or f"outputs outside tolerance: {', '.join(failed)}"


def resolve_candidates(
    names: Sequence[str], reference: str | None, default_precision: Mapping[str, str], *, allow_repeats: bool = False
) -> tuple[list[Candidate], Candidate]:
    """Backends in the order given and which one is the reference.

    A backend listed twice is refused, unless ``allow_repeats`` (`run`: the same backend twice is a determinism
    check): then each repeat is a candidate of its own, labelled ``ort#2``, ``ort#3``; ``reference`` may name one.
    """
    if not names:
        raise InvalidArgumentError("Give at least one --backend.")
    cands: list[Candidate] = []
    for n in names:
        name = get_backend(split_options(n)[0].partition(":")[0]).name
        c = Candidate.parse(n, default_precision.get(name, "fp32"))
        seen = sum(1 for o in cands if (o.backend, o.precision, o.options) == (c.backend, c.precision, c.options))
        if seen and not allow_repeats:
            raise InvalidArgumentError(f"--backend {c.label} is listed twice.")
        cands.append(Candidate(c.backend, c.precision, seen + 1, c.options))
    if reference is None:
        return cands, cands[0]
    text, hash_sign, number = reference.rpartition("#")
    if not (hash_sign and number.isdigit()):
        text, number = reference, "1"
    ref_name = get_backend(split_options(text)[0].partition(":")[0]).name
    ref_c = Candidate.parse(text, default_precision.get(ref_name, "fp32"))
    ref_c = Candidate(ref_c.backend, ref_c.precision, int(number), ref_c.options)
    if ref_c not in cands:
        raise InvalidArgumentError(
            f"--reference {reference!r} is not among the backends given ({', '.join(c.label for c in cands)})."
        )
    return cands, ref_c


def model_io(
    path: Path, fmt: str, settings: BackendSettings | None = None, *, check: bool = False
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of a model: read from ONNX/Paddle files without loading weights; for PyTorch
    sources, inputs from ``--input`` and outputs from one eager CPU run. ``check`` runs the ONNX checker on an
    ONNX model (an invalid graph is a user error, as in `inspect`)."""
    if fmt in ("torch", "aoti"):
        from enginekit.backends.torch_io import torch_source_io

        torch_inputs = settings.torch_inputs if settings is not None else ()
        trusted = settings is not None and settings.trust_remote_code
        from enginekit.sources.torch_load import check_source_trust

        check_source_trust(path, trusted)  # before anything else about a file that runs code when loaded
        if fmt == "torch" and not torch_inputs:  # an AOTI package carries its own specs
            raise InvalidArgumentError("PyTorch sources need --input NAME:DIMS[:DTYPE] for every forward() argument.")
        return torch_source_io(path, torch_inputs, trust_remote_code=trusted)
    if fmt == "engine":  # the IO enginekit's manifest recorded beside the plan
        from enginekit.backends.tensorrt.runner import engine_io

        return engine_io(path)
    if fmt == "paddle":
        from enginekit.backends.paddle import read_program_info
        from enginekit.sources.paddle_files import resolve_paddle_model

        info = read_program_info(resolve_paddle_model(path))
        return list(info.inputs), list(info.outputs)
    from enginekit.graph.io import input_specs, output_specs
    from enginekit.graph.load import load_model

    # Without ``check`` the backends judge what they can run (the ONNX checker is stricter than ONNX Runtime).
    model = load_model(path, load_external_data=False, check=check)
    return input_specs(model), output_specs(model)


def check_backend_settings(cands: Sequence[Candidate], settings: BackendSettings, *, strict_plan: bool = False) -> None:
    """Refuse bad backend options (user errors, exit 2) before any backend runs."""
    if settings.ort_providers and any(c.backend == "ort" for c in cands) and get_backend("ort").available().ok:
        from enginekit.backends.ort import resolve_providers

        resolve_providers(settings.ort_providers)
    if settings.precision_plan is not None:
        check_plan_candidates(cands, settings, strict=strict_plan)


_TORCH_PLAN_BACKENDS = ("torch", "inductor")


def check_plan_candidates(cands: Sequence[Candidate], settings: BackendSettings, *, strict: bool) -> None:
    """--precision-plan: a readable plan, made for the precision of every fp16/bf16 candidate that applies plans.

    Reduced-precision candidates that do not apply plans (openvino:bf16, aoti, TensorRT runners) are refused when
    ``strict`` (`run`: the backends were listed explicitly), else logged as running without it (`optimize`, whose
    TensorRT builds at the plan's precision take the plan). A plan no candidate applies is refused or logged alike.
    """
    from enginekit.graph.precision import load_plan

    assert settings.precision_plan is not None
    plan = load_plan(settings.precision_plan)

    reduced = [c for c in cands if c.precision in REDUCED_FLOAT_PRECISIONS]
    users = [c for c in reduced if c.precision in get_backend(c.backend).plan_precisions]
    wrong = [c.label for c in users if c.precision != plan.precision]
    if wrong:
        raise InvalidArgumentError(f"--precision-plan {str(settings.precision_plan)!r} is a {plan.precision} plan, "
                                   f"and {', '.join(wrong)} run(s) another precision.",
                                   hint=f"Run them at {plan.precision}, or use a plan made for their precision.")
    if settings.precision_plan_model is None and any(c.backend in _TORCH_PLAN_BACKENDS for c in users):
        raise InvalidArgumentError("--precision-plan on the torch/inductor backends needs --precision-plan-model: the "
                                   "ONNX the plan was made for, as `enginekit export` wrote it (its node metadata "
                                   "maps plan nodes to PyTorch modules).")
    ignored = [c.label for c in reduced if c not in users]
    what = ("--precision-plan applies to ort:fp16, onnx-reference:fp16|bf16, torch:fp16|bf16, inductor:fp16|bf16 "
            "and TensorRT engines built from the ONNX at fp16|bf16 (INT8 plans: `enginekit build --precision-plan`)")
    example = f"--backend {'ort' if plan.precision == 'fp16' else 'onnx-reference'}:{plan.precision}"
    if strict and ignored:
        raise InvalidArgumentError(f"{', '.join(ignored)} cannot apply the precision plan: {what}.")
    if strict and not users:
        raise InvalidArgumentError(f"No listed backend applies the {plan.precision} precision plan: {what}.",
                                   hint=f"Add a backend that does, e.g. {example}.")
    if ignored:
        log.warning("%s run(s) without the precision plan (%s)", ", ".join(ignored), what)
    if not users:
        log.warning("no candidate applies the %s precision plan (%s)", plan.precision, what)


def _default_precisions(settings: RunSettings, fmt: str) -> dict[str, str]:
    """Precision of a candidate named without one: openvino's --openvino-precision; a TensorRT engine file's own
    precision (from its manifest), so that an fp16 engine is judged by fp16's tolerances."""
    defaults = {"openvino": settings.backend.openvino_precision}
    if fmt == "engine":
        from enginekit.backends.tensorrt.manifest import read_manifest

        manifest = read_manifest(Path(settings.model))
        built = str(((manifest or {}).get("precision") or {}).get("precision") or "fp32")
        if built in ("fp16", "bf16", "int8"):
            defaults.update({"tensorrt": built, "tensorrt-rtx": built})
    return defaults


def run_backends(settings: RunSettings, feed: Mapping[str, np.ndarray] | None = None) -> RunResult:
    """The library call behind `enginekit run`. ``feed``: arrays in memory instead of ``settings.feeds`` (checked
    against the model's inputs, and for NaN/Inf unless ``settings.feeds.allow_nonfinite``, as a loaded feed is)."""
    from enginekit.compare import settings_for_precision, validate_tolerance_names
    from enginekit.registry import check_format
    from enginekit.sources.detect import model_format

    fmt = model_format(settings.model)
    cands, ref = resolve_candidates(settings.backends, settings.reference, _default_precisions(settings, fmt),
                                    allow_repeats=True)
    for c in cands:
        check_format(get_backend(c.backend), fmt)
    inputs, outputs = model_io(Path(settings.model), fmt, settings.backend, check=settings.check_model)
    validate_tolerance_names(settings.compare, [o.name for o in outputs])
    check_backend_settings(cands, settings.backend, strict_plan=True)
    plan_model = {"onnx": settings.model, "torch": settings.backend.precision_plan_model}.get(fmt)
    if settings.backend.precision_plan is not None and plan_model is not None:  # unknown plan nodes: exit 2 now
        from enginekit.graph.load import load_model
        from enginekit.graph.precision import check_plan_nodes, load_plan

        check_plan_nodes(load_plan(settings.backend.precision_plan),
                         load_model(Path(plan_model), load_external_data=False, check=False))
    from enginekit.data import check_feed, check_finite, prepare_feed

    if feed is None:
        feed = prepare_feed(inputs, settings.feeds)
    else:
        feed = {k: np.asarray(v) for k, v in feed.items()}
        check_feed(inputs, feed, where="feeds")
        if not settings.feeds.allow_nonfinite:
            check_finite(feed, where="feeds")
    ordered = [ref] + [c for c in cands if c != ref]
    rows: dict[Candidate, BackendRow] = {}
    for cand in ordered:
        log.info("running %s", cand.label)

        def work(runner: Runner) -> tuple[dict[str, np.ndarray], float]:
            t0 = time.perf_counter()
            out = runner.infer(feed)
            return out, time.perf_counter() - t0

        row, value = use_runner(cand, Path(settings.model), settings.backend, work)
        if value is not None:
            row.outputs, row.infer_s = value
        rows[cand] = row
    ref_row = rows[ref]
    ref_row.is_reference = True
    ref_out = ref_row.outputs or {}  # candidates below FP32 are judged by the one per-precision rule
    compare_rows([rows[c] for c in ordered], ref_row,
                 lambda precision: settings_for_precision(settings.compare, precision, ref_out))
    return RunResult(str(settings.model), ref.label, feed, [rows[c] for c in cands])
