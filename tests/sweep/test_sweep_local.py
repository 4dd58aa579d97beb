"""`enginekit sweep` in this process: real models (the bundled digits CNN with its test split, PaddleOCR's text-
direction classifier and v4 detector) on ort/openvino, one report, resume, failed jobs as rows, bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from enginekit.errors import InvalidArgumentError
from enginekit.examples import digits
from enginekit.sweep import load_sweep, run_sweep
from enginekit.sweep.store import read_results

FAST = {"warmup_s": 0, "warmup_iterations": 1, "duration_s": 0.01, "iterations": 3}


def write_sweep(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")  # JSON is YAML
    return path


def lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def test_a_sweep_runs_every_job_on_real_models_and_writes_one_report(
        tmp_path: Path, ocr_cls_model: Path, ocr_det_model: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep.yaml", {
        "timing": FAST, "backends": ["ort", "ort:fp16", "openvino"], "atol": 0.05, "rtol": 0.05,
        "models": [
            {"name": "digits", "model": str(digits.onnx_path()), "dataset": str(digits.test_data_path()),
             "gates": ["accuracy>=-1pp"], "batch_sizes": [1, 32]},
            {"name": "ocr-cls <i>", "model": str(ocr_cls_model), "inputs": ["x:{batch}x3x48x192"],
             "batch_sizes": [2], "backends": ["ort", "openvino"]},
            {"name": "ocr-det", "model": str(ocr_det_model), "inputs": ["x:1x3x64x64"], "backends": ["ort"]},
        ]})
    spec = load_sweep(sweep)
    assert [j.config for j in spec.jobs] == ["ort b1", "ort b32", "openvino b1", "openvino b32", "ort b2",
                                             "openvino b2", "ort"]
    assert spec.jobs[0].candidates == ("ort", "ort:fp16") and spec.jobs[4].inputs == ("x:2x3x48x192",)
    seen: list[str] = []
    result = run_sweep(spec, tmp_path / "out", on_result=lambda s: seen.append(s["id"]))
    out = tmp_path / "out"
    assert result.passed and result.exit_code == 0, [(r["id"], r["status"], r["reason"]) for r in result.results]
    assert sorted(seen) == sorted(j.id for j in spec.jobs) == sorted(r["id"] for r in lines(out))
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["counts"] == {"passed": 7, "failed": 0, "error": 0, "pending": 0}
    cell = doc["matrix"]["digits"]["ort b32"]
    assert cell["status"] == "passed" and cell["best"]["label"] in ("ort", "ort:fp16") and cell["best"]["median_ms"] > 0
    # the openvino configuration is compared with the ort reference, and its best engine is openvino's own
    ov = next(r for r in result.results if r["config"] == "openvino b1" and r["model"] == "digits")
    assert [(r["label"], r["reference"]) for r in ov["rows"]] == [("ort", True), ("openvino", False)]
    assert ov["best"]["label"] == "openvino" and ov["rows"][1]["metrics"]["accuracy"] > 0.95
    for r in result.results:  # every job has its own optimize report
        assert (Path(r["report_dir"]) / "report.json").is_file()
    md = (out / "sweep.md").read_text()
    assert "| model | ort b1 | ort b32 |" in md and "## ocr-det" in md and "best ort" in md
    page = (out / "sweep.html").read_text()
    assert "ocr-cls &lt;i&gt;" in page and "<i>" not in page and "Content-Security-Policy" in page


def test_a_killed_sweep_resumes_and_skips_finished_jobs(tmp_path: Path) -> None:
    model = {"name": "digits", "model": str(digits.onnx_path()), "dataset": str(digits.test_data_path())}
    first = load_sweep(write_sweep(tmp_path / "a.yaml", {"timing": FAST, "models": [model]}))
    out = tmp_path / "out"
    run_sweep(first, out)
    with (out / "results.jsonl").open("a") as f:
        f.write('{"id": "torn')  # a sweep killed in the middle of a write
    bigger = load_sweep(write_sweep(tmp_path / "b.yaml", {"timing": FAST, "models": [
        model, dict(model, name="digits-ov", backends=["openvino"])]}))
    assert bigger.jobs[0].id == first.jobs[0].id  # same settings, same id
    result = run_sweep(bigger, out)
    assert result.resumed == [first.jobs[0].id] and result.ran == [bigger.jobs[1].id] and result.passed
    attempts = (out / "jobs" / first.jobs[0].id / "attempts.jsonl").read_text().splitlines()
    assert len(attempts) == 1  # not run again
    again = run_sweep(bigger, out)
    assert again.ran == [] and len(again.resumed) == 2
    assert sorted(read_results(out)) == sorted(j.id for j in bigger.jobs)
    assert len((out / "results.jsonl").read_text().splitlines()) == 3  # two results and the torn line


def test_a_failed_job_is_a_row_not_a_crash(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", {"timing": FAST, "models": [
        {"name": "broken", "model": str(broken), "inputs": ["x:1x4"]},
        {"name": "digits", "model": str(digits.onnx_path()), "inputs": ["x:2x1x8x8"]}]}))
    result = run_sweep(spec, tmp_path / "out")
    by_model = {r["model"]: r for r in result.results}
    assert by_model["broken"]["status"] in ("failed", "error") and by_model["broken"]["reason"]
    assert by_model["digits"]["status"] == "passed" and not result.passed and result.exit_code == 1
    assert "broken" in (tmp_path / "out" / "sweep.md").read_text()


@pytest.mark.parametrize(("data", "message"), [
    ({"models": [{"model": "m.onnx"}], "backend": ["ort"]}, "did you mean 'backends'"),
    ({"models": [{"model": "missing.onnx"}]}, "missing.onnx: no such file"),
    ({"models": []}, "'models' must be a non-empty list"),
    ({"models": [{"model": "m.onnx", "batch_sizes": [1, 2]}]}, "batch_sizes need a dataset"),
    ({"models": [{"model": "m.onnx", "backends": ["onnxrt"]}]}, "unknown backend 'onnxrt'"),
    ({"models": [{"model": "m.onnx", "timing": {"iterations": "many"}}]}, "timing.iterations: expected a number"),
    ({"models": [{"model": "m.onnx"}, {"model": "m.onnx"}]}, "is used by another model"),
])
def test_bad_sweep_files_are_user_errors(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    (tmp_path / "m.onnx").write_bytes(digits.onnx_path().read_bytes())
    with pytest.raises(InvalidArgumentError, match=message) as info:
        load_sweep(write_sweep(tmp_path / "s.yaml", data))
    assert info.value.exit_code == 2


def test_bad_job_options_fail_before_any_job_runs(tmp_path: Path) -> None:
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", {"models": [
        {"model": str(digits.onnx_path()), "dataset": str(digits.test_data_path()), "gates": ["accuracy>>1"]}]}))
    with pytest.raises(InvalidArgumentError, match="sweep job digits_cnn-ort-"):
        run_sweep(spec, tmp_path / "out")
    assert not (tmp_path / "out" / "results.jsonl").exists()
    (tmp_path / "bad.yaml").write_text("models: [unclosed", encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="not valid YAML"):
        load_sweep(tmp_path / "bad.yaml")


def test_the_command_prints_the_matrix_and_exits_with_the_verdict(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from enginekit.cli.sweep_cmd import sweep

    app = typer.Typer()
    app.command()(sweep)
    app.command("other")(lambda: None)  # two commands: typer keeps `sweep` as a subcommand
    path = write_sweep(tmp_path / "s.yaml", {"timing": FAST, "out": "o", "models": [
        {"name": "digits", "model": str(digits.onnx_path()), "inputs": ["x:2x1x8x8"]}]})
    res = CliRunner().invoke(app, ["sweep", str(path), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["kind"] == "sweep" and doc["counts"]["passed"] == 1 and doc["out"] == str(tmp_path / "o")
    res = CliRunner().invoke(app, ["sweep", str(path)])  # resumed: nothing runs again
    assert res.exit_code == 0 and "0 run, 1 resumed" in res.stdout and "digits" in res.stdout


def test_a_detection_sweep_scores_boxes_against_coco_annotations(tmp_path: Path, ocr_det_model: Path,
                                                                  coco_pages: Any) -> None:
    """task detection with annotations (relative to the sweep file) and a decoding hook: mAP per job."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(coco_pages.images, data / "images")
    shutil.copy(coco_pages.annotations, data / "instances.json")
    model = {"name": "ocr-det", "model": str(ocr_det_model), "dataset": "data/images", "task": "detection",
             "annotations": "data/instances.json", "postprocess": f"{coco_pages.hook}:boxes",
             "preprocess": ["size=192,384", "mean=0.485,0.456,0.406", "std=0.229,0.224,0.225"],
             "gates": ["map50>=-2pp"]}
    sweep = write_sweep(tmp_path / "sweep.yaml", {"timing": FAST, "backends": ["ort", "ort:fp16"], "atol": 0.05,
                                                 "rtol": 0.05, "models": [model]})
    spec = load_sweep(sweep)
    assert spec.jobs[0].annotations == str(data / "instances.json")
    result = run_sweep(spec, tmp_path / "out")
    assert result.passed, [(r["id"], r["status"], r["reason"]) for r in result.results]
    rows = {r["label"]: r for r in result.results[0]["rows"]}
    assert rows["ort"]["metrics"]["map50"] == pytest.approx(1.0)
    assert abs(rows["ort:fp16"]["metrics"]["map"] - rows["ort"]["metrics"]["map"]) < 0.02
    with pytest.raises(InvalidArgumentError, match=r"annotations: .*no such file"):
        load_sweep(write_sweep(tmp_path / "bad.yaml", {"models": [{**model, "annotations": "nope.json"}]}))
