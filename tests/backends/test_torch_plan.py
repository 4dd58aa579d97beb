"""A precision plan on the torch and inductor backends: ONNX plan nodes mapped back to PyTorch modules (through
the dynamo exporter's node metadata), those modules kept in FP32 inside an fp16 model.

The model (torch_breaker_model.py:breaker) overflows float16 inside its ``energy`` block: without the plan fp16 gives
inf, with a plan naming the ONNX nodes of that block it stays close to fp32. CPU inductor compiles fp16 here
(torch 2.13), so both backends are tested at fp16.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from enginekit.errors import InvalidArgumentError, UnknownNameError
from enginekit.graph.precision import PlanEntry, PrecisionPlan, save_plan
from enginekit.settings import BackendSettings, ExportSettings

torch = pytest.importorskip("torch")

from enginekit.backends.inductor import InductorRunner  # noqa: E402
from enginekit.backends.torch_eager import TorchEagerRunner  # noqa: E402
from enginekit.backends.torch_plan import cast_keeping_fp32, node_modules  # noqa: E402

MODELS = Path(__file__).with_name("torch_breaker_model.py")
SOURCE = Path(f"{MODELS}:breaker")
BASE = BackendSettings(torch_inputs=("x:2x8",), torch_device="cpu")
X = np.random.default_rng(0).uniform(0, 1, (2, 8)).astype(np.float32)


@dataclass(frozen=True)
class Exported:
    onnx: Path
    energy_nodes: list[str]  # every ONNX node of the energy block
    plan: Path  # fp16 plan naming them
    reference: np.ndarray  # fp32 eager output on X


def _scoped(model: onnx.ModelProto, scope: str) -> list[str]:
    """Node names whose raw exporter namespace mentions ``scope`` (independent of torch_plan's parser)."""
    return [n.name for n in model.graph.node
            if any(p.key == "namespace" and f"/{scope}:" in p.value for p in n.metadata_props)]


def _plan(path: Path, nodes: list[str], precision: str = "fp16") -> Path:
    save_plan(PrecisionPlan(precision, tuple(PlanEntry(n, "test") for n in nodes)), path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    from enginekit.export.api import export_model

    folder = tmp_path_factory.mktemp("torch-plan")
    res = export_model(ExportSettings(source=str(SOURCE), output=folder / "breaker.onnx", inputs=("x:2x8",)))
    assert res.exporter == "dynamo"
    model = onnx.load(str(res.output))
    nodes = _scoped(model, "inner.energy")
    assert len(nodes) == 6, [n.name for n in model.graph.node]  # Gemm, Mul, Mul, ReduceSum, Sqrt, Div
    with TorchEagerRunner(SOURCE, BASE) as runner:
        reference = runner.infer({"x": X})["output"]
    return Exported(res.output, nodes, _plan(folder / "plan.json", nodes), reference)


def _with_plan(e: Exported, plan: Path | None = None) -> BackendSettings:
    return replace(BASE, precision_plan=plan or e.plan, precision_plan_model=e.onnx)


def _broken(out: np.ndarray, ref: np.ndarray) -> bool:
    return bool(not np.isfinite(out).all() or np.abs(out - ref).max() > 0.1)


def test_dynamo_export_metadata_maps_nodes_to_source_modules(exported: Exported) -> None:
    model = onnx.load(str(exported.onnx))
    by_name = {n.name: n for n in model.graph.node}
    chain = node_modules(by_name[exported.energy_nodes[0]])
    assert chain is not None
    assert [name for name, _ in chain] == ["", "energy", "energy.proj"]  # the export wrapper is removed
    assert [cls.rsplit(".", 1)[-1] for _, cls in chain] == ["Breaker", "Energy", "Linear"]
    stripped = onnx.NodeProto()
    stripped.CopyFrom(by_name[exported.energy_nodes[0]])
    del stripped.metadata_props[:]
    assert node_modules(stripped) is None


def test_kept_modules_hold_the_source_float32_weights() -> None:
    from torch_breaker_model import breaker

    source, model = breaker(), breaker()
    handles = cast_keeping_fp32(model, torch.float16, ["energy"])
    assert len(handles) == 2  # one pre-hook, one post-hook
    assert model.pre[0].weight.dtype == torch.float16 and model.head.weight.dtype == torch.float16
    assert model.energy.proj.weight.dtype == torch.float32
    assert torch.equal(model.energy.proj.weight, source.energy.proj.weight)  # exact, no round trip through fp16
    x = torch.from_numpy(X).half()
    with torch.inference_mode():
        y = model(x)
        inner = model.energy(model.pre(x))
    assert y.dtype == torch.float16 and inner.dtype == torch.float16  # cast back at the module's exit
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("runner_cls", [TorchEagerRunner, InductorRunner], ids=["torch", "inductor"])
def test_fp16_breaks_without_plan_and_is_fixed_with_it(exported: Exported, runner_cls: type) -> None:
    with runner_cls(SOURCE, BASE, "fp16") as runner:
        without = runner.infer({"x": X})["output"]
        assert "precision_plan" not in runner.describe()
    assert _broken(without, exported.reference), without
    with runner_cls(SOURCE, _with_plan(exported), "fp16") as runner:
        fixed = runner.infer({"x": X})["output"]
        details = runner.describe()
    assert np.isfinite(fixed).all()
    np.testing.assert_allclose(fixed, exported.reference, atol=1e-2, rtol=1e-2)
    info = details["precision_plan"]
    assert isinstance(info, dict)
    assert info["plan_nodes"] == 6
    (kept,) = info["fp32_modules"]
    assert kept["module"] == "energy" and kept["class"] == "Energy"
    assert kept["plan_nodes"] == kept["onnx_nodes"] == 6 and kept["widened"] is False
    if runner_cls is InductorRunner:  # the hooks compile with the model: no graph break, no eager fallback
        stats = details["compile"]
        assert isinstance(stats, dict)
        assert stats["graph_breaks"] == 0 and stats["eager_fallback"] is False and stats["graphs"] == 1


def test_one_plan_node_widens_to_its_whole_module(exported: Exported, tmp_path: Path) -> None:
    plan = _plan(tmp_path / "one.json", [exported.energy_nodes[3]])  # the ReduceSum alone
    with TorchEagerRunner(SOURCE, _with_plan(exported, plan), "fp16") as runner:
        fixed = runner.infer({"x": X})["output"]
        info = runner.describe()["precision_plan"]
    np.testing.assert_allclose(fixed, exported.reference, atol=1e-2, rtol=1e-2)
    assert isinstance(info, dict)
    (kept,) = info["fp32_modules"]
    assert kept["module"] == "energy" and kept["plan_nodes"] == 1 and kept["onnx_nodes"] == 6
    assert kept["widened"] is True and "widened" in info["note"]


def test_nested_and_root_nodes_collapse_to_the_outer_module(exported: Exported, tmp_path: Path) -> None:
    model = onnx.load(str(exported.onnx))
    root_nodes = [n.name for n in model.graph.node if n.op_type == "Add"]  # the residual, in Breaker.forward
    plan = _plan(tmp_path / "root.json", [*exported.energy_nodes, *root_nodes])
    with TorchEagerRunner(SOURCE, _with_plan(exported, plan), "fp16") as runner:
        out = runner.infer({"x": X})["output"]
        info = runner.describe()["precision_plan"]
    assert isinstance(info, dict)
    (kept,) = info["fp32_modules"]
    assert kept["module"] == "(whole model)" and kept["plan_nodes"] == 7
    # all of it ran in FP32: only the fp16 feed and output roundings remain
    np.testing.assert_allclose(out, exported.reference, atol=1e-3, rtol=1e-3)


def test_fp32_runner_ignores_the_plan(exported: Exported) -> None:
    with TorchEagerRunner(SOURCE, _with_plan(exported)) as runner:
        out = runner.infer({"x": X})["output"]
        assert "precision_plan" not in runner.describe()
    np.testing.assert_array_equal(out, exported.reference)


def _fails(settings: BackendSettings, error: type[Exception], *needles: str, source: Path = SOURCE) -> None:
    with pytest.raises(error) as info, TorchEagerRunner(source, settings, "fp16"):
        pass
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_plan_for_another_precision(exported: Exported, tmp_path: Path) -> None:
    plan = _plan(tmp_path / "bf16.json", exported.energy_nodes, "bf16")
    _fails(_with_plan(exported, plan), InvalidArgumentError, "plan is for bf16", "runs fp16")


def test_plan_naming_unknown_nodes(exported: Exported, tmp_path: Path) -> None:
    plan = _plan(tmp_path / "unknown.json", ["node_sum_7"])
    _fails(_with_plan(exported, plan), UnknownNameError, "node_sum_7", "does not have")


def test_plan_needs_the_plan_model(exported: Exported) -> None:
    _fails(replace(BASE, precision_plan=exported.plan), InvalidArgumentError, "--precision-plan-model")


def test_plan_model_without_node_metadata(exported: Exported, tmp_path: Path) -> None:
    model = onnx.load(str(exported.onnx))
    for node in model.graph.node:  # as `enginekit prepare` / onnxsim leave it
        del node.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    settings = replace(_with_plan(exported), precision_plan_model=bare)
    _fails(settings, InvalidArgumentError, "does not apply", "no PyTorch module metadata", exported.energy_nodes[0])


def test_plan_from_another_model(exported: Exported) -> None:
    _fails(_with_plan(exported), InvalidArgumentError, "'energy'", "no module of that name",
          source=Path(f"{MODELS}:renamed"))


def test_plan_on_a_torchscript_source(exported: Exported, tmp_path: Path) -> None:
    from torch_breaker_model import breaker

    scripted = tmp_path / "breaker.pt"
    torch.jit.trace(breaker(), torch.from_numpy(X)).save(str(scripted))
    trusted = replace(_with_plan(exported), trust_remote_code=True)  # the file this test wrote
    _fails(trusted, InvalidArgumentError, "torchscript", "file.py:factory", source=scripted)


def test_aoti_refuses_a_plan(exported: Exported) -> None:
    from enginekit.backends.aoti import AotiRunner

    with pytest.raises(InvalidArgumentError, match="aoti backend does not apply --precision-plan"):
        AotiRunner(SOURCE, _with_plan(exported), "fp16").load()
