"""PyTorch baselines vs enginekit's best engine on one GPU, each verified against eager FP32.

    PYTHONPATH=src python benchmarks/gpu_benchmark.py resnet50 --batches 1,32,256 --json-out r50.json
    PYTHONPATH=src python benchmarks/gpu_benchmark.py bert --batches 1,64 --json-out bert.json

Rows: eager fp32 (the reference), eager fp16 channels-last, plain torch.compile (default mode, fp32), and
enginekit candidates (inductor fp16/bf16 with freezing, channels-last where it helps, CUDA graphs); the
fastest enginekit candidate that passes verification is "enginekit best". Every row is timed with
enginekit's bench protocol (CUDA events, data resident on the GPU, warm-up by time, duration + minimum
iterations). The compute-bound floor is FLOPs per item (torch's FlopCounterMode) over the measured
fp16 matrix throughput (an 8192³ GEMM).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = {
    "resnet50": (f"{HERE / 'models.py'}:resnet50", "x:batch,3,224,224"),
    "bert": (f"{HERE / 'models.py'}:bert_base", "ids:batch,128:int64"),
    "tiny": (f"{HERE / 'models.py'}:tiny_convnet", "x:batch,3,32,32"),
}


def candidates(device: str) -> list[dict[str, Any]]:
    """Baselines first, then enginekit's candidates (the fastest verified one is "enginekit best")."""
    cuda = device == "cuda"
    low = "fp16" if cuda else "bf16"  # CPU kernels for fp16 convolutions are missing or slow
    graphs = "reduce-overhead" if cuda else "default"  # inductor's CUDA graphs (cudagraph trees)
    return [
        {"label": "eager fp32", "backend": "torch", "precision": "fp32", "opts": {"channels_last": "off"}},
        {"label": "eager fp16 channels-last", "backend": "torch", "precision": low, "opts": {"channels_last": "on"}},
        {"label": "torch.compile default", "backend": "inductor", "precision": "fp32",
         "opts": {"inductor_mode": "default", "inductor_freezing": False, "channels_last": "off"}},
        # PyTorch's own default runs cuDNN convolutions in TF32; enginekit's fp32 is strict FP32
        {"label": "torch.compile default tf32", "backend": "inductor", "precision": "tf32",
         "opts": {"inductor_mode": "default", "inductor_freezing": False, "channels_last": "off"}},
        {"label": f"enginekit inductor {low} freezing {graphs}", "backend": "inductor", "precision": low,
         "opts": {"inductor_mode": graphs, "inductor_freezing": True, "channels_last": "auto"}},
        {"label": f"enginekit inductor bf16 freezing {graphs}", "backend": "inductor", "precision": "bf16",
         "opts": {"inductor_mode": graphs, "inductor_freezing": True, "channels_last": "auto"}},
        {"label": f"enginekit eager {low} + CUDA graph", "backend": "torch", "precision": low,
         "opts": {"channels_last": "auto"}, "cuda_graph": cuda},
        {"label": f"enginekit aoti {low} + CUDA graph", "backend": "aoti", "precision": low,
         "opts": {"channels_last": "auto", "dynamic_shapes": "dynamic"}, "cuda_graph": cuda},
    ]


def gemm_tflops(torch: Any, dtype: Any, n: int = 8192, iters: int = 50) -> float:
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(5):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        a @ b
    end.record()
    end.synchronize()
    return 2 * n**3 * iters / (start.elapsed_time(end) / 1e3) / 1e12


def flops_per_item(torch: Any, runner: Any, feed: dict[str, np.ndarray]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    batch = next(iter(feed.values())).shape[0]
    staged = runner.stage(feed)
    # nn.TransformerEncoder's fused inference fast path is invisible to the counter: count the plain path
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter:
            runner.run_staged(staged)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return float(counter.get_total_flops()) / batch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(MODELS) + ["render"])
    ap.add_argument("results", nargs="?", type=Path, help="with `render`: a --json-out file to print again")
    ap.add_argument("--flops", type=float, help="with `render`: FLOPs per item, when the saved count is missing")
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--only", default="", help="comma-separated candidate labels to run")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    if args.model == "render":
        saved = json.loads(args.results.read_text())
        if args.flops:
            saved["flops_per_item"] = args.flops
        summary(saved)
        return 0

    import torch

    from enginekit.bench.protocol import make_step, run_protocol
    from enginekit.bench.stats import summarize
    from enginekit.compare import CompareSettings, Tolerances, compare_outputs
    from enginekit.data import random_feed
    from enginekit.pipeline import settings_for_precision
    from enginekit.registry import get_backend
    from enginekit.settings import BackendSettings, BenchSettings

    device = "cuda" if torch.cuda.is_available() else "cpu"
    source, spec = MODELS[args.model]
    batches = [int(b) for b in args.batches.split(",")]
    bench = BenchSettings(warmup_s=args.warmup, duration_s=args.duration, iterations=20)
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0)
           if device == "cuda" else "cpu"}
    if device == "cuda":
        env["fp16_gemm_tflops"] = round(gemm_tflops(torch, torch.float16), 1)
        env["bf16_gemm_tflops"] = round(gemm_tflops(torch, torch.bfloat16), 1)
    print(json.dumps(env), flush=True)
    base = BackendSettings(torch_inputs=(spec,), torch_device=device)
    cands = [c for c in candidates(device) if not args.only or c["label"] in args.only.split(",")]
    rows: list[dict[str, Any]] = []
    refs: dict[int, dict[str, np.ndarray]] = {}
    flops = None
    for cand in cands:
        settings = replace(base, **cand["opts"])
        t_load = time.perf_counter()
        runner = get_backend(cand["backend"]).create_runner(Path(source), settings, cand["precision"])
        with runner:
            for batch in batches:
                specs = runner.inputs()
                shapes = {s.name: tuple(batch if not isinstance(d, int) else d for d in (s.shape or ())) for s in specs}
                feed = random_feed(specs, shapes, seed=1)
                row: dict[str, Any] = {"candidate": cand["label"], "backend": cand["backend"],
                                       "precision": cand["precision"], "batch": batch}
                try:
                    t0 = time.perf_counter()
                    out = runner.infer(feed)  # compiles for this shape
                    row["first_call_s"] = round(time.perf_counter() - t0, 2)
                    if cand["label"] == "eager fp32":
                        refs[batch] = out
                        if flops is None:
                            flops = flops_per_item(torch, runner, feed)
                    ref = refs[batch]
                    # FP32 on another engine: different kernels and summation orders, so 1e-3; below FP32 the
                    # tolerance scales with the format and the output's magnitude (enginekit's default)
                    fp32 = CompareSettings(atol=Tolerances(1e-3), rtol=Tolerances(1e-3))
                    cmp = fp32 if cand["precision"] == "fp32" else settings_for_precision(
                        CompareSettings(), cand["precision"], ref)
                    comparison = compare_outputs(ref, out, cmp)
                    o = comparison.outputs[0]
                    row.update(verified=comparison.passed, max_abs_err=o.max_abs_err, cosine=o.cosine,
                               tolerance=o.atol)
                    step = make_step(runner, feed, cuda_graph=bool(cand.get("cuda_graph")))
                    samples = run_protocol(step, bench)
                    stats = summarize(samples.latency_ns)
                    row.update(median_ms=stats.median_ms, p99_ms=stats.p99_ms, cv=stats.cv, runs=samples.runs,
                               items_per_s=batch * 1e3 / stats.median_ms, describe=runner.describe())
                except Exception as exc:  # noqa: BLE001 - a failing candidate is a row, never the end
                    row.update(error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
                rows.append(row)
                line = json.dumps({k: v for k, v in row.items() if k != "describe"}, default=str)
                print(line, flush=True)
                if args.json_out:  # rows survive a run cut short
                    with open(args.json_out.with_suffix(".rows.jsonl"), "a") as fh:
                        fh.write(line + "\n")
        print(f"# {cand['label']}: {time.perf_counter() - t_load:.1f} s including compiles", flush=True)
    result = {"model": args.model, "env": env, "flops_per_item": flops, "rows": rows}
    summary(result)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2, default=str))
    return 0


def summary(result: dict[str, Any]) -> None:
    """Markdown table: per batch, every row, the best enginekit row, speed-ups and distance to the floor."""
    env, flops = result["env"], result["flops_per_item"]
    peak = env.get("fp16_gemm_tflops")
    print(f"\n### {result['model']} on {env['device']} (torch {env['torch']})\n")
    if flops:
        print(f"FLOPs per item: {flops / 1e9:.2f} GFLOP; measured fp16 GEMM {peak} TFLOP/s\n")
    print("| batch | engine | precision | median ms | p99 ms | items/s | vs eager fp32 | vs torch.compile "
          "| % of fp16 floor | verified (max abs err) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for batch in sorted({r["batch"] for r in result["rows"]}):
        rows = [r for r in result["rows"] if r["batch"] == batch]
        ok = {r["candidate"]: r for r in rows if "median_ms" in r}
        eager = ok.get("eager fp32", {}).get("median_ms")
        comp = ok.get("torch.compile default", {}).get("median_ms")
        best = min((r for r in ok.values() if r["candidate"].startswith("enginekit") and r.get("verified")),
                   key=lambda r: r["median_ms"], default=None)
        for r in rows:
            if "median_ms" not in r:
                print(f"| {batch} | {r['candidate']} | {r['precision']} | error: {r.get('error')} |||||||")
                continue
            name = r["candidate"] + (" **(best)**" if r is best else "")
            floor = batch * flops / (peak * 1e12) * 1e3 if flops and peak else None
            print(f"| {batch} | {name} | {r['precision']} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | "
                  f"{r['items_per_s']:.0f} | {eager / r['median_ms']:.2f}x | "
                  f"{(comp / r['median_ms']) if comp else float('nan'):.2f}x | "
                  f"{(100 * floor / r['median_ms']) if floor else float('nan'):.0f}% | "
                  f"{'yes' if r.get('verified') else 'NO'} ({r['max_abs_err']:.2e}) |")


if __name__ == "__main__":
    sys.exit(main())
