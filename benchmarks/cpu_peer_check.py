"""Do `enginekit bench` CPU numbers agree with the runtimes' own benchmark tools?

Runs, in alternating order and each in a fresh process, several repetitions of

* `enginekit bench -b ort`      vs  `python -m onnxruntime.tools.onnxruntime_test` (prints the mean of N sess.run)
* `enginekit bench -b openvino` vs  OpenVINO's `benchmark_app` (sync API, latency hint, f32; median/avg/min/max)

on the same model, input shape and iteration count, and prints one row per run and a summary.
Both sides use each runtime's defaults: onnxruntime with default session options (threads = physical
cores, graph optimization ALL, spinning on); OpenVINO compiled with INFERENCE_PRECISION_HINT f32, whose
default PERFORMANCE_HINT is LATENCY (1 stream, threads = cores, pinning on) -- `-hint latency` in benchmark_app.

    python benchmarks/cpu_peer_check.py                     # PP-OCRv4 detector at 1x3x320x320, 3 repetitions
    python benchmarks/cpu_peer_check.py --static --reps 5   # also on a copy with the input shape fixed
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
# Runs `enginekit` in a fresh interpreter; registers `bench` when cli/main.py does not (yet).
ENGINEKIT_SHIM = (
    "import sys; from enginekit.cli.main import app, main; from enginekit.cli import bench_cmd\n"
    "if not any(c.name == 'bench' for c in app.registered_commands):\n"
    "    app.command('bench', help=bench_cmd.HELP)(bench_cmd.bench)\n"
    "main(sys.argv[1:])"
)


@dataclass
class Run:
    tool: str
    backend: str
    model: str
    rep: int
    command: list[str]
    median_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    runs: int | None = None
    foreign_cpu: float = 0.0  # share of the machine's CPU used by other processes during this run
    extra: dict[str, float] = field(default_factory=dict)


def default_model() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("rapidocr-onnxruntime is not installed (pip install --no-deps rapidocr-onnxruntime)")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "ch_PP-OCRv4_det_infer.onnx"


def input_info(model: Path) -> tuple[str, list[int | str]]:
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    vi = next(i for i in proto.graph.input if i.name not in inits)
    dims: list[int | str] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in
                             vi.type.tensor_type.shape.dim]
    return vi.name, dims


def fixed_copy(model: Path, name: str, shape: list[int], folder: Path) -> Path:
    """The model with its input shape fixed, made by onnxruntime's own tool."""
    out = folder / f"{model.stem}.static.onnx"
    subprocess.run([sys.executable, "-m", "onnxruntime.tools.make_dynamic_shape_fixed", "--input_name", name,
                    "--input_shape", ",".join(map(str, shape)), str(model), str(out)], check=True)
    return out


def busy_cpu_s() -> float:
    """CPU seconds every process on this machine has used (busy jiffies of /proc/stat, steal included)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


FOREIGN_CPU: list[float] = []  # per command: share of the machine used by other processes while it ran


def run(cmd: list[str]) -> str:
    busy0, own0, t0 = busy_cpu_s(), children_cpu_s(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    foreign = (busy_cpu_s() - busy0) - (children_cpu_s() - own0)
    FOREIGN_CPU.append(max(foreign, 0.0) / (wall * (os.cpu_count() or 1)))
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def enginekit(backend: str, model: Path, name: str, shape: list[int], n: int, warmup_s: float, rep: int) -> Run:
    args = ["bench", str(model), "-b", backend, "--input", f"{name}:{'x'.join(map(str, shape))}",
            "--warmup", f"{warmup_s}s", "--duration", "0", "--iterations", str(n), "--json"]
    out = run([sys.executable, "-c", ENGINEKIT_SHIM, *args])
    row = json.loads(out[out.index("{"):])["rows"][0]
    lat = row["timing"]["latency"]
    return Run("enginekit bench", backend, model.name, rep, ["enginekit", *args], lat["median_ms"], lat["mean_ms"],
               lat["min_ms"], lat["max_ms"], row["timing"]["runs"])


def ort_test(model: Path, dims: list[int | str], shape: list[int], n: int, rep: int) -> Run:
    symbolic = ",".join(f"{d}={s}" for d, s in zip(dims, shape, strict=True) if isinstance(d, str) and d)
    cmd = [sys.executable, "-m", "onnxruntime.tools.onnxruntime_test", str(model), str(n)]
    cmd += ["--symbolic_dims", symbolic] if symbolic else []

    def avg(command: list[str]) -> float:
        out = run(command)
        m = re.search(r"avg latency: ([\d.]+) ms", out)
        if not m:
            sys.exit(f"no 'avg latency' in onnxruntime_test output:\n{out}")
        return float(m.group(1))

    mean = avg(cmd)
    # The tool has no warm-up: its mean includes the first (cold) sess.run. The same tool with 1 iteration
    # measures that first call (in a fresh process), so the warm mean is (n * mean - first) / (n - 1).
    first = avg([*cmd[:4], "1", *cmd[5:]])
    warm = (n * mean - first) / (n - 1) if n > 1 else mean
    return Run("onnxruntime_test", "ort", model.name, rep, cmd, mean_ms=mean, runs=n,
               extra={"first_ms": first, "mean_without_first_ms": warm})


def benchmark_app(model: Path, name: str, shape: list[int], n: int, static: bool, rep: int) -> Run:
    shape_arg = f"{name}[{','.join(map(str, shape))}]"
    cmd = [str(BIN / "benchmark_app"), "-m", str(model), "-d", "CPU", "-hint", "latency", "-api", "sync",
           "-infer_precision", "f32", "-niter", str(n)]
    # a dynamic model stays dynamic (as enginekit compiles it): -data_shape, inputs filled once before the loop
    cmd += ["-shape", shape_arg] if static else ["-data_shape", shape_arg, "-inference_only", "true"]
    out = run(cmd)

    def value(label: str) -> float:
        m = re.search(rf"{label}:?\s+([\d.]+)", out)
        if not m:
            sys.exit(f"no {label!r} in benchmark_app output:\n{out}")
        return float(m.group(1))

    return Run("benchmark_app", "openvino", model.name, rep, cmd, value("Median"), value("Average"), value("Min"),
               value("Max"), int(value("Count")), extra={"first_ms": value("First inference took")})


def pair_ratio(runs: list[Run], model: str, rep: int, backend: str, peer: str, ours_stat: str,
               peer_stat: str) -> float | None:
    ours = [r for r in runs if (r.model, r.tool, r.backend, r.rep) == (model, "enginekit bench", backend, rep)]
    theirs = [r for r in runs if (r.model, r.tool, r.rep) == (model, peer, rep)]
    if not ours or not theirs:
        return None
    mine = getattr(ours[0], ours_stat)
    other = theirs[0].extra.get(peer_stat) or getattr(theirs[0], peer_stat, None)
    return mine / other if mine and other else None


def explain_openvino(model: Path, name: str, shape: list[int], blocks: int = 10, calls: int = 30) -> None:
    """In one process, in alternating blocks: what benchmark_app times vs what enginekit times.

    a. ``request.infer()`` on input tensors set once, timed by OpenVINO itself (``request.latency``: what
       benchmark_app reports) and by perf_counter_ns around the Python call;
    b. enginekit's OpenVINO runner ``run_staged(feed)`` (the call `enginekit bench` times on CPU).
    """
    import numpy as np
    import openvino as ov

    from enginekit.backends.openvino import OpenVinoRunner
    from enginekit.settings import BackendSettings

    feed = {name: np.random.default_rng(1).random(shape, dtype=np.float32)}
    runner = OpenVinoRunner(model, BackendSettings())
    with runner:
        request = runner._request  # the runner's own compiled model and infer request
        request.set_input_tensor(ov.Tensor(feed[name].copy()))
        rows: dict[str, list[float]] = {"request.latency (benchmark_app)": [], "perf_counter around infer()": [],
                                        "enginekit run_staged": []}
        for _ in range(10):
            request.infer()
            runner.run_staged(feed)
        for _ in range(blocks):
            lat, wall = [], []
            for _ in range(calls):
                t0 = time.perf_counter_ns()
                request.infer()
                wall.append(time.perf_counter_ns() - t0)
                lat.append(request.latency)
            ours = []
            for _ in range(calls):
                t0 = time.perf_counter_ns()
                runner.run_staged(feed)
                ours.append(time.perf_counter_ns() - t0)
            rows["request.latency (benchmark_app)"].append(statistics.median(lat))
            rows["perf_counter around infer()"].append(statistics.median(wall) / 1e6)
            rows["enginekit run_staged"].append(statistics.median(ours) / 1e6)
    base = rows["request.latency (benchmark_app)"]
    print(f"\nOpenVINO, {model.name}, one process, {blocks} alternating blocks of {calls} calls (block medians):\n")
    print("| what is timed | median ms | ÷ request.latency, per block (median) |")
    print("|---|---|---|")
    for label, values in rows.items():
        ratio = statistics.median(v / b for v, b in zip(values, base, strict=True))
        print(f"| {label} | {statistics.median(values):.3f} | {ratio:.3f} |")


def fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: PaddleOCR v4 text detector)")
    p.add_argument("--shape", default="1x3x320x320", help="input shape, dims joined by x")
    p.add_argument("--iterations", type=int, default=200, help="timed calls per run, the same for every tool")
    p.add_argument("--warmup", type=float, default=1.0, help="enginekit warm-up seconds")
    p.add_argument("--reps", type=int, default=3, help="alternating repetitions")
    p.add_argument("--static", action="store_true", help="also compare on a copy with the input shape fixed")
    p.add_argument("--max-foreign", type=float, default=0.05, help="leave out runs during which other processes "
                   "used more than this share of the CPU (default 0.05)")
    p.add_argument("--explain-openvino", action="store_true", help="also time, in one process, what "
                   "benchmark_app times against what enginekit times")
    p.add_argument("--json", type=Path, default=None, help="write every run to this file")
    a = p.parse_args()
    model = a.model or default_model()
    shape = [int(d) for d in a.shape.split("x")]
    name, dims = input_info(model)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        models = [(model, False)] + ([(fixed_copy(model, name, shape, Path(tmp)), True)] if a.static else [])
        for m, static in models:
            for rep in range(a.reps):
                jobs: list[tuple[Callable[..., Run], tuple[object, ...]]] = [
                    (enginekit, ("ort", m, name, shape, a.iterations, a.warmup, rep)),
                    (ort_test, (m, dims, shape, a.iterations, rep)),
                    (enginekit, ("openvino", m, name, shape, a.iterations, a.warmup, rep)),
                    (benchmark_app, (m, name, shape, a.iterations, static, rep)),
                ]
                for fn, args in jobs if rep % 2 == 0 else jobs[::-1]:  # alternate which tool goes first
                    before = len(FOREIGN_CPU)
                    r = fn(*args)
                    r.foreign_cpu = max(FOREIGN_CPU[before:])
                    runs.append(r)
                    print(f"{r.model:34} {r.tool:16} {r.backend:8} rep {r.rep}: median {fmt(r.median_ms)} ms, "
                          f"mean {fmt(r.mean_ms)} ms; other processes: {r.foreign_cpu:.0%} CPU", file=sys.stderr)
    quiet = [r for r in runs if r.foreign_cpu <= a.max_foreign]
    print(f"\nmodel {model.name}, input {name}:{a.shape}, {a.iterations} timed calls per run, {a.reps} repetitions; "
          f"{len(runs) - len(quiet)} of {len(runs)} runs left out: other processes used more than "
          f"{a.max_foreign:.0%} of the CPU while they ran")
    print("(per tool: the median over the runs kept, and their range in brackets)\n")
    print("| model | tool | backend | runs kept | median ms | mean ms | first call ms | mean without first call ms |")
    print("|---|---|---|---|---|---|---|---|")

    def agg(values: list[float]) -> str:
        if not values:
            return "–"
        return f"{statistics.median(values):.2f} [{min(values):.2f}–{max(values):.2f}]"

    for key in dict.fromkeys((r.model, r.tool, r.backend) for r in runs):
        group = [r for r in quiet if (r.model, r.tool, r.backend) == key]
        total = sum(1 for r in runs if (r.model, r.tool, r.backend) == key)
        first = [r.extra["first_ms"] for r in group if "first_ms" in r.extra]
        warm = [r.extra["mean_without_first_ms"] for r in group if "mean_without_first_ms" in r.extra]
        print(f"| {key[0]} | {key[1]} | {key[2]} | {len(group)}/{total} | "
              f"{agg([r.median_ms for r in group if r.median_ms is not None])} | "
              f"{agg([r.mean_ms for r in group if r.mean_ms is not None])} | {agg(first)} | {agg(warm)} |")
    # Paired by repetition (the two runs are adjacent in time), so that drifts of the machine mostly cancel:
    # ort: enginekit mean / onnxruntime_test mean without its cold first call; openvino: median / median.
    print("\n| model | backend | pairs | enginekit ÷ peer: median | quartiles | pairs within ±5 % |")
    print("|---|---|---|---|---|---|")
    for mname in dict.fromkeys(r.model for r in runs):
        for backend, peer, ours_stat, peer_stat in (
            ("ort", "onnxruntime_test", "mean_ms", "mean_without_first_ms"),
            ("openvino", "benchmark_app", "median_ms", "median_ms"),
        ):
            ratios = [x for rep in range(a.reps) if (x := pair_ratio(quiet, mname, rep, backend, peer, ours_stat,
                                                                     peer_stat)) is not None]
            if len(ratios) < 2:
                print(f"| {mname} | {backend} | {len(ratios)} | – | – | – |")
                continue
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            close = sum(1 for x in ratios if abs(x - 1) <= 0.05)
            print(f"| {mname} | {backend} | {len(ratios)} | {statistics.median(ratios):.3f} | {q1:.3f}–{q3:.3f} | "
                  f"{close}/{len(ratios)} |")
    print("\nCommands (last repetition):")
    for key in dict.fromkeys((r.model, r.tool, r.backend) for r in runs):
        last = [r for r in runs if (r.model, r.tool, r.backend) == key][-1]
        print("  " + shlex.join(last.command))
    if a.explain_openvino:
        explain_openvino(model, name, shape)
    if a.json:
        a.json.write_text(json.dumps([r.__dict__ for r in runs], indent=2))


if __name__ == "__main__":
    main()
