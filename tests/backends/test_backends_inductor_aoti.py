"""The ``inductor`` and ``aoti`` backends against the eager source: agreement, recompilations, eager fallbacks,
AOTInductor packages run without the model's code, reduced precision on CPU.

Compilations are slow (seconds each, on 2 CPU cores), so runners and the package are module-scoped and shared.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from enginekit.compare import CompareSettings, Tolerances, compare_outputs  # noqa: E402
from enginekit.errors import BackendError, FeedError, InvalidArgumentError, ModelLoadError  # noqa: E402
from enginekit.settings import BackendSettings  # noqa: E402

torch = pytest.importorskip("torch")

from enginekit.backends.aoti import AotiPackage, AotiRunner, build_aoti_package  # noqa: E402
from enginekit.backends.inductor import InductorRunner, recompile_limit  # noqa: E402
from enginekit.backends.torch_eager import TorchEagerRunner  # noqa: E402
from enginekit.backends.torch_io import torch_source_io  # noqa: E402
from enginekit.sources.detect import is_aoti_package, torch_model_format  # noqa: E402

MODELS = str(Path(__file__).with_name("torch_models.py"))
CONV, ENC, MLP = (Path(f"{MODELS}:{name}") for name in ("convnet", "encoder", "mlp"))
CONV_IN = BackendSettings(torch_inputs=("x:batch,3,16,16",), torch_device="cpu")
ENC_IN = BackendSettings(torch_inputs=("x:batch,6,24",), torch_device="cpu")
CONV_CUDA = BackendSettings(torch_inputs=("x:batch,3,16,16",), torch_device="cuda")
TRUSTED = BackendSettings(trust_remote_code=True)  # the packages these tests build (a package holds native code)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _x(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def _close(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: float = 1e-4) -> None:
    result = compare_outputs(ref, got, CompareSettings(atol=Tolerances(tol), rtol=Tolerances(tol)))
    assert result.passed, result.to_dict()


def _eager(model: Path, settings: BackendSettings, *feeds: np.ndarray) -> list[dict[str, np.ndarray]]:
    with TorchEagerRunner(model, settings) as runner:
        return [runner.infer({"x": x}) for x in feeds]


@pytest.fixture(scope="module")
def inductor_conv() -> Iterator[InductorRunner]:
    runner = InductorRunner(CONV, BackendSettings(torch_inputs=("x:2x3x16x16",), torch_device="cpu"))
    with runner:
        yield runner


@pytest.fixture(scope="module")
def conv_package(tmp_path_factory: pytest.TempPathFactory) -> AotiPackage:
    out = tmp_path_factory.mktemp("aoti") / "conv.pt2"
    return build_aoti_package(str(CONV), out, CONV_IN)


def test_inductor_convnet_matches_eager(inductor_conv: InductorRunner) -> None:
    x = _x(2, 3, 16, 16)
    (expected,) = _eager(CONV, CONV_IN, x)
    _close(expected, inductor_conv.infer({"x": x}))
    details = inductor_conv.describe()
    assert details["mode"] == "default" and details["freezing"] is True
    stats = details["compile"]
    assert isinstance(stats, dict)
    assert stats["graphs"] == 1 and stats["graph_breaks"] == 0 and stats["eager_fallback"] is False
    assert stats["compiled_graph_calls"] == stats["calls"] >= 2  # the warm-up at load, then this call
    assert torch._inductor.config.freezing is False  # patched around compiling calls only, then restored


def test_inductor_encoder_matches_eager() -> None:
    x = _x(3, 6, 24)
    (expected,) = _eager(ENC, ENC_IN, x)
    with InductorRunner(ENC, ENC_IN) as runner:
        out = runner.infer({"x": x})
        assert [o.name for o in runner.outputs()] == ["output_0", "output_1"]
    _close(expected, out)


def test_inductor_dynamic_batch_compiles_once() -> None:
    settings = BackendSettings(torch_inputs=("x:4x8",), dynamic_shapes="dynamic", torch_device="cpu")
    feeds = [_x(3, 8), _x(7, 8, seed=1)]
    expected = _eager(MLP, BackendSettings(torch_inputs=("x:batch,8",), torch_device="cpu"), *feeds)
    runner = InductorRunner(MLP, settings)
    with runner:
        assert runner.inputs()[0].shape == ("batch", 8)  # the policy made axis 0 dynamic
        for x, ref in zip(feeds, expected, strict=True):
            _close(ref, runner.infer({"x": x}))
        stats = runner.stats
    assert len(stats.compilations) == 1 and stats.recompilations == 0
    assert stats.eager_calls == 0 and stats.graph_calls == 3  # warm-up and two batch sizes, all compiled


def test_inductor_static_recompiles_per_shape_and_says_so() -> None:
    with InductorRunner(MLP, BackendSettings(torch_inputs=("x:batch,8",), torch_device="cpu")) as runner:
        for batch in (3, 5):
            runner.infer({"x": _x(batch, 8)})
        runner.infer({"x": _x(3, 8, seed=2)})  # a shape seen before: no recompilation
        details = runner.describe()["compile"]
    assert isinstance(details, dict)
    assert details["recompilations"] == 2
    assert [c["shapes"]["x"][0] for c in details["compilations"]] == [2, 3, 5]
    assert details["eager_fallback"] is False


def test_recompile_limit_fallback_is_detected() -> None:
    name, _ = recompile_limit()
    with torch._dynamo.config.patch(**{name: 2}):
        with InductorRunner(MLP, BackendSettings(torch_inputs=("x:batch,8",), torch_device="cpu")) as runner:
            runner.infer({"x": _x(3, 8)})  # the second shape: one recompilation, within the limit
            with pytest.raises(BackendError, match=r"fell back to eager: recompile limit reached \(1 recompil"):
                runner.infer({"x": _x(4, 8)})  # the third shape: dynamo would run it eagerly
            details = runner.describe()["compile"]
            assert isinstance(details, dict) and details["eager_fallback"] is True and details["eager_calls"] == 1
            runner.infer({"x": _x(3, 8)})  # shapes compiled before still run compiled code


def test_graph_breaks_are_reported() -> None:
    x = _x(3, 8)
    settings = BackendSettings(torch_inputs=("x:3x8",), torch_device="cpu")
    (expected,) = _eager(Path(f"{MODELS}:branchy"), settings, x)
    with InductorRunner(Path(f"{MODELS}:branchy"), settings) as runner:
        _close(expected, runner.infer({"x": x}))
        details = runner.describe()["compile"]
    assert isinstance(details, dict)
    assert details["graph_breaks"] >= 1 and details["graphs"] >= 2 and details["eager_fallback"] is False
    assert details["graph_break_reasons"]


def test_inductor_bf16_on_cpu() -> None:
    x = _x(2, 3, 16, 16)
    (expected,) = _eager(CONV, CONV_IN, x)
    with InductorRunner(CONV, BackendSettings(torch_inputs=("x:2x3x16x16",), torch_device="cpu"), "bf16") as runner:
        out = runner.infer({"x": x})
    assert out["output"].dtype == np.float32
    _close(expected, out, 5e-2)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated in torch 2.13
def test_inductor_refuses_bad_mode_and_torchscript(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="--inductor-mode 'fast': choose one of default, reduce-overhead"):
        InductorRunner(CONV, BackendSettings(torch_inputs=("x:1x3x16x16",), inductor_mode="fast", torch_device="cpu"))
    ts = tmp_path / "mlp.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(8, 4)), str(ts))
    with pytest.raises(ModelLoadError, match="TorchScript"):  # trusted: the refusal is inductor's, not the trust's
        InductorRunner(ts, BackendSettings(torch_inputs=("x:2x8",), torch_device="cpu", trust_remote_code=True)).load()


def test_aoti_package_and_manifest(conv_package: AotiPackage) -> None:
    assert conv_package.path.is_file() and is_aoti_package(conv_package.path)
    assert torch_model_format(conv_package.path) == "aoti"
    # what `run` reads: the manifest, no torch_inputs (a package this test built: trusted)
    inputs, outputs = torch_source_io(conv_package.path, (), trust_remote_code=True)
    assert [s.shape for s in inputs] == [("batch", 3, 16, 16)] and [s.name for s in outputs] == ["output"]
    manifest = json.loads(conv_package.path.with_name("conv.pt2.json").read_text())
    assert manifest == conv_package.manifest
    assert manifest["format"] == "enginekit-aoti" and manifest["torch"] == torch.__version__
    assert manifest["device"] == "cpu" and manifest["precision"] == "fp32"
    assert manifest["inputs"] == [{"name": "x", "shape": ["batch", 3, 16, 16], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "output", "shape": ["batch", 10], "dtype": "float32"}]
    assert manifest["dynamic_dims"] == {"batch": {"min": 2, "max": None}}  # the range export settled on
    assert len(manifest["source"]["sha256"]) == 64 and manifest["build_time_s"] > 0


def test_aoti_package_runs_two_batches_like_eager(conv_package: AotiPackage) -> None:
    feeds = [_x(2, 3, 16, 16), _x(5, 3, 16, 16, seed=1), _x(1, 3, 16, 16, seed=2)]  # 1: below export's soft min
    expected = _eager(CONV, CONV_IN, *feeds)
    with AotiRunner(conv_package.path, TRUSTED) as runner:  # no torch_inputs: the manifest has them
        assert runner.inputs()[0].shape == ("batch", 3, 16, 16)
        for x, ref in zip(feeds, expected, strict=True):
            _close(ref, runner.infer({"x": x}))
        assert runner.describe()["built_on_load"] is False
        assert runner.manifest is not None
        runner.manifest["dynamic_dims"]["batch"]["max"] = 4  # as if export had bounded the batch
        with pytest.raises(FeedError, match=r"batch=5 at axis 0; the package was compiled for batch in \[2, 4\]"):
            runner.infer({"x": feeds[1]})
    with pytest.raises(InvalidArgumentError, match="compiled for fp32; run it as --backend aoti"):
        AotiRunner(conv_package.path, TRUSTED, "bf16").load()


def test_aoti_package_loads_without_the_models_code(conv_package: AotiPackage, tmp_path: Path) -> None:
    """A fresh interpreter, in a folder without torch_models.py, with nothing of the tests on its path."""
    folder = tmp_path / "deploy"
    folder.mkdir()
    for f in (conv_package.path, conv_package.path.with_name("conv.pt2.json")):
        shutil.copy(f, folder / f.name)
    x = _x(5, 3, 16, 16, seed=4)
    np.save(folder / "x.npy", x)
    code = (
        "import importlib.util, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from enginekit.backends.aoti import AotiRunner\n"
        "from enginekit.settings import BackendSettings\n"
        "assert importlib.util.find_spec('torch_models') is None\n"
        "x = np.load('x.npy')\n"
        "with AotiRunner(Path('conv.pt2'), BackendSettings(trust_remote_code=True)) as r:\n"
        "    np.save('out2.npy', r.infer({'x': x[:2]})['output'])\n"
        "    np.save('out5.npy', r.infer({'x': x})['output'])\n"
        "assert not [m for m in sys.modules if 'torch_models' in m or m.startswith('enginekit_user_model')]\n"
    )
    tests = Path(MODELS).parent.resolve()
    keep = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != tests]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(keep)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected2, expected5 = _eager(CONV, CONV_IN, x[:2], x)
    _close(expected2, {"output": np.load(folder / "out2.npy")})
    _close(expected5, {"output": np.load(folder / "out5.npy")})


def test_aoti_from_source_compiles_on_load() -> None:
    x = _x(3, 6, 24)
    (expected,) = _eager(ENC, ENC_IN, x)
    runner = AotiRunner(ENC, ENC_IN)
    with runner:
        out = runner.infer({"x": x})
        package = Path(str(runner.describe()["package"]))
        assert runner.describe()["built_on_load"] is True and package.is_file()
    assert not package.exists()  # the temporary package went with the runner
    _close(expected, out)


def test_run_backends_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """`enginekit run SOURCE --backend torch --backend inductor --input x:2x3x16x16` through run_backends,
    with the proposed registry/multirun additions patched in when they are not there yet."""
    import enginekit.multirun as multirun
    import enginekit.registry as registry
    from enginekit.data import InputShape
    from enginekit.settings import FeedSettings, RunSettings

    if "inductor" not in registry.backend_names():
        _patch_registry(monkeypatch)
    torch_inputs = ("x:2x3x16x16",)
    settings = RunSettings(
        model=CONV, backends=("torch", "inductor"),
        feeds=FeedSettings(inputs=(InputShape("x", (2, 3, 16, 16)),)),
        backend=BackendSettings(torch_inputs=torch_inputs, torch_device="cpu"),
        compare=CompareSettings(atol=Tolerances(1e-4), rtol=Tolerances(1e-4)),
    )
    result = multirun.run_backends(settings)
    assert [(r.label, r.status) for r in result.rows] == [("torch", "ok"), ("inductor", "ok")], result.to_dict()
    assert result.rows[0].is_reference and result.passed


def _patch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    import enginekit.multirun as multirun
    import enginekit.registry as registry
    from enginekit.backends.torch_io import torch_source_io

    torch_precisions = ("fp32", "tf32", "fp16", "bf16")
    extra = (
        registry.BackendInfo(name="torch", description="PyTorch eager", runner="enginekit.backends.torch_eager:"
                             "TorchEagerRunner", requires=("torch",), devices=("cpu", "cuda"),
                             precisions=torch_precisions, formats=("torch",)),
        registry.BackendInfo(name="inductor", description="torch.compile", runner="enginekit.backends.inductor:"
                             "InductorRunner", requires=("torch",), devices=("cpu", "cuda"),
                             precisions=torch_precisions, formats=("torch",)),
    )
    monkeypatch.setattr(registry, "BACKENDS", registry.BACKENDS + extra)
    original_format, original_io = registry.model_format, multirun.model_io

    def model_format(path: str | Path) -> str:
        return torch_model_format(path) or original_format(path)

    def model_io(path: Path, fmt: str, *rest: object) -> object:
        return torch_source_io(path, ("x:2x3x16x16",)) if fmt == "torch" else original_io(path, fmt)

    monkeypatch.setattr(registry, "model_format", model_format)
    monkeypatch.setattr(multirun, "model_io", model_io)


@cuda
@pytest.mark.gpu
def test_inductor_on_cuda() -> None:
    x = _x(4, 3, 16, 16)
    (expected,) = _eager(CONV, CONV_IN, x)
    with InductorRunner(CONV, CONV_CUDA) as runner:
        assert runner.device == "cuda" and runner.describe()["channels_last"] is True
        _close(expected, runner.infer({"x": x}))
    runner = InductorRunner(CONV, BackendSettings(torch_inputs=("x:batch,3,16,16",), inductor_mode="reduce-overhead",
                                                  dynamic_shapes="dynamic", torch_device="cuda"))
    with runner:
        assert runner.describe()["cudagraphs"] is True
        for batch in (4, 6):
            staged = runner.stage({"x": _x(batch, 3, 16, 16)})
            for _ in range(4):  # cudagraph trees record after warm-up runs
                out = runner.fetch(runner.run_staged(staged))
            (ref,) = _eager(CONV, CONV_IN, _x(batch, 3, 16, 16))
            _close(ref, out)
        assert runner.stats.eager_calls == 0 and runner.stats.recompilations == 0
    with InductorRunner(CONV, CONV_CUDA, "bf16") as runner:
        _close(expected, runner.infer({"x": x}), 5e-2)


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("bf16", 5e-2)])
def test_aoti_package_on_cuda(tmp_path: Path, precision: str, tol: float) -> None:
    x, x7 = _x(4, 3, 16, 16), _x(4, 3, 16, 16, seed=7)
    expected, expected7 = _eager(CONV, CONV_IN, x, x7)
    pkg = build_aoti_package(str(CONV), tmp_path / f"conv_{precision}.pt2", CONV_CUDA, precision)
    assert pkg.manifest["device"] == "cuda" and pkg.manifest["gpu"] and pkg.manifest["precision"] == precision
    assert pkg.manifest["dynamic_dims"]["batch"]["max"] == 65535  # CUDA convolutions bound the batch; export says so
    with AotiRunner(pkg.path, TRUSTED, precision) as runner:
        assert runner.device == "cuda" and runner.supports_cuda_graph
        _close(expected, runner.infer({"x": x}), tol)
        staged = runner.stage({"x": x})
        replay = runner.capture_cuda_graph(staged)
        staged["x"].copy_(torch.from_numpy(x7))
        out = runner.fetch(replay())
    _close(expected7, out, tol)


def test_a_package_whose_load_kills_a_probe_process_is_skipped_not_a_crash(
    conv_package: AotiPackage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lent H200 image's torch 2.11+cu130 segfaults in aoti_load_package: here a child that really dies of
    SIGSEGV (a NULL read) stands for it, on CPU, where the probe is switched on for the test."""
    from enginekit.backends import aoti_probe
    from enginekit.multirun import Candidate, use_runner

    monkeypatch.setattr(aoti_probe, "PROBE_DEVICES", ("cpu",))
    monkeypatch.setattr(aoti_probe, "PROBE_SCRIPT", "import ctypes; ctypes.string_at(0)")
    monkeypatch.setattr(aoti_probe, "_seen", {})
    row, _ = use_runner(Candidate("aoti"), conv_package.path, TRUSTED, lambda r: r.infer({"x": _x(2, 3, 16, 16)}))
    assert row.status == "skipped"
    assert "crashed (SIGSEGV)" in row.reason and "not loaded in-process" in row.reason
    assert "AOTInductor on torch 2.11+cu130" in row.reason


def test_the_probe_lets_a_loadable_package_through(conv_package: AotiPackage, monkeypatch: pytest.MonkeyPatch) -> None:
    from enginekit.backends import aoti_probe

    monkeypatch.setattr(aoti_probe, "PROBE_DEVICES", ("cpu",))
    monkeypatch.setattr(aoti_probe, "_seen", {})
    aoti_probe.probe_load(conv_package.path, "cpu")  # the real probe script: the package loads in the child
    assert list(aoti_probe._seen.values()) == [None]
    with AotiRunner(conv_package.path, TRUSTED) as runner:
        (expected,) = _eager(CONV, CONV_IN, _x(2, 3, 16, 16))
        _close(expected, runner.infer({"x": _x(2, 3, 16, 16)}))


def test_cuda_graph_option_needs_cuda_and_a_capturing_backend() -> None:
    from enginekit.multirun import Candidate, use_runner

    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    row, _ = use_runner(Candidate.parse("torch/cuda_graph=on"), CONV, CONV_IN, lambda r: None)
    assert row.status == "skipped" and "cuda_graph=on needs CUDA" in row.reason
    row, _ = use_runner(Candidate.parse("inductor/cudnn_benchmark=on"), CONV, CONV_IN, lambda r: None)
    assert row.status == "skipped" and "cudnn_benchmark=on needs CUDA" in row.reason
    settings = BackendSettings(torch_inputs=("x:batch,3,16,16",), torch_device="cpu", cuda_graph=True)
    row, _ = use_runner(Candidate("inductor"), CONV, settings, lambda r: None)
    assert row.status == "error" and "mode=reduce-overhead" in row.reason
