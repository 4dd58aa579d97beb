"""8-bit linears (linear=fp8, linear=int8): which layers are replaced, self-attention, the fast path turned off,
compiled results at several shapes, and outputs judged like int8.

torch._scaled_mm and torch._int_mm run on CPU in the pinned torch (checked, else skipped with the reason); on GPUs
FP8 needs compute capability 8.9+.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from enginekit.backends.torch_quant import (  # noqa: E402
    Fp8Linear,
    Int8Linear,
    QuantSelfAttention,
    fp8_supported,
    int8_supported,
    quantizable_layers,
    swap_quantized_linears,
    turn_off_transformer_fast_path,
)
from enginekit.compare import CompareSettings, compare_outputs  # noqa: E402
from enginekit.compare.per_precision import settings_for_precision  # noqa: E402
from enginekit.errors import InvalidArgumentError  # noqa: E402
from enginekit.multirun import Candidate, use_runner  # noqa: E402
from enginekit.settings import BackendSettings  # noqa: E402

HERE = Path(__file__).parent
ENCODER = HERE / "torch_models.py:fast_path_encoder"
FP8_WHY = fp8_supported("cpu")
INT8_WHY = int8_supported("cpu")
needs_fp8 = pytest.mark.skipif(FP8_WHY is not None, reason=f"FP8 matmuls on CPU: {FP8_WHY}")
needs_int8 = pytest.mark.skipif(INT8_WHY is not None, reason=f"int8 matmuls on CPU: {INT8_WHY}")
SETTINGS = BackendSettings(torch_inputs=("x:batch,12,32",), torch_device="cpu")
SWAPPED = ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn", "inp", "encoder.layers.0.linear1",
           "encoder.layers.0.linear2", "encoder.layers.1.linear1", "encoder.layers.1.linear2", "out"]


def _encoder(dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    import importlib.util

    spec = importlib.util.spec_from_file_location("torch_models_quant", HERE / "torch_models.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.fast_path_encoder().to(dtype)


def _runner_outputs(label: str, feeds: list[np.ndarray]) -> tuple[list[dict[str, np.ndarray]], dict[str, object]]:
    row, value = use_runner(Candidate.parse(label), ENCODER, SETTINGS,
                            lambda r: ([r.infer({"x": x}) for x in feeds], r.describe()))
    assert row.status == "ok", row.reason
    assert value is not None
    return value


@pytest.mark.parametrize("kind, cls", [pytest.param("fp8", Fp8Linear, marks=needs_fp8),
                                       pytest.param("int8", Int8Linear, marks=needs_int8)])
def test_linears_and_self_attention_are_replaced_and_the_fast_path_is_off(kind: str, cls: type) -> None:
    model = _encoder()
    assert swap_quantized_linears(model, kind, "cpu", torch.bfloat16) == SWAPPED
    attn = model.encoder.layers[0].self_attn
    assert isinstance(attn, QuantSelfAttention)
    assert isinstance(attn.q_in_proj, cls) and isinstance(attn.q_out_proj, cls)
    assert not isinstance(attn.original.out_proj, cls)  # the original, run for other calls, stays as it was
    assert attn.out_proj is attn.original.out_proj and attn.in_proj_weight is attn.original.in_proj_weight
    assert all(layer._forward_pre_hooks for layer in model.encoder.layers)  # no fused fast path around 8-bit layers
    assert isinstance(model.encoder.layers[0].linear1, cls)


@pytest.mark.parametrize("cls", [pytest.param(Fp8Linear, marks=needs_fp8), pytest.param(Int8Linear, marks=needs_int8)])
@pytest.mark.parametrize("rows", [3, 40])  # int8: fewer than 17 rows are padded for cuBLASLt
def test_quantized_linear_is_close_to_the_layer_on_real_scale_inputs(cls: type, rows: int) -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32).to(torch.bfloat16)
    x = torch.randn(rows, 5, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        exact = torch.nn.functional.linear(x.float(), lin.weight.float(), lin.bias.float())
        got = cls(lin)(x)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 5, 32)
    rel = float((got.float() - exact).abs().max() / exact.abs().max())
    assert 0 < rel < 0.05  # quantized (not bit-exact), within 8 bits' few-percent error


@needs_int8
def test_int8_linear_weights_are_symmetric_per_output_channel() -> None:
    lin = torch.nn.Linear(32, 16)
    q = Int8Linear(lin)
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.shape == (16, 32) and q.weight_scale.shape == (1, 16)
    assert int(q.weight_int8.abs().amax(dim=1).min()) == 127  # each row's largest weight maps to 127
    back = q.weight_int8.float() * q.weight_scale.t()
    assert float((back - lin.weight.detach()).abs().max()) <= float(q.weight_scale.max()) / 2 + 1e-7
    # code that reads layer.weight (its dtype, or F.linear with it) gets the dequantized weight
    assert q.weight.dtype == lin.weight.dtype and torch.equal(q.weight, back)


@needs_int8
def test_compiled_int8_linear_with_freezing_stays_right_at_every_batch() -> None:
    """torch 2.13 on CPU: with freezing, inductor rewrote ``(int_mm * x_scale) * w_scale`` into oneDNN's qlinear and
    returned wrong values (max error 0.6 on unit-scale outputs) at 24 and 36 rows; Int8Linear avoids that form."""
    from torch._inductor import config as inductor_config

    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 64).to(torch.bfloat16)
    q = Int8Linear(lin)
    torch._dynamo.reset()
    try:
        with torch.inference_mode(), inductor_config.patch(freezing=True):
            compiled = torch.compile(lambda x: q(x), dynamic=False)
            for rows in (24, 12, 36):
                x = torch.randn(rows, 32, dtype=torch.bfloat16)
                err = float((compiled(x).float() - lin(x).float()).abs().max())
                assert err < 0.05, (rows, err)
    finally:
        torch._dynamo.reset()


@needs_int8
@pytest.mark.parametrize("batch_first", [True, False])
def test_quantized_self_attention_keeps_multihead_attention_semantics(batch_first: bool) -> None:
    """With its projections made exact again, the replacement equals nn.MultiheadAttention under every mask form."""
    torch.manual_seed(1)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    attn = QuantSelfAttention(mha, "int8")
    packed = torch.nn.Linear(32, 96)
    with torch.no_grad():
        packed.weight.copy_(mha.in_proj_weight)
        packed.bias.copy_(mha.in_proj_bias)
    attn.q_in_proj, attn.q_out_proj = packed, mha.out_proj  # exact: only the attention arithmetic is compared
    x = torch.randn(2, 5, 32) if batch_first else torch.randn(5, 2, 32)
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    masks: list[dict[str, object]] = [
        {}, {"attn_mask": causal}, {"key_padding_mask": padding}, {"attn_mask": causal, "key_padding_mask": padding},
        {"attn_mask": torch.randn(5, 5)}, {"attn_mask": torch.randn(8, 5, 5)}, {"attn_mask": causal, "is_causal": True},
        {"key_padding_mask": torch.zeros(2, 5).masked_fill(padding, -1e4)},
    ]
    with torch.inference_mode():
        for kw in masks:
            want = mha(x, x, x, need_weights=False, **kw)[0]
            got, weights = attn(x, x, x, need_weights=False, **kw)
            assert weights is None
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"masks {sorted(kw)}")
        # calls the replacement does not take run the original: attention weights asked for, cross-attention
        want_w = mha(x, x, x)
        got_w = attn(x, x, x)
        torch.testing.assert_close(got_w[0], want_w[0])
        torch.testing.assert_close(got_w[1], want_w[1])
        # the causal hint without its mask: the original decides (its fast path ignores it, its slow path refuses)
        try:
            want_causal = mha(x, x, x, need_weights=False, is_causal=True)[0]
        except RuntimeError as exc:
            with pytest.raises(RuntimeError, match="Need attn_mask"):
                attn(x, x, x, need_weights=False, is_causal=True)
            assert not batch_first and "Need attn_mask" in str(exc)
        else:
            torch.testing.assert_close(attn(x, x, x, need_weights=False, is_causal=True)[0], want_causal)
        memory = torch.randn_like(x)
        torch.testing.assert_close(attn(x, memory, memory, need_weights=False)[0],
                                   mha(x, memory, memory, need_weights=False)[0])


@needs_int8
def test_runner_with_int8_linears_is_judged_by_the_8bit_rule_compiled_at_several_batches() -> None:
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal((b, 12, 32)).astype(np.float32) for b in (1, 3)]
    refs, _ = _runner_outputs("torch", feeds)
    for label in ("torch/linear=int8", "inductor:bf16/linear=int8", "inductor:fp16/linear=int8/freezing=off"):
        outs, details = _runner_outputs(label, feeds)
        assert details["quantized_linear"] == {"kind": "int8", "layers": 8, "names": SWAPPED}
        for ref, out in zip(refs, outs, strict=True):
            err = float(np.abs(out["output"] - ref["output"]).max())
            assert err > 1e-4, label  # int8 really ran: FP32 eager alone would be closer
            verdict = compare_outputs(ref, out, settings_for_precision(CompareSettings(), "int8", ref))
            assert verdict.passed, (label, err)


@needs_fp8
def test_runner_with_fp8_linears_is_judged_by_the_8bit_rule() -> None:
    x = np.random.default_rng(0).standard_normal((3, 12, 32)).astype(np.float32)
    (ref,), _ = _runner_outputs("torch", [x])
    (fp8,), details = _runner_outputs("torch:bf16/linear=fp8", [x])
    assert details["quantized_linear"] == {"kind": "fp8", "layers": 8, "names": SWAPPED}
    err = float(np.abs(fp8["output"] - ref["output"]).max())
    assert err > 1e-3  # FP8 really ran: bf16 alone is closer
    rule = settings_for_precision(CompareSettings(), "fp8", ref)
    assert rule.atol.per_output[0][1] == pytest.approx(4 * 2**-7 * max(float(np.abs(ref["output"]).max()), 1.0))
    verdict = compare_outputs(ref, fp8, rule)
    assert verdict.outputs[0].max_abs_err == pytest.approx(err)


@needs_fp8
def test_fp8_needs_bf16_and_an_eligible_linear() -> None:
    row, _ = use_runner(Candidate.parse("torch:fp16/linear=fp8"), ENCODER, SETTINGS, lambda r: None)
    assert row.status == "error" and "precision bf16" in row.reason
    tiny = torch.nn.Sequential(torch.nn.Linear(3, 5)).to(torch.bfloat16)  # 3 and 5 are not multiples of 16
    with pytest.raises(InvalidArgumentError, match="no nn.Linear layer"):
        swap_quantized_linears(tiny, "fp8", "cpu", torch.bfloat16)


@needs_int8
def test_int8_runs_at_fp32_and_refuses_a_model_without_an_eligible_linear() -> None:
    model = _encoder(torch.float32)
    assert swap_quantized_linears(model, "int8", "cpu", torch.float32) == SWAPPED
    half = _encoder(torch.float16)  # weights in another dtype than the compute one are left alone
    with pytest.raises(InvalidArgumentError, match="no nn.Linear layer that INT8"):
        swap_quantized_linears(half, "int8", "cpu", torch.float32)
    with pytest.raises(InvalidArgumentError, match="choose one of fp8, int8"):
        swap_quantized_linears(model, "int4", "cpu", torch.float32)


@needs_int8
def test_a_padded_batch_through_nn_transformer_encoder_runs_the_8bit_layers() -> None:
    """With a src_key_padding_mask, nn.TransformerEncoder takes its own nested-tensor path (hooks do not stop it),
    which read linear1.weight (AttributeError) and fed nested tensors to the attention; it is turned off."""
    torch.manual_seed(3)
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    exact = torch.nn.TransformerEncoder(layer, 2).eval()
    assert exact.use_nested_tensor
    quant = torch.nn.TransformerEncoder(layer, 2).eval()
    quant.load_state_dict(exact.state_dict())
    swap_quantized_linears(quant, "int8", "cpu", torch.float32)
    x = torch.randn(3, 6, 32)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[1, 4:] = True
    with torch.inference_mode():
        want = exact(x, src_key_padding_mask=padding)  # nested (its padded positions come back as zeros)
        got = quant(x, src_key_padding_mask=padding)
    assert quant.use_nested_tensor is False
    keep = ~padding
    err = float((got[keep] - want[keep]).abs().max())
    assert 0 < err < 4 * 2**-7 * max(float(want[keep].abs().max()), 1.0)


def test_quantizable_layers_follow_the_swap_rules() -> None:
    assert quantizable_layers(_encoder(torch.float32))
    assert not quantizable_layers(torch.nn.Sequential(torch.nn.Linear(2048, 1000)))  # ResNet-50's head: 1000 % 16
    assert quantizable_layers(torch.nn.Sequential(torch.nn.Linear(2048, 1024)))
    assert not quantizable_layers(torch.nn.Conv2d(3, 16, 3))


def test_turning_off_the_transformer_fast_path_exposes_the_layer_ops() -> None:
    """fastpath=off: the layers stop running as one native op (opaque to torch.compile); results unchanged."""
    from torch.profiler import ProfilerActivity, profile

    def ops(model: torch.nn.Module, x: torch.Tensor) -> tuple[set[str], torch.Tensor]:
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            out = model(x)
        return {e.key for e in prof.key_averages()}, out

    x = torch.randn(2, 12, 32)
    model = _encoder(torch.float32)
    before, want = ops(model, x)
    assert "aten::_transformer_encoder_layer_fwd" in before
    assert turn_off_transformer_fast_path(model) == 2 and model.encoder.use_nested_tensor is False
    after, got = ops(model, x)
    assert "aten::_transformer_encoder_layer_fwd" not in after and "aten::layer_norm" in after
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert turn_off_transformer_fast_path(torch.nn.Sequential(torch.nn.Linear(4, 4))) == 0
