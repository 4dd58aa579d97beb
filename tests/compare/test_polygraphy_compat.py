"""enginekit agrees with the real Polygraphy (PyPI package, CPU, onnxruntime) on a real trained model.

Polygraphy runs PaddleOCR's text-direction classifier and saves its feeds and outputs as JSON; enginekit runs
the model on those feeds (`--load-inputs`) and compares against those outputs (`compare`); then both tools judge
the same pairs of outputs at the same tolerances and their verdicts must be the same.

Polygraphy measures relative error against the *second* set of outputs it compares; enginekit against the
reference. So ``enginekit compare REF CAND`` is matched with ``polygraphy run --load-outputs CAND REF``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from enginekit.cli.main import main

pytest.importorskip("polygraphy")

BIN = Path(sys.executable).parent
SHAPE = (4, 3, 48, 192)
OUT = "save_infer_model/scale_0.tmp_1"  # the classifier's one output: (batch, 2) class probabilities


def _polygraphy(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "polygraphy"), *(str(a) for a in args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def _enginekit(*args: str | Path) -> tuple[int, str]:
    """``enginekit ARGS`` in-process; (exit code, stdout). Output is captured by the caller's capsys."""
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return (exc.code if isinstance(exc.code, int) else 1), ""
    return 0, ""


def _save_run_results(path: Path, runner: str, outputs: dict[str, np.ndarray]) -> Path:
    from polygraphy.comparator import IterationResult, RunResults

    RunResults([(runner, [IterationResult(outputs=dict(outputs), runner_name=runner)])]).save(str(path))
    return path


@dataclass(frozen=True)
class Files:
    folder: Path
    model: Path
    feeds: Path  # polygraphy run --save-inputs
    pg_ort: Path  # polygraphy run --onnxrt --save-outputs
    ek_ort: Path  # enginekit run -b ort on Polygraphy's feeds, .npz
    ek_openvino: Path  # enginekit run -b openvino on Polygraphy's feeds, .npz
    ek_feed: Path  # the feed enginekit ran, as it saved it


@pytest.fixture(scope="module")
def files(ocr_cls_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    folder = tmp_path_factory.mktemp("polygraphy")
    shape = ",".join(map(str, SHAPE))
    proc = _polygraphy("run", ocr_cls_model, "--onnxrt", "--input-shapes", f"x:[{shape}]", "--seed", "7",
                       "--save-inputs", "in.json", "--save-outputs", "ort.json", cwd=folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code, _ = _enginekit("run", ocr_cls_model, "-b", "ort", "-b", "openvino", "--load-inputs", folder / "in.json",
                         "--save-inputs", folder / "ek_feed.npz", "--save-outputs", folder / "ek.npz", "--atol",
                         "1e-4")
    assert code == 0
    yield Files(folder, ocr_cls_model, folder / "in.json", folder / "ort.json", folder / "ek.ort.npz",
                folder / "ek.openvino.npz", folder / "ek_feed.npz")


def test_enginekit_runs_polygraphys_feeds_and_matches_its_outputs(files: Files, capsys: pytest.CaptureFixture[str]
                                                                   ) -> None:
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    # the feed enginekit ran is Polygraphy's, bit for bit (read back with Polygraphy's own reader)
    pg_feed = load_json(str(files.feeds))[0]["x"]
    with np.load(files.ek_feed) as ek_feed:
        assert ek_feed["x"].shape == SHAPE
        np.testing.assert_array_equal(ek_feed["x"], pg_feed)
    # same runtime, same feed: the outputs are identical, and `enginekit compare` reads Polygraphy's outputs
    capsys.readouterr()
    code, _ = _enginekit("compare", files.pg_ort, files.ek_ort, "--atol", "0", "--rtol", "0", "--json")
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc
    assert doc["results"][0]["outputs"][OUT]["max_abs_err"] == 0.0
    pg_out = RunResults.load(str(files.pg_ort))[0][1][0][OUT]
    with np.load(files.ek_ort) as ek:
        np.testing.assert_array_equal(ek[OUT], np.asarray(pg_out))


def _perturbed(ref: np.ndarray) -> np.ndarray:
    """Errors of several sizes, so that atol, rtol and the statistics each decide some verdicts."""
    cand = ref.astype(np.float64).copy()
    flat = cand.reshape(-1)
    flat[0] += 3e-6  # small absolute error
    flat[1] *= 1 + 4e-4  # relative error 4e-4
    flat[2] -= 2e-3
    flat[5] *= 1 - 3e-5
    return cand.astype(ref.dtype)


@pytest.fixture(scope="module")
def pairs(files: Files) -> dict[str, tuple[Path, Path]]:
    """name -> (reference, candidate): Polygraphy JSON or enginekit .npz files, as each tool will read them."""
    from enginekit.data import load_arrays

    ref = load_arrays(files.pg_ort)
    perturbed = _save_run_results(files.folder / "perturbed.json", "perturbed", {OUT: _perturbed(ref[OUT])})
    nan_ref, nan_cand = ref[OUT].copy(), ref[OUT].copy()
    nan_ref[1, 0] = nan_cand[1, 0] = np.nan  # NaN on both sides, at the same index
    return {
        "openvino": (files.pg_ort, files.ek_openvino),
        "perturbed": (files.pg_ort, perturbed),
        "nan_both": (_save_run_results(files.folder / "nan_ref.json", "nan_ref", {OUT: nan_ref}),
                     _save_run_results(files.folder / "nan_cand.json", "nan_cand", {OUT: nan_cand})),
    }


def _as_polygraphy_json(path: Path, folder: Path) -> Path:
    if path.suffix == ".json":
        return path
    with np.load(path) as npz:
        return _save_run_results(folder / f"{path.stem}.json", path.stem, {k: npz[k] for k in npz.files})


def _polygraphy_verdict(files: Files, ref: Path, cand: Path, args: tuple[str, ...]) -> bool:
    proc = _polygraphy("run", "--load-outputs", _as_polygraphy_json(cand, files.folder),
                       _as_polygraphy_json(ref, files.folder), *args, cwd=files.folder)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert ("PASSED" if proc.returncode == 0 else "FAILED") in proc.stdout + proc.stderr
    return proc.returncode == 0


CLI_CASES = [
    ("openvino", ("--atol", "0", "--rtol", "0"), False),
    ("openvino", (), True),  # Polygraphy's default tolerances 1e-5
    ("perturbed", ("--atol", "1e-3", "--rtol", "1e-3"), False),
    ("perturbed", ("--atol", "1e-3", "--rtol", "1e-3", "--check-error-stat", "median"), True),
    ("nan_both", ("--atol", "1", "--rtol", "1"), False),
]


@pytest.mark.parametrize(("pair", "args", "expected"), CLI_CASES)
def test_verdicts_agree_with_polygraphy_run(files: Files, pairs: dict[str, tuple[Path, Path]], pair: str,
                                            args: tuple[str, ...], expected: bool,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ref, cand = pairs[pair]
    polygraphy_passed = _polygraphy_verdict(files, ref, cand, args)
    capsys.readouterr()  # Polygraphy's own log lines
    code, _ = _enginekit("compare", ref, cand, *args, "--json")
    doc = json.loads(capsys.readouterr().out)
    assert code in (0, 1), doc
    assert (code == 0) == doc["passed"] == polygraphy_passed == expected, (doc, polygraphy_passed)


def test_nan_on_both_sides_passes_only_with_equal_nan(pairs: dict[str, tuple[Path, Path]],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ref, cand = pairs["nan_both"]
    capsys.readouterr()
    code, _ = _enginekit("compare", ref, cand, "--equal-nan", "--atol", "0", "--rtol", "0", "--json")
    out = json.loads(capsys.readouterr().out)["results"][0]["outputs"][OUT]
    assert code == 0 and out["passed"] and out["nan_count"] == 2, out
    code, _ = _enginekit("compare", ref, cand, "--atol", "0", "--rtol", "0", "--json")
    out = json.loads(capsys.readouterr().out)["results"][0]["outputs"][OUT]
    assert code == 1 and "NaN on both sides" in out["reason"], out


def test_verdicts_agree_with_polygraphys_comparator_over_a_tolerance_grid(pairs: dict[str, tuple[Path, Path]]
                                                                          ) -> None:
    """Every (atol, rtol, statistic) of a grid, for each pair: the verdict of Polygraphy's comparator (the code
    `polygraphy run` calls, in-process to keep this fast) equals enginekit's."""
    from polygraphy.comparator import Comparator, IterationResult, RunResults
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    from enginekit.compare import CompareSettings, Tolerances, compare_outputs
    from enginekit.data import load_arrays

    grid = [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
    verdicts: dict[bool, int] = {True: 0, False: 0}
    disagreements = []
    for name, (ref_path, cand_path) in pairs.items():
        ref, cand = load_arrays(ref_path), load_arrays(cand_path)
        runs = RunResults([(runner, [IterationResult(outputs=dict(arrays), runner_name=runner)])
                           for runner, arrays in (("cand", cand), ("ref", ref))])
        for stat in ("elemwise", "max", "mean", "median"):
            for atol in grid:
                for rtol in grid:
                    func = SimpleCompareFunc(atol=atol, rtol=rtol, check_error_stat=stat)
                    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # quiet: its log is most of its time
                        polygraphy_passed = bool(Comparator.compare_accuracy(runs, compare_func=func))
                    ours = compare_outputs(ref, cand, CompareSettings(Tolerances(atol), Tolerances(rtol), stat))
                    verdicts[ours.passed] += 1
                    if ours.passed != polygraphy_passed:
                        disagreements.append((name, stat, atol, rtol, ours.passed, polygraphy_passed))
    assert not disagreements
    assert verdicts[True] > 20 and verdicts[False] > 20, verdicts  # the grid decides both ways
