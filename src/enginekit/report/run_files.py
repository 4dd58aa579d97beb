"""The files a `run` writes (feeds, outputs per backend, the report), and the checks that none of them is a folder,
a device, unwritable, or one of the run's inputs — made before any backend runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from enginekit.multirun import RunResult
    from enginekit.settings import RunSettings


def check_output_paths(model: Path, load_inputs: Path | None, save_inputs: Path | None, save_outputs: Path | None,
                       ort_save_optimized: Path | None, report: Path | None) -> None:
    """Refuse, before any work, output paths that are folders, devices, unwritable, or one of the inputs."""
    from enginekit.backends.ort import check_optimized_target
    from enginekit.data import check_npz_target
    from enginekit.fileutil import check_output_file, check_writable_folder, refuse_overwriting_inputs

    inputs = [("the model", model), ("--load-inputs", load_inputs)]
    for option, target in (("--save-inputs", save_inputs), ("--save-outputs", save_outputs)):
        if target is not None:
            check_npz_target(target)
            check_output_file(target, option)
            refuse_overwriting_inputs(target, inputs, option)
    if save_outputs is not None and save_inputs is not None:
        refuse_overwriting_inputs(save_outputs, [("--save-inputs", save_inputs)], "--save-outputs")
    if ort_save_optimized is not None:
        check_optimized_target(ort_save_optimized, model)
        refuse_overwriting_inputs(ort_save_optimized, inputs[1:] + [("--save-inputs", save_inputs),
                                                                    ("--save-outputs", save_outputs)],
                                  "--ort-save-optimized")
    if report is not None:
        check_writable_folder(report, "--report")


def _outputs_files(target: Path, labels: list[str], inputs: list[tuple[str, Path | None]]) -> list[Path]:
    """STEM.BACKEND.npz beside --save-outputs, one per label; refused when one of them is an input."""
    from enginekit.fileutil import check_output_file, refuse_overwriting_inputs
    from enginekit.report.writer import safe_name

    paths = [target.with_name(f"{target.stem}.{safe_name(label)}{target.suffix}") for label in labels]
    for path in paths:
        check_output_file(path, "--save-outputs")
        refuse_overwriting_inputs(path, inputs, "--save-outputs (per backend)")
    return paths


def save_run_files(settings: RunSettings, result: RunResult, command: Sequence[str]) -> None:
    """--save-inputs, --save-outputs (STEM.BACKEND.npz per backend) and --report of a `run`; ``command`` is what
    reproduce.sh runs."""
    from enginekit.data import save_arrays
    from enginekit.report.markdown import render_run
    from enginekit.report.writer import write_report

    produced = [r for r in result.rows if r.outputs is not None]
    per_backend = produced if len(result.rows) > 1 else []
    inputs = [("the model", settings.model), ("--load-inputs", settings.feeds.load_inputs),
              ("--save-inputs", settings.save_inputs)]
    targets = (_outputs_files(settings.save_outputs, [r.label for r in per_backend], inputs)
               if settings.save_outputs else [])  # every name checked before anything is written
    if settings.save_inputs:
        save_arrays(settings.save_inputs, result.feed)
    if settings.save_outputs:
        if len(result.rows) == 1 and produced:
            save_arrays(settings.save_outputs, produced[0].outputs or {})
        for r, path in zip(per_backend, targets, strict=True):
            save_arrays(path, r.outputs or {})
    if settings.report_dir:
        doc = {"kind": "run", **result.to_dict()}
        arrays = {"inputs": result.feed, **{f"outputs.{r.label}": r.outputs or {} for r in produced}}
        write_report(settings.report_dir, doc, render_run(doc), command, arrays)
