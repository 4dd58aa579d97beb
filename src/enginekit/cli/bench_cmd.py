"""`enginekit bench MODEL --backend A --backend B`: one timing protocol for every backend, sweeps, speed-ups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from enginekit.cli import common
from enginekit.cli.common import InputOpt, JsonOpt, OrtProvidersOpt, OvPrecisionOpt, SeedOpt
from enginekit.cli.common import parse_duration as parse_duration

HELP = """Benchmark a model on several backends with one protocol: warm-up by time, then at least --duration
and --iterations; median/p90/p95/p99 latency, items/s and speed-up against the baseline, per batch or shape.

CPU samples come from a monotonic clock around each call; on CUDA, CUDA events give the device time.
By default inputs are staged once (only compute is timed); --with-transfers times stage + compute + fetch.
Exit codes: 0 every row ran, 1 a row errored, 2 user error, 3 some rows skipped (missing package/hardware)."""



def bench(
    model: Annotated[Path, typer.Argument(metavar="MODEL_OR_ARTIFACT", help="ONNX model, Paddle model, built "
                     "engine, PyTorch source (file.py:factory, TorchScript, .pt2; torch/inductor/aoti, with --input "
                     "per forward() argument) or AOTInductor package (.pt2, --backend aoti: it holds a shared "
                     "library, so it loads only with --trust-remote-code).")],
    backend: Annotated[list[str] | None, typer.Option("--backend", "-b", help="Candidate NAME[:PRECISION] (ort, "
                       "openvino, openvino:bf16, onnx-reference, ...); repeat or comma-separate. Default ort.",
                       show_default=False)] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Candidate the speed-up is measured against "
                        "(default: the first).", show_default=False)] = None,
    warmup: Annotated[str, typer.Option("--warmup", help="Warm-up time (excluded from the statistics).")] = "0.5s",
    warmup_iterations: Annotated[int, typer.Option("--warmup-iterations", help="... and at least this many "
                                 "warm-up calls.")] = 3,
    duration: Annotated[str, typer.Option("--duration", help="Measure at least this long ...")] = "3s",
    iterations: Annotated[int, typer.Option("--iterations", help="... and at least this many calls.")] = 20,
    batch: Annotated[list[str] | None, typer.Option("--batch", help="Batch sizes to sweep, e.g. 1,8,32: the "
                     "leading dim of every input whose axis 0 is dynamic (PyTorch sources: a symbolic --input dim, "
                     "x:batch,3,224,224).", show_default=False)] = None,
    shapes: Annotated[list[str] | None, typer.Option("--shapes", help="One shape set to sweep, NAME:DIMS[,NAME:"
                      "DIMS] (dims joined by x); repeat for more points.", show_default=False)] = None,
    inputs: InputOpt = None,
    seed: SeedOpt = 1,
    with_transfers: Annotated[bool, typer.Option("--with-transfers", help="Time host→device copies and output "
                              "fetches too (split into H2D / compute / D2H).")] = False,
    cuda_graph: Annotated[bool, typer.Option("--cuda-graph", help="Capture a CUDA graph once and time its "
                          "replays (backends that support it).")] = False,
    streams: Annotated[int, typer.Option("--streams", "--threads", help="Concurrent requests (threads); "
                       "throughput is the aggregate, latency per request.")] = 1,
    unstable_cv: Annotated[float, typer.Option("--unstable-cv", help="Warn when the coefficient of variation "
                           "of the latency is above this.")] = 0.1,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write latency and throughput against batch size "
                    "to this .png (needs matplotlib: the 'plot' extra).", show_default=False)] = None,
    ort_providers: OrtProvidersOpt = None,
    ort_threads: Annotated[int, typer.Option("--ort-intra-op-threads", help="onnxruntime intra-op threads "
                           "(0: its default, one per physical core).")] = 0,
    openvino_precision: OvPrecisionOpt = "fp32",
    torch_device: common.TorchDeviceOpt = "auto",
    inductor_mode: common.InductorModeOpt = "default",
    inductor_freezing: common.InductorFreezingOpt = True,
    channels_last: common.ChannelsLastOpt = "auto",
    dynamic_shapes: common.DynamicShapesOpt = "static",
    trust_remote_code: common.TrustRemoteCodeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from dataclasses import replace

    from enginekit.backends import torch_common as tc
    from enginekit.bench.points import parse_batches, parse_shape_set
    from enginekit.bench.sweep import benchmark
    from enginekit.data import parse_input_shape
    from enginekit.errors import InvalidArgumentError
    from enginekit.settings import BenchSettings
    from enginekit.sources.detect import model_format

    for flag, value, choices in (("--torch-device", torch_device, tc.DEVICES),
                                 ("--inductor-mode", inductor_mode, tc.INDUCTOR_MODES),
                                 ("--channels-last", channels_last, tc.CHANNELS_LAST),
                                 ("--dynamic-shapes", dynamic_shapes, tc.DYNAMIC_POLICIES)):
        tc.check_choice(flag, value, choices)  # user errors before any row (a runner would make a row error)
    torch_inputs: tuple[str, ...] = ()
    if inputs and model_format(model) == "torch":
        from enginekit.backends.torch_inputs import feed_shapes

        # as in `run`: the export-style spec for the runners (x:batch,3,224,224), concrete shapes for the feeds
        torch_inputs, inputs = tuple(inputs), feed_shapes(inputs)
    if ort_threads < 0:
        raise InvalidArgumentError(f"--ort-intra-op-threads {ort_threads}: must be >= 0.")
    settings = BenchSettings(
        warmup_s=parse_duration(warmup, "--warmup"),
        warmup_iterations=warmup_iterations,
        duration_s=parse_duration(duration, "--duration"),
        iterations=iterations,
        batches=tuple(b for text in batch or [] for b in parse_batches(text)),
        shapes=tuple(parse_shape_set(s) for s in shapes or []),
        baseline=baseline,
        with_transfers=with_transfers,
        cuda_graph=cuda_graph,
        streams=streams,
        unstable_cv=unstable_cv,
        seed=seed,
    )
    backend_settings = replace(common.backend_settings(ort_providers, openvino_precision,
                                                       trust_remote_code=trust_remote_code),
                               ort_intra_op_threads=ort_threads, torch_inputs=torch_inputs,
                               torch_device=torch_device, inductor_mode=inductor_mode,
                               inductor_freezing=inductor_freezing, channels_last=channels_last,
                               dynamic_shapes=dynamic_shapes)
    if plot is not None:
        from enginekit.bench.plot import check_plot_target

        check_plot_target(plot)
    # Progress as plain lines, not a spinner: a live display would run a refresh thread beside the timed loop.
    result = benchmark(model, common.split_multi(backend) or ("ort",), settings, backend_settings,
                       tuple(parse_input_shape(t) for t in inputs or []), progress=_progress)
    if plot is not None:
        from enginekit.bench.plot import plot_result

        plot_result(result, plot)
    if as_json:
        common.print_json(result.to_dict())
    else:
        render(result.to_dict(), plot)
    common.exit_with(result.exit_code)


def _progress(text: str) -> None:
    if common.err.is_terminal:
        common.err.print(f"[dim]bench: {text}…[/]")


def render(doc: dict[str, Any], plot: Path | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    from enginekit.cli.render import status
    from enginekit.report.markdown import fmt

    s, rows = doc["settings"], doc["rows"]
    split = any((r.get("timing") or {}).get("phases", {}).get("h2d") for r in rows)
    cuda = any((r.get("timing") or {}).get("clock") == "cuda-events" for r in rows)
    headers = ["backend", "precision", "batch", "shapes", "median ms", "p99 ms", "items/s", "speed-up", "status"]
    headers[6:6] = (["host ms"] if cuda else []) + (["H2D ms", "compute ms", "D2H ms"] if split else [])
    t = Table(*headers, title=f"enginekit bench: {escape(doc['model'])} (baseline {escape(doc['baseline'])})",
              title_justify="left")
    for r in rows:
        tm = r.get("timing") or {}
        ph = tm.get("phases", {})
        shape = ",".join(f"{k}:{'x'.join(map(str, v))}" for k, v in r["shapes"].items()) or r["point"]
        cells = [escape(r["backend"]), r["precision"], fmt(r["batch"]), escape(shape), fmt(r["median_ms"]),
                 fmt(r["p99_ms"])]
        if cuda:
            cells.append(fmt(tm.get("host_latency", {}).get("median_ms")))
        if split:
            cells += [fmt(ph.get(k, {}).get("median_ms")) for k in ("h2d", "compute", "d2h")]
        speedup = "" if r["speedup"] is None else f"{r['speedup']:.2f}×"
        flag = " [yellow]unstable[/]" if r["unstable"] else ""
        cells += [fmt(r["items_per_s"]), speedup, status(r["status"]) + flag]
        t.add_row(*cells)
    out = common.out
    out.print(t)
    m = doc["machine"]
    what = "stage + compute + fetch" if s["with_transfers"] else "compute on staged inputs"
    out.print(f"Timed: {what}; warm-up {s['warmup_s']:g} s (≥{s['warmup_iterations']} calls), then ≥"
              f"{s['duration_s']:g} s and ≥{s['iterations']} calls; {s['streams']} stream(s). "
              f"Machine: {escape(str(m['cpu']))}, {m['usable_cpus']} CPUs.")
    seen: set[tuple[str, str]] = set()
    for r in rows:
        notes = [(status(r["status"]), r["reason"])] if r["reason"] else []
        for kind, note in notes + [("[yellow]warning[/]", w) for w in r["warnings"]]:
            if (r["backend"], note) not in seen:  # a candidate that did not load repeats one reason per point
                seen.add((r["backend"], note))
                out.print(f"  {kind} [bold]{escape(r['backend'])}[/] ({escape(r['point'])}): {escape(note)}")
    if plot is not None:
        out.print(f"Plot: {escape(str(plot))}")
