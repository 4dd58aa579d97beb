"""Kernel-time breakdown: names of real CUDA kernels and aten ops classify as their category, a real model
profiled on CPU breaks down into conv / gemm / attention, and Amdahl's bounds are exact on a hand-made one."""

from __future__ import annotations

import json
import math

import pytest

from enginekit.bench.kernels import (
    ATTENTION,
    CATEGORIES,
    CONV,
    COPY,
    ELEMENTWISE,
    GEMM,
    OTHER,
    TOP_NAME_CHARS,
    CategoryTime,
    KernelBreakdown,
    aggregate,
    amdahl_bounds,
    breakdown_table,
    classify,
    profile_callable,
    top_table,
)
from enginekit.errors import HardwareUnavailableError, InvalidArgumentError

# names as the profiler reports them: CUDA kernels from H100/H200 and A100 traces, and aten ops from CPU traces
NAMES = [
    # GEMMs: cuBLAS (xmma, nvjet on CUDA 12.8+, ampere_), CUTLASS, split-K reduction, inductor's mm templates
    ("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1_execute_segment_k_off_kernel"
     "__5x_cublas", GEMM),
    ("void cutlass::Kernel2<cutlass_80_tensorop_s16816gemm_relu_f16_64x64_64x4_nn_align8>"
     "(cutlass_80_tensorop_s16816gemm_relu_f16_64x64_64x4_nn_align8::Params)", GEMM),
    ("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NNT", GEMM),
    # CUTLASS 3.x spells its template, copy atoms included (the row-wise FP8 _scaled_mm kernel is one of these)
    ("void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<cute::tuple<int, int, int, int>, "
     "cutlass::gemm::collective::CollectiveMma<cute::Copy_Atom<cute::SM90_TMA_LOAD>, cute::DefaultCopy>>>", GEMM),
    ("ampere_fp16_s16816gemm_fp16_128x128_ldg8_f2f_stages_32x5_nn", GEMM),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, __half, __half, __half, __half, false, true, false>"
     "(cublasLt::cublasSplitKParams<__half>, __half const*)", GEMM),
    ("triton_tem_fused_addmm_gelu_2", GEMM),
    ("triton_tem_fused_mm_5", GEMM),
    ("aten::mm", GEMM),
    ("aten::addmm", GEMM),
    ("aten::bmm", GEMM),
    ("aten::_addmm_activation", GEMM),
    ("aten::_int_mm", GEMM),
    ("aten::_scaled_mm", GEMM),
    ("mkldnn::_linear_pointwise", GEMM),
    # convolutions: implicit-GEMM kernels (they contain "gemm"), cuDNN, inductor's conv template, oneDNN
    ("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x128x64_warpgroupsize1x1x1_g1"
     "_execute_kernel__5x_cudnn", CONV),
    ("sm80_xmma_dgrad_implicit_gemm_indexed_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize64x64x64_stage5_warpsize2x2x1",
     CONV),
    ("void implicit_convolve_sgemm<float, float, 128, 5, 5, 3, 3, 3, 1, true, false, true>(int, int, int)", CONV),
    ("triton_tem_fused_convolution_6", CONV),
    ("aten::convolution", CONV),
    ("aten::cudnn_convolution", CONV),
    ("aten::mkldnn_convolution", CONV),
    ("mkldnn::_convolution_pointwise", CONV),
    # attention: flash (standalone and PyTorch's copy), memory-efficient (a CUTLASS kernel), cuDNN's SDPA
    ("flash_fwd_kernel", ATTENTION),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, cutlass::half_t,"
     " Flash_kernel_traits<64, 128, 128, 4, cutlass::half_t> >, false, false, false, false, true, true, false, "
     "false>(pytorch_flash::Flash_fwd_params)", ATTENTION),
    ("fmha_cutlassF_f16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::half_t, "
     "cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)", ATTENTION),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64_4x1x1_kernel0_0", ATTENTION),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", ATTENTION),
    ("aten::_scaled_dot_product_efficient_attention", ATTENTION),
    ("aten::_flash_attention_forward", ATTENTION),
    ("aten::_efficient_attention_forward", ATTENTION),
    ("aten::_native_multi_head_attention", ATTENTION),
    # inductor's generated kernels are elementwise whatever ops they fuse ("convolution" here is the bias add)
    ("triton_poi_fused_add_relu_0", ELEMENTWISE),
    ("triton_red_fused_native_layer_norm_1", ELEMENTWISE),
    ("triton_per_fused__softmax_3", ELEMENTWISE),
    ("triton_poi_fused_convolution_0", ELEMENTWISE),
    ("triton_poi_fused__to_copy_4", ELEMENTWISE),
    ("cpp_fused_relu_0", ELEMENTWISE),
    # PyTorch's and cuDNN's elementwise, reduction and normalization kernels, aten's ops
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl(at::TensorIteratorBase&, "
     "at::native::GeluType)::{lambda()#2}::operator()() const::{lambda(c10::Half)#1}, at::detail::Array<char*, 2> "
     ">(int, at::detail::Array<char*, 2>)", ELEMENTWISE),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float, float, float, "
     "float>, unsigned int, float, 4> >(at::native::ReduceOp<float, at::native::MeanOps<float, float, float, float>"
     ", unsigned int, float, 4>)", ELEMENTWISE),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::Half, float>(int, float)",
     ELEMENTWISE),
    ("void cudnn::bn_fw_inf_1C11_kernel_NCHW<__half, float, true, 1>(float, float, cudnnTensorStruct)", ELEMENTWISE),
    ("void cudnn::ops::pooling_fw_4d_kernel<__half, float, cudnn::maxpooling_func<float, (cudnnNanPropagation_t)0>"
     ", (cudnnPoolingMode_t)0, false>(cudnnTensorStruct, __half const*)", ELEMENTWISE),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, at::native::(anonymous "
     "namespace)::SoftMaxForwardEpilogue>(float*, float const*, int)", ELEMENTWISE),
    ("aten::native_layer_norm", ELEMENTWISE),
    ("aten::_native_batch_norm_legit_no_training", ELEMENTWISE),
    ("aten::add", ELEMENTWISE),
    ("aten::add_", ELEMENTWISE),
    ("aten::clamp_min", ELEMENTWISE),
    ("aten::_softmax", ELEMENTWISE),
    ("aten::gelu", ELEMENTWISE),
    ("aten::adaptive_avg_pool2d", ELEMENTWISE),
    # copies and layout changes
    ("Memcpy HtoD (Pageable -> Device)", COPY),
    ("Memcpy DtoD (Device -> Device)", COPY),
    ("Memset (Device)", COPY),
    ("void cudnn::engines_precompiled::nchwToNhwcKernel<__half, __half, float, false, true, "
     "(cudnnKernelDataType_t)0>(cudnn::engines_precompiled::nchw2nhwc_params_t<float>, __half const*, __half*)",
     COPY),
    ("void cudnn::engines_precompiled::nhwcToNchwKernel<__half, __half, float, true, false, "
     "(cudnnKernelDataType_t)0>(cudnn::engines_precompiled::nhwc2nchw_params_t<float>, __half const*, __half*)",
     COPY),
    ("void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::"
     "direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda(float)#1}> >"
     "(int, at::native::gpu_kernel_impl_nocast<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)>)",
     COPY),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<at::native::(anonymous namespace)::OpaqueType<2>"
     ", unsigned int, 4, 64, 64>(...)", COPY),
    ("aten::copy_", COPY),
    ("aten::contiguous", COPY),
    ("aten::t", COPY),
    ("aten::permute", COPY),
    # everything else
    ("void at::native::indexSelectLargeIndex<float, long, unsigned int, 2, 2, -2, true>(at::cuda::detail::"
     "TensorInfo<float, unsigned int>)", OTHER),
    ("aten::empty", OTHER),
    ("aten::embedding", OTHER),
    ("aten::_convert_indices_from_coo_to_csr", OTHER),  # "conv" of "convert" is no convolution
    ("## Call CompiledFxGraph f3psubm37y2kytnuesohrzgjwhyp7aouudmsizjfvapkya3chumv ##", OTHER),
    ("TorchDynamo Cache Lookup", OTHER),
]


@pytest.mark.parametrize(("name", "category"), NAMES, ids=[n[:60] for n, _ in NAMES])
def test_classify_real_names(name: str, category: str) -> None:
    assert classify(name) == category


def hand_made(ms: dict[str, float], calls: int = 1) -> KernelBreakdown:
    """A breakdown with these milliseconds per call per category (through `aggregate`, as the profiler's is)."""
    names = {GEMM: "aten::mm", CONV: "aten::convolution", ATTENTION: "flash_fwd_kernel",
             ELEMENTWISE: "triton_poi_fused_add_0", COPY: "Memset (Device)", OTHER: "aten::empty"}
    return aggregate([(names[c], t * 1e3 * calls, calls) for c, t in ms.items()], calls=calls, device="cuda")


def test_aggregate_per_call_shares_and_top() -> None:
    # two launches of one GEMM per call over 4 calls: 8 ms in all -> 2 ms per call; the layer norm 2 ms per call
    entries = [("aten::mm", 5000.0, 4), ("aten::mm", 3000.0, 4), ("triton_red_fused_native_layer_norm_1", 8000.0, 4),
               ("Memset (Device)", 0.0, 4)]
    b = aggregate(entries, calls=4, device="cuda", top=2)
    assert b.total_ms == pytest.approx(4.0)
    assert b.categories[GEMM] == CategoryTime(ms=2.0, kernels=2.0, share=0.5)
    assert b.categories[ELEMENTWISE] == CategoryTime(ms=2.0, kernels=1.0, share=0.5)
    assert b.categories[COPY] == CategoryTime(ms=0.0, kernels=1.0, share=0.0)
    assert list(b.categories) == list(CATEGORIES)
    # ties are broken by name, so the order is stable
    assert [(k.name, k.ms, k.kernels) for k in b.top] == [("aten::mm", 2.0, 2.0),
                                                          ("triton_red_fused_native_layer_norm_1", 2.0, 1.0)]


def test_aggregate_cuts_long_names_and_handles_nothing() -> None:
    long = "void " + "x" * 500
    b = aggregate([(long, 10.0, 1)], calls=1, device="cuda")
    assert len(b.top[0].name) == TOP_NAME_CHARS and b.top[0].name.endswith("...")
    empty = aggregate([], calls=3, device="cpu")
    assert empty.total_ms == 0 and empty.top == ()
    assert all(c.share == 0 for c in empty.categories.values())
    with pytest.raises(InvalidArgumentError):
        aggregate([], calls=0, device="cpu")


def test_amdahl_bounds_exact() -> None:
    # 10 ms per call: gemm 5 + conv 2 + attention 1 = 8 ms of matmuls, 2 ms of the rest
    b = hand_made({GEMM: 5.0, CONV: 2.0, ATTENTION: 1.0, ELEMENTWISE: 1.5, COPY: 0.5})
    bounds = amdahl_bounds(b, flops_per_call=4e12, peak_tflops=800.0)
    assert bounds["total_ms"] == pytest.approx(10.0)
    assert bounds["matmul_ms"] == pytest.approx(8.0)
    assert bounds["rest_ms"] == pytest.approx(2.0)
    assert bounds["matmul_share"] == pytest.approx(0.8)
    assert bounds["max_speedup_if_matmuls_free"] == pytest.approx(5.0)  # 10 / 2
    assert bounds["max_speedup_if_matmuls_2x"] == pytest.approx(10 / 6)  # 10 / (2 + 8/2)
    assert bounds["matmul_tflops_achieved"] == pytest.approx(500.0)  # 4e12 FLOP in 8 ms
    assert bounds["matmul_at_peak_ms"] == pytest.approx(5.0)  # 4e12 FLOP at 800 TFLOP/s
    assert bounds["max_speedup_at_peak_matmuls"] == pytest.approx(10 / 7)  # 10 / (2 + 5)


def test_amdahl_bounds_without_flops_or_peak() -> None:
    b = hand_made({GEMM: 3.0, ELEMENTWISE: 1.0})
    for flops, peak in ((None, None), (1e9, None), (None, 700.0), (0.0, 700.0)):
        bounds = amdahl_bounds(b, flops, peak)
        assert bounds["max_speedup_if_matmuls_free"] == pytest.approx(4.0)
        assert bounds["max_speedup_if_matmuls_2x"] == pytest.approx(4 / 2.5)
        assert bounds["matmul_at_peak_ms"] is None and bounds["max_speedup_at_peak_matmuls"] is None
    assert amdahl_bounds(b, 1e9, None)["matmul_tflops_achieved"] == pytest.approx(1e9 / 3e-3 / 1e12)
    assert amdahl_bounds(b)["matmul_tflops_achieved"] is None


def test_amdahl_bounds_edge_cases() -> None:
    only_matmuls = amdahl_bounds(hand_made({GEMM: 2.0}), 1e12, 1000.0)
    assert only_matmuls["matmul_share"] == pytest.approx(1.0)
    assert only_matmuls["max_speedup_if_matmuls_free"] is None  # unbounded: nothing else to wait for
    assert only_matmuls["max_speedup_if_matmuls_2x"] == pytest.approx(2.0)
    assert only_matmuls["max_speedup_at_peak_matmuls"] == pytest.approx(2.0)  # 2 ms -> 1 ms at the peak
    no_matmuls = amdahl_bounds(hand_made({ELEMENTWISE: 2.0}), 1e12, 1000.0)
    assert no_matmuls["matmul_share"] == 0
    assert no_matmuls["max_speedup_if_matmuls_free"] == pytest.approx(1.0)
    assert no_matmuls["matmul_tflops_achieved"] is None
    # matmuls already faster than the "peak" (a peak measured low) are kept as they are: the bound stays >= 1
    fast = amdahl_bounds(hand_made({GEMM: 1.0, ELEMENTWISE: 1.0}), 2e12, 1000.0)
    assert fast["matmul_at_peak_ms"] == pytest.approx(2.0)
    assert fast["max_speedup_at_peak_matmuls"] == pytest.approx(1.0)
    nothing = amdahl_bounds(aggregate([], calls=1, device="cpu"), 1e12, 1000.0)
    assert nothing["matmul_share"] is None and nothing["max_speedup_if_matmuls_free"] is None
    assert nothing["max_speedup_if_matmuls_2x"] is None and nothing["max_speedup_at_peak_matmuls"] is None


def test_tables_are_markdown() -> None:
    b = hand_made({GEMM: 3.0, ELEMENTWISE: 1.0})
    lines = breakdown_table(b, amdahl_bounds(b))
    assert lines[0].startswith("| category |") and len(lines[0].split("|")) == len(lines[1].split("|"))
    assert any(line.startswith("| gemm | 3.000 | 75.0% | 1.0 |") for line in lines)
    assert "- max_speedup_if_matmuls_free: 4.000" in lines
    assert "- matmul_at_peak_ms: n/a" in lines
    assert top_table(b)[2].startswith("| `aten::mm` | gemm | 3.000 | 75.0% |")


def test_profile_callable_refuses_bad_arguments() -> None:
    with pytest.raises(InvalidArgumentError):
        profile_callable(lambda: None, calls=1, device="tpu")
    with pytest.raises(InvalidArgumentError):
        profile_callable(lambda: None, calls=0, device="cpu")


def test_profile_callable_on_cuda_without_a_gpu_says_so() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(HardwareUnavailableError):
        profile_callable(lambda: None, calls=1, device="cuda")


def check_breakdown(b: KernelBreakdown, calls: int) -> None:
    assert b.device == "cpu" and b.calls == calls
    assert b.total_ms > 0
    assert math.fsum(c.share for c in b.categories.values()) == pytest.approx(1.0, abs=1e-6)
    assert math.fsum(c.ms for c in b.categories.values()) == pytest.approx(b.total_ms, rel=1e-9)
    assert [k.ms for k in b.top] == sorted((k.ms for k in b.top), reverse=True)
    assert all(k.category in CATEGORIES for k in b.top)
    assert json.loads(json.dumps(b.to_dict()))["categories"].keys() == set(CATEGORIES)


def test_profile_real_models_on_cpu() -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    convnet = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    encoder = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    convnet.eval()
    encoder.eval()
    images, tokens = torch.randn(2, 3, 16, 16), torch.randn(2, 12, 32)

    def convnet_call() -> None:
        with torch.inference_mode():
            convnet(images)

    def encoder_call() -> None:
        with torch.inference_mode():
            encoder(tokens)

    conv = profile_callable(convnet_call, calls=5, device="cpu", warmup=2)
    check_breakdown(conv, 5)
    assert conv.categories[CONV].ms > 0 and conv.categories[CONV].kernels >= 1
    assert conv.categories[GEMM].ms > 0  # the Linear's aten::addmm
    assert conv.categories[ATTENTION].kernels == 0

    enc = profile_callable(encoder_call, calls=5, device="cpu", warmup=2)
    check_breakdown(enc, 5)
    assert enc.categories[GEMM].ms > 0  # the projections and the feed-forward
    # the attention is a fused op (the encoder's inference fast path) or, off the fast path, bmm GEMMs
    assert enc.categories[ATTENTION].kernels > 0 or enc.categories[GEMM].kernels >= 4
    assert enc.categories[ELEMENTWISE].ms > 0  # layer norms, softmax
    assert enc.categories[CONV].kernels == 0

    bounds = amdahl_bounds(enc, flops_per_call=1e6, peak_tflops=1.0)
    assert 0 < (bounds["matmul_share"] or 0) <= 1
    assert (bounds["max_speedup_if_matmuls_2x"] or 0) >= 1
    assert json.dumps(bounds)
