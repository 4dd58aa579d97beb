"""Where a configuration's kernel time goes, and how much faster it could get at most (Amdahl's law).

    PYTHONPATH=src python benchmarks/gpu_breakdown.py benchmarks/models.py:resnet50 --input x:batch,3,224,224 \\
        --batch 256 -c inductor:fp16/mode=default/freezing=off/channels_last=off \\
        -c inductor:fp16/mode=reduce-overhead/freezing=on/channels_last=on \\
        -c torch:fp16/channels_last=on/cuda_graph=on \\
        --json-out r50_breakdown.json
    PYTHONPATH=src python benchmarks/gpu_breakdown.py benchmarks/models.py:bert_base --input ids:batch,128:int64 \\
        --val-range 0,30521 --batch 64 -c inductor:fp16/mode=default/freezing=off --json-out bert_breakdown.json

Each -c LABEL is an enginekit candidate (``NAME[:PRECISION][/KEY=VALUE]...``), built by enginekit's own API
(``use_runner``), so the profiled call is the one `optimize` and `bench` time: ``runner.run_staged`` on inputs
staged on the device. Per label: a few calls (they compile), the wall time per call (synchronized loop), then
``--calls`` calls under torch.profiler: the device kernel time by category (gemm, conv, attention,
normalization/elementwise, copy/layout, other; enginekit.bench.kernels.classify), the largest kernels, and
the Amdahl bounds: what the call could gain at most if its matmuls were free, twice as fast (an 8-bit path),
or at the GPU's measured fp16 GEMM throughput (FLOPs from torch's FlopCounterMode on an eager FP32 runner of the
same model; FLOPs do not depend on the engine). On CPU (``--device cpu``) the same runs with the self CPU
time of aten ops instead of kernels, to check the script; the numbers say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_INT_RANGE = (0.0, 1000.0)


def make_feed(specs: list[Any], batch: int, val_range: tuple[float, float] | None, seed: int = 0
              ) -> dict[str, np.ndarray]:
    """Numpy inputs at ``batch``: floats standard normal (uniform in --val-range when given), integers uniform in
    --val-range (default 0..1000, both ends included), booleans fair coins. The same seed for every label."""
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(d if isinstance(d, int) else batch for d in (spec.shape or ()))
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            values = rng.standard_normal(shape) if val_range is None else rng.uniform(*val_range, size=shape)
            feed[spec.name] = values.astype(dtype)
        elif dtype.kind in "iu":
            lo, hi = val_range or DEFAULT_INT_RANGE
            feed[spec.name] = rng.integers(int(lo), int(hi), size=shape, endpoint=True).astype(dtype)
        elif dtype.kind == "b":
            feed[spec.name] = rng.random(shape) < 0.5
        else:
            raise SystemExit(f"input {spec.name!r}: no random data for dtype {spec.dtype}")
    return feed


def count_model_flops(source: Path, settings: Any, batch: int, val_range: tuple[float, float] | None
                      ) -> tuple[float | None, str]:
    """FLOPs of one call, counted on an eager FP32 runner (a compiled runner would run eagerly under the counter,
    which enginekit's inductor runner refuses as an eager fallback)."""
    from enginekit.multirun import Candidate, use_runner
    from enginekit.pipeline.search import count_flops

    row, flops = use_runner(Candidate.parse("torch"), source, settings,
                            lambda r: count_flops(r, make_feed(r.inputs(), batch, val_range)))
    return flops, row.reason


def profile_label(label: str, source: Path, settings: Any, args: argparse.Namespace, flops: float | None,
                  peak: float | None) -> dict[str, Any]:
    """One candidate: build it through enginekit, warm it up, time it, profile it; failures become the row."""
    from enginekit.bench.kernels import amdahl_bounds, profile_callable
    from enginekit.multirun import Candidate, use_runner

    def work(runner: Any) -> dict[str, Any]:
        staged = runner.stage(make_feed(runner.inputs(), args.batch, args.val_range))
        t0 = time.perf_counter()
        runner.run_staged(staged)  # compiles (or captures a CUDA graph) for this shape
        runner.synchronize()
        first_s = time.perf_counter() - t0
        for _ in range(args.warmup):
            runner.run_staged(staged)
        runner.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.calls):
            runner.run_staged(staged)
        runner.synchronize()
        wall_ms = (time.perf_counter() - t0) * 1e3 / args.calls
        b = profile_callable(lambda: runner.run_staged(staged), calls=args.calls, device=args.device,
                             warmup=1, sync=runner.synchronize, top=args.top)
        return {"first_call_s": round(first_s, 3), "wall_ms": wall_ms, "breakdown": b}

    try:
        candidate = Candidate.parse(label)
    except Exception as exc:  # noqa: BLE001 - a bad label is a row, the other labels still run
        return {"label": label, "status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    t0 = time.perf_counter()
    row, value = use_runner(candidate, source, settings, work)
    out: dict[str, Any] = {"label": candidate.label, "status": str(row.status), "reason": row.reason,
                           "seconds": round(time.perf_counter() - t0, 1)}
    if row.status != "ok" or value is None:
        return out
    b = value.pop("breakdown")
    out.update(value)
    out["kernel_share_of_wall"] = b.total_ms / value["wall_ms"] if value["wall_ms"] > 0 else None
    out["breakdown"] = b.to_dict()
    out["bounds"] = amdahl_bounds(b, flops, peak)
    out["details"] = {k: row.details.get(k) for k in ("compile", "channels_last", "cuda_graph", "cudagraphs",
                                                      "cudnn_benchmark", "device", "torch") if k in row.details}
    out["_breakdown"] = b
    return out


def print_row(row: dict[str, Any]) -> None:
    from enginekit.bench.kernels import breakdown_table, top_table

    print(f"\n### {row['label']}\n", flush=True)
    if row["status"] != "ok" or "breakdown" not in row:
        print(f"{row['status']}: {row['reason']}", flush=True)
        return
    b = row["_breakdown"]
    what = "device kernel time" if b.device == "cuda" else "self CPU time of aten ops"
    share = row["kernel_share_of_wall"]
    print(f"wall {row['wall_ms']:.3f} ms/call (synchronized loop, not profiled); {what} {b.total_ms:.3f} ms/call"
          + (f" = {share:.0%} of the wall time" if share is not None else "")
          + f"; first call {row['first_call_s']} s; {b.calls} calls profiled\n")
    print("\n".join(breakdown_table(b, row["bounds"])))
    print(f"\nLargest {len(b.top)} kernels:\n")
    print("\n".join(top_table(b)), flush=True)


def parse_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    lo, _, hi = text.partition(",")
    try:
        low, high = float(lo), float(hi)
    except ValueError:
        raise SystemExit(f"--val-range {text!r}: expected LO,HI") from None
    if low > high:
        raise SystemExit(f"--val-range {text!r}: LO > HI")
    return low, high


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="a PyTorch source, e.g. benchmarks/models.py:resnet50")
    ap.add_argument("--input", action="append", required=True, help="NAME:DIMS[:DTYPE] per forward() argument, "
                    "a symbolic dim (batch) for the batch, e.g. x:batch,3,224,224 or ids:batch,128:int64")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("-c", "--candidate", action="append", required=True, dest="labels",
                    help="an enginekit candidate label, e.g. inductor:fp16/mode=reduce-overhead/freezing=on")
    ap.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    ap.add_argument("--calls", type=int, default=20, help="profiled calls (and timed calls) per label")
    ap.add_argument("--warmup", type=int, default=3, help="calls after the first (compiling) one, not timed")
    ap.add_argument("--top", type=int, default=10, help="largest kernels to list")
    ap.add_argument("--val-range", type=parse_range, metavar="LO,HI",
                    help="integers uniform in LO..HI (default 0..1000); floats uniform in it (default normal)")
    ap.add_argument("--peak-tflops", type=float, help="the matmul peak (default on CUDA: a measured fp16 GEMM)")
    ap.add_argument("--no-flops", action="store_true", help="skip the FLOP count (and the at-peak bound)")
    ap.add_argument("--json-out", type=Path, help="every row as JSON (rewritten after each label)")
    args = ap.parse_args()

    import torch

    from enginekit.pipeline.search import gemm_tflops
    from enginekit.settings import BackendSettings

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda":  # CUPTI must be started before any CUDA graph is captured, or replays show no kernels
        init = getattr(getattr(torch.profiler, "_utils", None), "_init_for_cuda_graphs", None)
        if init is not None:
            init()
    source = Path(args.source)
    settings = BackendSettings(torch_inputs=tuple(args.input), torch_device=args.device)
    env: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": args.device,
                           "device_name": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"}
    peak = args.peak_tflops
    if peak is None and args.device == "cuda":
        peak = round(gemm_tflops(torch), 1)
    env["peak_tflops"] = peak
    flops, why = (None, "--no-flops") if args.no_flops else count_model_flops(source, settings, args.batch,
                                                                             args.val_range)
    print(json.dumps(env), flush=True)
    print(f"FLOPs per call (batch {args.batch}): " + (f"{flops / 1e9:.3f} GFLOP" if flops else f"n/a ({why})")
          + (f"; matmul peak {peak} TFLOP/s" if peak else ""), flush=True)
    result: dict[str, Any] = {"source": args.source, "inputs": args.input, "batch": args.batch, "calls": args.calls,
                              "env": env, "flops_per_call": flops, "rows": []}
    for label in args.labels:
        row = profile_label(label, source, settings, args, flops, peak)
        print_row(row)
        row.pop("_breakdown", None)
        result["rows"].append(row)
        if args.json_out:  # rows survive a run cut short
            args.json_out.write_text(json.dumps(result, indent=2, default=str))
    return 0 if all(r["status"] == "ok" for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
