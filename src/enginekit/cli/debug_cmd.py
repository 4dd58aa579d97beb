"""`enginekit debug precision MODEL`: search the FP32 islands that make an FP16/BF16/INT8 model pass."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from enginekit.cli import common
from enginekit.cli.common import (
    AllowNonFiniteOpt,
    AtolOpt,
    InputOpt,
    JsonOpt,
    LoadInputsOpt,
    RtolOpt,
    SeedOpt,
    StatOpt,
    ValRangeOpt,
)
from enginekit.status import Status

_VERDICT_WORD: dict[str, str] = {Status.PASSED: "PASSED", Status.INCONCLUSIVE: "INCONCLUSIVE"}  # else FAILED

debug_app = typer.Typer(
    help="Precision debugger: find the nodes that must stay FP32 in an FP16/BF16/INT8 model.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@debug_app.command("precision")
def precision(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="FP32 ONNX model file.")],
    precision: Annotated[str, typer.Option("--precision", help="Target precision: fp16, bf16 or int8 (Q/DQ with "
                         "TensorRT's settings; the plan lists nodes left out of quantization).")] = "fp16",
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="Runs the candidates: onnx-reference "
                       "(onnx's reference evaluator: every value rounded to its type; default for fp16/bf16) or "
                       "ort (onnxruntime CPU: real INT8 kernels, default for int8; hides fp16 overflow).",
                       show_default=False)] = None,
    reference: Annotated[str, typer.Option("--reference", help="Reference: fp32 (onnxruntime) or fp64 (the model "
                         "widened to float64 in onnx's reference evaluator; small models).")] = "fp32",
    calibration: Annotated[Path | None, typer.Option("--calibration", help="int8: calibration feeds (.npz or a "
                           "folder of them); default: the debug feeds themselves (optimistic).",
                           show_default=False)] = None,
    calib_method: Annotated[str, typer.Option("--calib-method", help="int8: minmax, entropy or percentile.")]
    = "minmax",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the fixed low-precision .onnx here.",
                                                show_default=False)] = None,
    plan_path: Annotated[Path | None, typer.Option("--plan", help="Write the precision plan (plan.json) here.",
                                                   show_default=False)] = None,
    check: Annotated[str | None, typer.Option("--check", help="Judge each candidate with this command instead of "
                     "the output comparison: exit 0 = good. The candidate path is $MODEL (or {model}).",
                     show_default=False)] = None,
    max_evaluations: Annotated[int, typer.Option("--max-evaluations", help="Most candidate plans to try.")] = 200,
    no_ranges: Annotated[bool, typer.Option("--no-range-analysis", help="Start the search from bisection instead "
                         "of the range analysis' risky nodes.")] = False,
    inputs: InputOpt = None,
    load_inputs: LoadInputsOpt = None,
    seed: SeedOpt = 1,
    val_range: ValRangeOpt = None,
    allow_nonfinite: AllowNonFiniteOpt = False,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    check_error_stat: StatOpt = "elemwise",
    allow_weak_reference: Annotated[bool, typer.Option("--allow-weak-reference", help="Pass (exit 0) even when the "
                                   "reference output is near-constant or saturated on the feeds; without it such "
                                   "a run is INCONCLUSIVE (exit 1): random feeds often make a detector output ~0 "
                                   "everywhere, so any plan passes. Feed real data with --load-inputs.")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Write report.json/.md, reproduce.sh, the layerwise "
                      "error-growth plot, plan.json and the fixed model into this folder.", show_default=False)]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Find a small set of FP32 islands (range analysis, bisection, greedy shrink); write the plan and model.

    --atol/--rtol left at their defaults become scale-aware for the target: 4 epsilons of the format
    (fp16 2^-10, bf16 and int8 2^-7), atol times max |reference| per output. Details: docs/PRECISION.md.

    Feed real data (--load-inputs FILE.npz|.json: real images, real text): on random feeds a model's output
    is often near-constant (a detector finds nothing), and the debugger then refuses to pass (INCONCLUSIVE,
    exit 1) unless --allow-weak-reference.
    """
    from dataclasses import replace

    from enginekit.data import prepare_feed
    from enginekit.debug.workflow import check_debug_settings, debug_precision
    from enginekit.graph.io import input_specs
    from enginekit.graph.load import load_model
    from enginekit.settings import DebugSettings

    settings = DebugSettings(
        precision=precision, backend=backend, reference=reference, calibration=calibration, calib_method=calib_method,
        check=check, max_evaluations=max_evaluations, range_analysis=not no_ranges,
        allow_weak_reference=allow_weak_reference,
    )
    check_debug_settings(settings)  # before the tolerances are parsed, as always
    settings = replace(settings, compare=common.compare_settings(atol, rtol, check_error_stat, True))
    feeds_settings = common.feed_settings(inputs, load_inputs, seed, val_range, allow_nonfinite)
    onnx_model = load_model(model)
    feed = prepare_feed(input_specs(onnx_model), feeds_settings)
    result = debug_precision(onnx_model, [feed], settings)
    doc = result.to_dict(model=str(model))
    doc.update(result.save(plan_path, output))
    if report is not None:
        doc["report"] = str(report)
        write_debug_report(report, doc, result.fix, onnx_model, feed, precision, result.reference)
    if as_json:
        common.print_json(doc)
    else:
        render(doc)
    common.exit_with(result.exit_code)


def write_debug_report(folder: Path, doc: dict[str, Any], result: Any, model: Any, feed: Any, precision: str,
                       reference: Any = None) -> None:
    """The report a person reads: which nodes and why, what was recovered, and where the error grows."""
    from enginekit.debug.execute import Executor
    from enginekit.debug.layerwise import layerwise_diff, plot_error_growth
    from enginekit.fileutil import atomic_write_bytes
    from enginekit.graph.precision import save_plan
    from enginekit.report.markdown import fmt, table
    from enginekit.report.writer import prepare_report_dir, write_report

    prepare_report_dir(folder)  # refuses a folder of files enginekit did not write
    layers = layerwise_diff(model, feed, precision=precision, candidate=result.all_low_model,
                            executor=Executor(result.runs["candidates"]["backend"]), reference=reference)
    plot = folder / "error_growth.png"
    try:
        plot_error_growth(layers, plot)
    except Exception as exc:  # noqa: BLE001 - matplotlib missing or failing must not lose the report
        doc["plot_error"] = f"{type(exc).__name__}: {exc}"
    if result.passed:
        save_plan(result.plan, folder / "plan.json")
        atomic_write_bytes(folder / "fixed.onnx", result.model.SerializeToString())
    data = {"kind": "debug-precision", **doc, "layerwise": layers.to_dict()}
    before, after = doc.get("before") or {}, doc.get("after") or {}
    rows = [[e.node, e.reason] for e in result.plan.keep_fp32]
    kept_what = "Nodes left out of INT8 quantization" if precision == "int8" else "Nodes kept in FP32"
    ran = doc.get("runs") or {}
    runs_line = (f"- candidates run by {ran.get('candidates', {}).get('backend')}; reference "
                 f"{ran.get('reference', {}).get('precision')} in {ran.get('reference', {}).get('backend')}"
                 + (f"; quantization: {ran['quantization']}" if "quantization" in ran else "") + "\n")
    bad = layers.first_bad
    worst = sorted((r for r in layers.rows if not r.passed), key=lambda r: -(r.max_abs_err or 0))[:15]
    verdict = _VERDICT_WORD.get(str(doc.get("verdict")), "FAILED")
    all_low = "passes" if before.get("passed") else "fails"
    planned = "passes" if after.get("passed") else "fails"
    md = (
        f"# enginekit debug precision: {doc['model']} → {precision}\n\n**{verdict}**: {result.message}\n\n"
        f"- all {precision}: {all_low} (max abs err {fmt(before.get('max_abs_err'))}, "
        f"{before.get('nonfinite', 0)} NaN/Inf); with the plan: {planned} (max abs err "
        f"{fmt(after.get('max_abs_err'))})\n"
        f"- {kept_what}: {result.kept} of {result.total_nodes} ({100 * result.fp32_flops_fraction:.1f}% of FLOPs); "
        f"everything after the first bad layer would be {result.baseline_nodes}\n"
        f"- first tensor outside tolerance in the all-{precision} model: {bad.tensor if bad else 'none'}"
        f"{f' ({bad.op_type} {bad.node})' if bad else ''}\n- evaluations: {result.evaluations}\n" + runs_line
        + (f"- warning: {doc['warning']}\n" if doc.get("warning") else "")
        + "".join(f"- weak reference: {w}\n" for w in doc.get("weak_reference") or []) + "\n"
        f"## {kept_what}\n\n" + (table(["node", "reason"], rows) if rows else "_None: the model survives._\n")
        + "\n## Worst tensors in the all-low-precision model (topological diff)\n\n"
        + table(["tensor", "op", "max abs", "max rel", "cosine", "NaN", "Inf"],
                [[r.tensor, r.op_type, r.max_abs_err, r.max_rel_err, r.cosine, r.nan_candidate, r.inf_candidate]
                 for r in worst])
        + ("\n![error growth](error_growth.png)\n" if plot.is_file() else "")
    )
    write_report(folder, data, md, common.command_line(), {"inputs": feed})


def _err(ev: dict[str, Any]) -> str:
    mae = ev.get("max_abs_err")
    text = f"max_abs_err {mae:.3g}" if isinstance(mae, float) else "max_abs_err n/a"
    if ev.get("nonfinite"):
        text += f", {ev['nonfinite']} NaN/Inf"
    if ev.get("error"):
        text += f", {ev['error']}"
    return text


def render(doc: dict[str, Any]) -> None:
    """Plan table, before/after comparison, search cost and the naive baseline."""
    from rich.markup import escape
    from rich.table import Table

    from enginekit.cli.common import out

    entries = doc["plan"]["keep_fp32"]
    what = "Left out of INT8 quantization" if doc["precision"] == "int8" else "FP32 islands"
    t = Table("node", "reason", "evidence", title=f"{what} for {escape(doc['model'])} "
              f"({doc['precision']})", title_justify="left")
    for e in entries:
        ev = e["evidence"]
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in ev.items() if v not in (None, "", 0))
        t.add_row(escape(e["node"]), escape(e["reason"]), escape(shown))
    if entries:
        out.print(t)
    out.print(f"before (all {doc['precision']}): {'pass' if doc['before']['passed'] else 'FAIL'}, "
              f"{escape(_err(doc['before']))}")
    out.print(f"after (plan):        {'pass' if doc['after']['passed'] else 'FAIL'}, {escape(_err(doc['after']))}")
    base = doc["baseline"]
    vs = (f" vs {base['nodes']} for everything after the first bad layer ({escape(str(base['first_bad_node']))})"
          if base["nodes"] is not None else "")
    if doc.get("warning"):
        out.print(f"[yellow]warning:[/] {escape(doc['warning'])}")
    kind = "unquantized" if doc["precision"] == "int8" else "FP32"
    out.print(f"{doc['kept']} {kind} nodes{vs}, of {doc['total_nodes']}; "
              f"{doc['fp32_flops_fraction']:.1%} of FLOPs in {kind}; {doc['evaluations']} evaluations.")
    for key, what in (("plan_path", "plan"), ("output", "fixed model")):
        if key in doc:
            out.print(f"wrote {what}: {escape(doc[key])}")
    for reason in doc.get("weak_reference") or []:
        out.print(f"[yellow]weak reference:[/] {escape(reason)}")
    if doc.get("weak_reference"):
        from enginekit.compare.reference_quality import ADVICE

        out.print(f"[yellow]→[/] {escape(ADVICE)}")
    word = _VERDICT_WORD.get(doc.get("verdict", ""), "FAILED")
    style = {"PASSED": "green", "INCONCLUSIVE": "yellow"}.get(word, "red")
    out.print(f"[bold {style}]{word}[/]: {escape(doc['message'])}")
