"""FP8 linear layers for the PyTorch-native backends (``linear=fp8``, ``BackendSettings.fp8_linear``).

Every ``nn.Linear`` whose weight is in the compute dtype (bf16) and whose in/out features are multiples of 16 is
replaced by :class:`Fp8Linear`: its weight is quantized once to ``float8_e4m3fn`` with one scale per output
channel (amax / 448), and each call quantizes the activations per row the same way, then runs
``torch._scaled_mm`` with both row-wise scales, writing bf16. Under torch.compile, inductor fuses the activation
quantization (row amax, scale, cast) into one kernel ahead of the FP8 matmul: this is what torchao's dynamic FP8
quantization does, without the dependency.

Not replaced: linears inside ``nn.MultiheadAttention`` (it reads ``out_proj.weight`` itself, and its input
projection is not a module), linears kept in FP32 by a precision plan, and shapes ``_scaled_mm`` refuses.
Modules of ``nn.TransformerEncoderLayer`` / ``DecoderLayer`` holding a replaced linear get a no-op forward
pre-hook, which turns off their fused "fast path" (it reads ``linear1.weight`` directly and would skip the FP8
layers).

FP8 e4m3 keeps 3 mantissa bits: the outputs of a model with FP8 layers are judged with the tolerance of 8-bit
quantization (:mod:`enginekit.compare.per_precision`), and like every candidate, they win only if they pass.
"""

from __future__ import annotations

import functools
from typing import Any

from enginekit.errors import HardwareUnavailableError, InvalidArgumentError

E4M3_MAX = 448.0
_ALIGN = 16


def _torch() -> Any:
    import torch

    return torch


@functools.cache
def fp8_supported(device: str) -> str | None:
    """None when ``torch._scaled_mm`` runs row-wise FP8 on ``device`` here; else why not (probed once per device)."""
    torch = _torch()
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return f"torch {torch.__version__} has no float8_e4m3fn / _scaled_mm"
    if device == "cuda" and (capability := torch.cuda.get_device_capability()) < (8, 9):
        return f"FP8 matmuls need compute capability 8.9 or newer (this GPU: {capability[0]}.{capability[1]})"
    try:
        a = torch.ones(16, 16, device=device).to(torch.float8_e4m3fn)
        b = torch.ones(16, 16, device=device).to(torch.float8_e4m3fn)
        scale_a = torch.ones(16, 1, device=device)
        scale_b = torch.ones(1, 16, device=device)
        torch._scaled_mm(a, b.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"torch._scaled_mm with row-wise scales fails on {device}: {first}"
    return None


class Fp8Linear(_torch().nn.Module):  # type: ignore[misc]
    """``y = x @ W.T + b`` with x and W in FP8 e4m3, row-wise scales, output in bf16."""

    def __init__(self, linear: Any) -> None:
        super().__init__()
        torch = _torch()
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1, keepdim=True) / E4M3_MAX).clamp(min=1e-12)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.out_dtype = linear.weight.dtype
        self.register_buffer("weight_fp8", (w / scale).to(torch.float8_e4m3fn))  # [out, in], row-major
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out], float32
        bias = None if linear.bias is None else linear.bias.detach().to(self.out_dtype)
        self.register_buffer("bias", bias)

    def forward(self, x: Any) -> Any:
        torch = _torch()
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        scale = (x2.abs().amax(dim=1, keepdim=True).float() / E4M3_MAX).clamp(min=1e-12)
        xq = (x2.float() / scale).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale,
                             out_dtype=self.out_dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3 row-wise"


def _noop_pre_hook(module: Any, args: Any) -> None:
    return None


def swap_fp8_linears(module: Any, device: str, dtype: Any) -> list[str]:
    """Replace the eligible linears of ``module`` (in place) by :class:`Fp8Linear`; their qualified names.

    HardwareUnavailableError when FP8 matmuls cannot run on ``device``; InvalidArgumentError when the compute
    dtype is not bf16 or no linear is eligible (the option would change nothing).
    """
    torch = _torch()
    if dtype is not torch.bfloat16:
        raise InvalidArgumentError("linear=fp8 runs at precision bf16 (the row-wise FP8 matmul writes bf16); "
                                   "use it with :bf16.")
    why = fp8_supported(device)
    if why is not None:
        raise HardwareUnavailableError(f"linear=fp8: {why}.")
    nn = torch.nn
    inside_mha = {id(m) for mha in module.modules() if isinstance(mha, nn.MultiheadAttention)
                  for m in mha.modules()}
    swapped: list[str] = []
    for name, child in list(module.named_modules()):
        if (not isinstance(child, nn.Linear) or id(child) in inside_mha or child.weight.dtype is not dtype
                or child.in_features % _ALIGN or child.out_features % _ALIGN):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, Fp8Linear(child))
        swapped.append(name)
    if not swapped:
        raise InvalidArgumentError("linear=fp8: the model has no nn.Linear layer that FP8 matmuls can take "
                                   "(bf16 weights, in/out features multiples of 16, outside MultiheadAttention).")
    fast_path_layers = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
    for name, child in module.named_modules():
        if isinstance(child, fast_path_layers) and any(s.startswith(name + ".") for s in swapped):
            child.register_forward_pre_hook(_noop_pre_hook)
    return swapped
