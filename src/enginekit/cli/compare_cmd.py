"""`enginekit compare REFERENCE.npz CANDIDATE.npz`: compare saved outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from enginekit.cli import common
from enginekit.cli.common import AtolOpt, JsonOpt, RtolOpt, StatOpt, ValidateOpt


def compare(
    reference: Annotated[Path, typer.Argument(metavar="REFERENCE", help="Reference outputs (.npz or .json); "
                         "relative error is measured against these.")],
    candidate: Annotated[Path, typer.Argument(metavar="CANDIDATE", help="Candidate outputs (.npz or .json).")],
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    check_error_stat: StatOpt = "elemwise",
    validate: ValidateOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare two sets of saved outputs with Polygraphy's rule: fail where abs > atol AND rel > rtol."""
    from enginekit.compare import compare_outputs, validate_tolerance_names
    from enginekit.data import load_arrays

    settings = common.compare_settings(atol, rtol, check_error_stat, validate)
    ref, cand = load_arrays(reference), load_arrays(candidate)
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
