"""`enginekit optimize SOURCE --search-batch ...`: the configuration search on the command line, in report.md,
report.json and reproduce.sh; bad search options are user errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli.conftest import Cli, _assert_user_error

pytest.importorskip("torch")
MODELS = Path(__file__).parents[1] / "backends" / "torch_models.py"
CONV = f"{MODELS}:convnet"


def test_optimize_searches_configurations_per_batch(cli: Cli, tmp_path: Path) -> None:
    res = cli("optimize", CONV, "--input", "x:batch,3,16,16", "-b", "torch", "--no-prepare", "--torch-device", "cpu",
              "--search-batch", "1,2", "--search-candidate", "inductor/mode=default/freezing=off/channels_last=off",
              "--search-candidate", "torch/channels_last=on", "--search-duration", "50ms", "--report", "rep")
    assert res.code == 0, res.stdout + res.stderr
    assert "Configuration search (cpu" in res.stdout and "Best per batch" in res.stdout
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    search = doc["search"]
    assert search["batches"] == [1, 2] and len(search["rows"]) == 6
    assert all(r["status"] == "ok" for r in search["rows"])
    assert [s["batch"] for s in search["best"]] == [1, 2] and all(s["best_latency"] for s in search["best"])
    step = next(s for s in doc["steps"] if s["name"] == "search")
    assert step["status"] == "OK" and "batch 1:" in step["reason"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Configuration search (cpu)" in md and "plain torch.compile ms" in md
    sh = (tmp_path / "rep" / "reproduce.sh").read_text()
    for part in ("--torch-device cpu", "--search-batch 1,2", "--search-candidate torch/channels_last=on",
                 "--search-duration 50ms"):
        assert part in sh


def test_python_api_runs_reproduce_with_the_search_options(tmp_path: Path) -> None:
    from enginekit.pipeline.plan import plan_optimize
    from enginekit.report.reproduce import optimize_command
    from enginekit.settings import BackendSettings

    settings = plan_optimize(CONV, inputs=["x:batch,3,16,16"], backend=BackendSettings(torch_device="cpu"),
                             search_batches=[1, 8], search_candidates=["torch/channels_last=on"],
                             search_precisions=["fp32"], search_duration=0.25, report_dir=tmp_path)
    cmd = " ".join(optimize_command(settings))
    assert ("--torch-device cpu --search-batch 1,8 --search-candidate torch/channels_last=on --search-precision fp32 "
            "--search-duration 0.25s") in cmd


@pytest.mark.parametrize("args, words", [
    (("--search-batch", "0"), ("--search-batch", "positive integers")),
    (("--search-candidate", "ort"), ("PyTorch backends",)),
    (("--search-candidate", "inductor/mode=fastest"), ("choose one of",)),
    (("--search-precision", "int4"), ("--search-precision",)),
    (("--search-duration", "soon"), ("--search-duration",)),
])
def test_bad_search_options_are_user_errors(cli: Cli, args: tuple[str, ...], words: tuple[str, ...]) -> None:
    res = cli("optimize", CONV, "--input", "x:batch,3,16,16", "-b", "torch", "--no-prepare", "--torch-device",
              "cpu", *args, "--report", "rep")
    _assert_user_error(res, *words)


def test_search_options_on_an_onnx_model_are_refused(cli: Cli) -> None:
    _assert_user_error(cli("optimize", "--search-batch", "1"), "apply to PyTorch sources")
