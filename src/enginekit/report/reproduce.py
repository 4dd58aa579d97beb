"""The CLI command equivalent to a settings object, for reproduce.sh when the Python API ran the job."""

from __future__ import annotations

from enginekit.compare import CompareSettings, Tolerances
from enginekit.settings import BackendSettings, ExportSettings, FeedSettings, OptimizeSettings, SearchSettings


def _tolerance_args(flag: str, tol: Tolerances) -> list[str]:
    args = [flag, repr(tol.default)]
    for name, value in tol.per_output:
        args += [flag, f"{name}:{value!r}"]
    return args


def _feed_args(f: FeedSettings) -> list[str]:
    args = ["--seed", str(f.seed)]
    for shape in f.inputs:
        args += ["--input", shape.to_arg()]
    if f.load_inputs is not None:
        args += ["--load-inputs", str(f.load_inputs)]
    for r in f.val_ranges:
        args += ["--val-range", (f"{r.name}:" if r.name else "") + f"{r.low!r},{r.high!r}"]
    if f.allow_nonfinite:
        args.append("--allow-nonfinite")
    return args


def _compare_args(c: CompareSettings) -> list[str]:
    args = _tolerance_args("--atol", c.atol) + _tolerance_args("--rtol", c.rtol)
    args += ["--check-error-stat", c.check_error_stat]
    return args + (["--validate"] if c.validate else [])


def _backend_args(b: BackendSettings) -> list[str]:
    return [a for p in b.ort_providers for a in ("--ort-providers", p)]


def _export_args(e: ExportSettings) -> list[str]:
    args = [a for t in e.inputs for a in ("--input", t)]
    for d in e.dynamic:
        rng = f"[{d.min or ''}..{d.max or ''}]" if d.min or d.max else ""
        args += ["--dynamic", f"{d.input}:{d.axis}={d.label}{rng}"]
    if e.weights is not None:
        args += ["--weights", str(e.weights)]
    args += ["--exporter", e.exporter, "--opset", str(e.opset or "auto"), "--target", e.target]
    for r in e.val_ranges:
        args += ["--val-range", (f"{r.name}:" if r.name else "") + f"{r.low!r},{r.high!r}"]
    return args


def _search_args(search: SearchSettings | None) -> list[str]:
    if search is None:
        return []
    args = ["--search-batch", ",".join(map(str, search.batches))] if search.batches else []
    args += [a for c in search.candidates for a in ("--search-candidate", c)]
    args += [a for p in search.precisions for a in ("--search-precision", p)]
    return args + ["--search-duration", f"{search.duration_s!r}s"]


def optimize_command(s: OptimizeSettings) -> list[str]:
    if s.export is not None:
        cmd = ["enginekit", "optimize", s.export.source, *_export_args(s.export), "--seed", str(s.export.seed)]
        cmd += [] if s.prepare is not None else ["--no-prepare"]
        for b in s.backends:
            cmd += ["--backend", b]
        if s.reference:
            cmd += ["--reference", s.reference]
        if s.backend.torch_device != "auto":
            cmd += ["--torch-device", s.backend.torch_device]
        cmd += _search_args(s.search)
        return cmd + _compare_args(s.compare) + _backend_args(s.backend) + ["--report", str(s.report_dir)]
    cmd = ["enginekit", "optimize"] + ([str(s.model)] if s.model is not None else [])
    cmd += ["--prepare"] if s.prepare is not None else []
    for b in s.backends:
        cmd += ["--backend", b]
    if s.reference:
        cmd += ["--reference", s.reference]
    if s.dataset is not None:
        cmd += ["--dataset", str(s.dataset)]
    if s.batch_size:
        cmd += ["--batch-size", str(s.batch_size)]
    cmd += _feed_args(s.feeds) + _compare_args(s.compare) + _backend_args(s.backend)
    return cmd + ["--report", str(s.report_dir)]
