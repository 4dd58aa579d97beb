"""`enginekit compare REFERENCE CANDIDATE`: compare saved outputs (.npz, .json, Polygraphy's --save-outputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from enginekit.cli import common
from enginekit.cli.common import AtolOpt, EqualNanOpt, JsonOpt, RtolOpt, StatOpt, ValidateOpt

_RUNNER_HELP = ("When {what} is `polygraphy run --save-outputs` JSON holding several runners: the runner to use "
                "(its name, or a unique part of it such as onnxrt).")


def compare(
    reference: Annotated[Path, typer.Argument(metavar="REFERENCE", help="Reference outputs (.npz, .json, or "
                         "Polygraphy's --save-outputs .json); relative error is measured against these.")],
    candidate: Annotated[Path, typer.Argument(metavar="CANDIDATE", help="Candidate outputs (.npz, .json, or "
                         "Polygraphy's --save-outputs .json).")],
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    check_error_stat: StatOpt = "elemwise",
    validate: ValidateOpt = False,
    equal_nan: EqualNanOpt = False,
    reference_runner: Annotated[str | None, typer.Option(
        "--reference-runner", help=_RUNNER_HELP.format(what="REFERENCE"), show_default=False)] = None,
    candidate_runner: Annotated[str | None, typer.Option(
        "--candidate-runner", help=_RUNNER_HELP.format(what="CANDIDATE"), show_default=False)] = None,
    iteration: Annotated[int | None, typer.Option(
        "--iteration", min=0, help="Polygraphy JSON holding several iterations: the one to compare (default 0, "
        "the first).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two sets of saved outputs with Polygraphy's rule: fail where abs > atol AND rel > rtol."""
    from enginekit.compare import compare_outputs, validate_tolerance_names
    from enginekit.data import load_arrays

    settings = common.compare_settings(atol, rtol, check_error_stat, validate, equal_nan=equal_nan)
    ref = load_arrays(reference, runner=reference_runner, iteration=iteration, runner_flag="--reference-runner")
    cand = load_arrays(candidate, runner=candidate_runner, iteration=iteration, runner_flag="--candidate-runner")
    validate_tolerance_names(settings, list(ref) + [n for n in cand if n not in ref])
    result = compare_outputs(ref, cand, settings)
    failed = [o for o in result.outputs if not o.passed]
    reason = "; ".join(f"{o.name}: {o.reason}" for o in failed if o.reason)
    doc: dict[str, Any] = {
        "passed": result.passed,
        "reference": str(reference),
        "results": [{
            "backend": str(candidate),
            "status": "ok" if result.passed else "failed",
            "reason": reason,
            "reference": False,
            "outputs": result.to_dict()["outputs"],
        }],
    }
    if as_json:
        common.print_json(doc)
    else:
        from enginekit.cli.render import results_tables, verdict

        results_tables(doc["results"])
        verdict(result.passed)
    common.exit_with(0 if result.passed else 1)
