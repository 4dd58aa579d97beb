"""FP8 linears (linear=fp8): which layers are replaced, the fast path turned off, and outputs judged like int8.

torch._scaled_mm runs on CPU in the pinned torch (checked, else skipped with the reason); on GPUs it needs compute
capability 8.9+.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from enginekit.backends.torch_fp8 import Fp8Linear, fp8_supported, swap_fp8_linears  # noqa: E402
from enginekit.compare import CompareSettings, compare_outputs  # noqa: E402
from enginekit.compare.per_precision import settings_for_precision  # noqa: E402
from enginekit.errors import InvalidArgumentError  # noqa: E402
from enginekit.multirun import Candidate, use_runner  # noqa: E402
from enginekit.settings import BackendSettings  # noqa: E402

HERE = Path(__file__).parent
ENCODER = HERE / "torch_models.py:fast_path_encoder"
WHY = fp8_supported("cpu")
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"FP8 matmuls on CPU: {WHY}")
SETTINGS = BackendSettings(torch_inputs=("x:batch,12,32",), torch_device="cpu")


def _encoder() -> torch.nn.Module:
    import importlib.util

    spec = importlib.util.spec_from_file_location("torch_models_fp8", HERE / "torch_models.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.fast_path_encoder().to(torch.bfloat16)


def test_linears_outside_attention_are_replaced_and_the_fast_path_is_off() -> None:
    model = _encoder()
    swapped = swap_fp8_linears(model, "cpu", torch.bfloat16)
    assert swapped == ["inp", "encoder.layers.0.linear1", "encoder.layers.0.linear2", "encoder.layers.1.linear1",
                       "encoder.layers.1.linear2", "out"]
    mha = model.encoder.layers[0].self_attn
    assert not isinstance(mha.out_proj, Fp8Linear)  # MultiheadAttention reads out_proj.weight itself
    assert all(layer._forward_pre_hooks for layer in model.encoder.layers)  # no fused fast path around FP8 layers
    lin = model.encoder.layers[0].linear1
    assert lin.weight_fp8.dtype == torch.float8_e4m3fn and lin.weight_scale.shape == (1, 64)


def test_fp8_linear_is_close_to_the_bf16_layer_on_real_scale_inputs() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32).to(torch.bfloat16)
    x = torch.randn(8, 5, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        exact = torch.nn.functional.linear(x.float(), lin.weight.float(), lin.bias.float())
        got = Fp8Linear(lin)(x)
    assert got.dtype == torch.bfloat16 and got.shape == (8, 5, 32)
    rel = float((got.float() - exact).abs().max() / exact.abs().max())
    assert 0 < rel < 0.1  # quantized (not bit-exact), within FP8's few-percent error


def test_runner_with_fp8_linears_is_judged_by_the_8bit_rule() -> None:
    x = np.random.default_rng(0).standard_normal((3, 12, 32)).astype(np.float32)

    def outputs(label: str) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        row, value = use_runner(Candidate.parse(label), ENCODER, SETTINGS, lambda r: (r.infer({"x": x}), r.describe()))
        assert row.status == "ok", row.reason
        assert value is not None
        return value

    ref, _ = outputs("torch")
    fp8, details = outputs("torch:bf16/linear=fp8")
    assert details["fp8_linear"] == {"layers": 6, "names": ["inp", "encoder.layers.0.linear1",
                                                            "encoder.layers.0.linear2", "encoder.layers.1.linear1",
                                                            "encoder.layers.1.linear2", "out"]}
    err = float(np.abs(fp8["output"] - ref["output"]).max())
    assert err > 1e-3  # FP8 really ran: bf16 alone is closer
    rule = settings_for_precision(CompareSettings(), "fp8", ref)
    assert rule.atol.per_output[0][1] == pytest.approx(4 * 2**-7 * max(float(np.abs(ref["output"]).max()), 1.0))
    verdict = compare_outputs(ref, fp8, rule)
    assert verdict.outputs[0].max_abs_err == pytest.approx(err)


def test_fp8_needs_bf16_and_an_eligible_linear() -> None:
    row, _ = use_runner(Candidate.parse("torch:fp16/linear=fp8"), ENCODER, SETTINGS, lambda r: None)
    assert row.status == "error" and "precision bf16" in row.reason
    tiny = torch.nn.Sequential(torch.nn.Linear(3, 5)).to(torch.bfloat16)  # 3 and 5 are not multiples of 16
    with pytest.raises(InvalidArgumentError, match="no nn.Linear layer"):
        swap_fp8_linears(tiny, "cpu", torch.bfloat16)
