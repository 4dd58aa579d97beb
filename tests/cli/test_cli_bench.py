"""`enginekit bench`: exit codes 0/1/2/3, table, JSON, plot; real backends with tiny durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from enginekit.cli import bench_cmd
from enginekit.cli.main import app

QUICK = ("--warmup", "0", "--warmup-iterations", "1", "--duration", "10ms", "--iterations", "5")


@pytest.fixture(autouse=True)
def _bench_registered() -> None:
    """Until cli/main.py registers `bench`, register it on the app the `cli` fixture runs."""
    if not any(c.name == "bench" for c in app.registered_commands):
        app.command("bench", help=bench_cmd.HELP)(bench_cmd.bench)


def test_table_and_exit_0(cli, mlp_model: Path) -> None:
    res = cli("bench", mlp_model, "-b", "ort,openvino", "--batch", "1,4", *QUICK)
    assert res.code == 0, res.stdout + res.stderr
    for needle in ("backend", "median ms", "p99 ms", "items/s", "speed-up", "ort", "openvino", "x:4x4", "1.00×"):
        assert needle in res.stdout, needle


def test_json(cli, mlp_model: Path) -> None:
    res = cli("bench", mlp_model, "-b", "ort", "-b", "onnx-reference", "--input", "x:2x4", *QUICK, "--json",
              "--with-transfers", "--threads", "2")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["kind"] == "bench" and doc["baseline"] == "ort"
    assert doc["settings"]["duration_s"] == pytest.approx(0.01) and doc["settings"]["streams"] == 2
    assert [r["backend"] for r in doc["rows"]] == ["ort", "onnx-reference"]
    for r in doc["rows"]:
        assert r["status"] == "ok" and r["shapes"] == {"x": [2, 4]} and r["streams"] == 2
        assert set(r["timing"]["phases"]) == {"h2d", "compute", "d2h"}
        assert r["timing"]["runs"] >= 10


def test_plot(cli, mlp_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    res = cli("bench", mlp_model, "-b", "ort", "--batch", "1,2", *QUICK, "--plot", "out/bench.png")
    assert res.code == 0, res.stderr
    assert (tmp_path / "out" / "bench.png").stat().st_size > 1000


def test_error_row_exit_1(cli, contrib_model: Path) -> None:
    # onnx.reference has no com.microsoft FusedMatMul: its row errors, ORT's row still runs
    res = cli("bench", contrib_model, "-b", "ort,onnx-reference", *QUICK, "--json")
    assert res.code == 1, res.stdout + res.stderr
    rows = {r["backend"]: r for r in res.json()["rows"]}
    assert rows["ort"]["status"] == "ok"
    assert rows["onnx-reference"]["status"] == "error" and rows["onnx-reference"]["reason"]


def test_only_skipped_exit_3(cli, mlp_model: Path) -> None:
    res = cli("bench", mlp_model, "-b", "ort", "--input", "x:1x4", *QUICK, "--cuda-graph")
    assert res.code == 3, res.stdout + res.stderr
    assert "CUDA graph: not supported by ort" in res.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (("--batch", "1,x"), "--batch"),
    (("--batch", "0"), "--batch"),
    (("--warmup", "soon"), "--warmup"),
    (("-b", "ortt"), "did you mean"),
    (("--baseline", "openvino"), "--baseline"),
    (("--shapes", "y:1x4"), "does not have"),
    (("--input", "x:1x5"), "does not fit"),
    (("--streams", "0"), "--streams"),
    (("--plot", "bench.txt"), "--plot"),
])
def test_user_errors_exit_2(cli, user_error, mlp_model: Path, args: tuple[str, ...], needle: str) -> None:
    user_error(cli("bench", mlp_model, "--input", "x:1x4", *QUICK, *args), needle)


def test_symbolic_dim_without_input_is_a_user_error(cli, user_error, mlp_model: Path) -> None:
    user_error(cli("bench", mlp_model, *QUICK), "--input x:1x4")


def test_plot_without_matplotlib_exit_3(cli, mlp_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from enginekit import deps

    monkeypatch.setattr(deps, "is_installed", lambda name: name != "matplotlib")
    res = cli("bench", mlp_model, "--input", "x:1x4", *QUICK, "--plot", "b.png")
    assert res.code == 3
    assert "matplotlib" in res.stderr and "enginekit[plot]" in res.stderr


def test_pytorch_source_with_torch_options(cli) -> None:
    source = Path(__file__).parents[1] / "backends" / "torch_models.py"
    res = cli("bench", f"{source}:convnet", "-b", "torch", "-b", "inductor", "--input", "x:batch,3,16,16",
              "--batch", "1,2", "--torch-device", "cpu", "--no-inductor-freezing", "--inductor-mode", "default",
              "--channels-last", "off", "--dynamic-shapes", "dynamic", *QUICK, "--json")
    assert res.code == 0, res.stdout + res.stderr
    rows = res.json()["rows"]
    assert [(r["backend"], r["batch"], r["status"]) for r in rows] == [
        ("torch", 1, "ok"), ("inductor", 1, "ok"), ("torch", 2, "ok"), ("inductor", 2, "ok")]
    assert rows[1]["shapes"] == {"x": [1, 3, 16, 16]} and rows[3]["shapes"] == {"x": [2, 3, 16, 16]}
    details = rows[1]["details"]
    assert details["device"] == "cpu" and details["freezing"] is False and details["dynamic_shapes"] == "dynamic"


def test_pytorch_source_bad_torch_option_is_a_user_error(cli, user_error) -> None:
    source = Path(__file__).parents[1] / "backends" / "torch_models.py"
    user_error(cli("bench", f"{source}:mlp", "-b", "inductor", "--input", "x:2x8", "--torch-device", "cpu",
                   "--inductor-mode", "fastest", *QUICK), "--inductor-mode")
