"""8-bit linear layers for the PyTorch-native backends (``linear=fp8`` / ``linear=int8``, ``BackendSettings.linear``).

Every ``nn.Linear`` whose weight is in the compute dtype and whose in/out features are multiples of 16 is replaced:

* ``fp8`` (:class:`Fp8Linear`, bf16 only): the weight is quantized once to ``float8_e4m3fn`` with one scale per
  output channel (amax / 448), each call quantizes the activations per row the same way, then
  ``torch._scaled_mm`` runs with both row-wise scales and the bias in its epilogue and writes bf16 (what torchao's
  dynamic FP8 quantization does).
* ``int8`` (:class:`Int8Linear`, any float compute dtype): symmetric int8 weights per output channel (amax / 127),
  activations per row, ``torch._int_mm`` (int32 accumulation; cuBLASLt's IMMA kernels on CUDA), then one
  dequantizing multiply by both scales, plus the bias, in the compute dtype (W8A8 dynamic quantization, as in
  torchao's ``int8_dynamic_activation_int8_weight``).

Under torch.compile, inductor fuses each activation quantization (row amax, scale, round, cast) into one kernel ahead
of the matmul, and the dequantization into the kernel after it (with the bias and a following activation).

Self-attention (``nn.MultiheadAttention`` called as ``attn(x, x, x, need_weights=False)``, which is how
``nn.TransformerEncoderLayer`` calls it) is replaced by :class:`QuantSelfAttention`: its packed input projection and
its output projection become quantized linears around ``F.scaled_dot_product_attention``, so that the attention
projections (a third of a BERT layer's matmul FLOPs) run in 8 bits too. Any other call (cross-attention, attention
weights asked for, unbatched input) runs the original module unchanged, which the replacement keeps. Modules of
``nn.TransformerEncoderLayer`` / ``DecoderLayer`` holding a replaced layer get a no-op forward pre-hook, which
turns off their fused "fast path" (it reads ``linear1.weight`` directly and would skip the 8-bit layers), and an
``nn.TransformerEncoder`` holding one stops converting padded batches to nested tensors (``use_nested_tensor``).

Not replaced: linears kept in FP32 by a precision plan (their dtype differs), and shapes the matmuls refuse.

8-bit formats keep few mantissa bits: the outputs of a model with quantized layers are judged with the tolerance of
8-bit quantization (:mod:`enginekit.compare.per_precision`), and like every candidate, they win only if they pass.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from enginekit.errors import HardwareUnavailableError, InvalidArgumentError

E4M3_MAX = 448.0
INT8_MAX = 127.0
_ALIGN = 16
_INT_MM_MIN_ROWS = 17  # cuBLASLt's int8 matmul in torch._int_mm needs more than 16 rows
KINDS = ("fp8", "int8")


def _torch() -> Any:
    import torch

    return torch


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
        return f"torch._scaled_mm with row-wise scales fails on {device}: {_first_line(exc)}"
    return None


@functools.cache
def int8_supported(device: str) -> str | None:
    """None when ``torch._int_mm`` runs on ``device`` here; else why not (probed once per device)."""
    torch = _torch()
    if not hasattr(torch, "_int_mm"):
        return f"torch {torch.__version__} has no _int_mm"
    try:
        a = torch.ones(32, 16, device=device, dtype=torch.int8)
        b = torch.ones(16, 16, device=device, dtype=torch.int8)
        torch._int_mm(a, b.t().contiguous().t())
    except (RuntimeError, NotImplementedError) as exc:
        return f"torch._int_mm fails on {device}: {_first_line(exc)}"
    return None


class _QuantLinear(_torch().nn.Module):  # type: ignore[misc]
    """Common part: shapes, bias, output dtype, and ``forward`` over the last dimension."""

    kind = ""
    fuses_bias = False  # _matmul adds the bias itself (in the matmul's epilogue)

    def __init__(self, linear: Any) -> None:
        super().__init__()
        self.out_features, self.in_features = int(linear.out_features), int(linear.in_features)
        self.out_dtype = linear.weight.dtype
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().to(self.out_dtype))

    def forward(self, x: Any) -> Any:
        lead = x.shape[:-1]
        y = self._matmul(x.reshape(-1, self.in_features))
        if self.bias is not None and not self.fuses_bias:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def _matmul(self, x2: Any) -> Any:
        raise NotImplementedError

    @property
    def weight(self) -> Any:
        """The dequantized weight [out, in] in the compute dtype, for code that reads ``layer.weight`` itself (its
        dtype, or ``F.linear(x, layer.weight)``): right, but not 8-bit."""
        return (self._quantized_weight().float() * self.weight_scale.t()).to(self.out_dtype)

    def _quantized_weight(self) -> Any:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind}"


class Fp8Linear(_QuantLinear):
    """``y = x @ W.T + b`` with x and W in FP8 e4m3, row-wise scales, output in bf16."""

    kind = "fp8=e4m3 row-wise"
    fuses_bias = True

    def __init__(self, linear: Any) -> None:
        super().__init__(linear)
        torch = _torch()
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1, keepdim=True) / E4M3_MAX).clamp(min=1e-12)
        self.register_buffer("weight_fp8", (w / scale).to(torch.float8_e4m3fn))  # [out, in], row-major
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out], float32

    def _matmul(self, x2: Any) -> Any:
        torch = _torch()
        scale = (x2.abs().amax(dim=1, keepdim=True).float() / E4M3_MAX).clamp(min=1e-12)
        xq = (x2.float() / scale).to(torch.float8_e4m3fn)
        return torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale,
                                bias=self.bias, out_dtype=self.out_dtype)

    def _quantized_weight(self) -> Any:
        return self.weight_fp8


class Int8Linear(_QuantLinear):
    """``y = x @ W.T + b`` with x and W in symmetric int8 (row-wise and per-output-channel scales), int32
    accumulation, output in the compute dtype."""

    kind = "int8 row-wise"

    def __init__(self, linear: Any) -> None:
        super().__init__(linear)
        torch = _torch()
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1, keepdim=True) / INT8_MAX).clamp(min=1e-12)
        self.register_buffer("weight_int8", (w / scale).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8))
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out], float32

    def _matmul(self, x2: Any) -> Any:
        torch = _torch()
        rows = x2.shape[0]
        xf = x2.float()
        scale = (xf.abs().amax(dim=1, keepdim=True) / INT8_MAX).clamp(min=1e-12)
        xq = (xf / scale).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
        if rows < _INT_MM_MIN_ROWS:  # static under torch.compile (one graph per input shape)
            acc = torch._int_mm(torch.nn.functional.pad(xq, (0, 0, 0, _INT_MM_MIN_ROWS - rows)),
                                self.weight_int8.t())[:rows]
        else:
            acc = torch._int_mm(xq, self.weight_int8.t())  # [rows, out] int32
        # one multiply by the outer product of the scales, not (acc * x_scale) * w_scale: on CPU with freezing,
        # inductor rewrites that form into oneDNN's qlinear (the smooth-quant _int_mm pattern), whose results were
        # wrong here for row-wise activation scales (torch 2.13, checked by tests/backends/test_torch_quant.py)
        return (acc.float() * (scale * self.weight_scale)).to(self.out_dtype)

    def _quantized_weight(self) -> Any:
        return self.weight_int8


_LINEARS: dict[str, type[_QuantLinear]] = {"fp8": Fp8Linear, "int8": Int8Linear}


class QuantSelfAttention(_torch().nn.Module):  # type: ignore[misc]
    """``nn.MultiheadAttention`` for self-attention with its two projections quantized; other calls run the original.

    The attributes TransformerEncoder(Layer) reads to decide on its fused path (``batch_first``, ``num_heads``,
    ``in_proj_weight``, ``out_proj`` ...) are the original module's, so whatever reads them computes the original,
    unquantized attention: right, only not faster (:func:`swap_quantized_linears` turns those paths off).
    Calls it does not take run the original: attention weights asked for, cross-attention, unbatched input, and
    ``is_causal`` without an ``attn_mask`` (which MultiheadAttention refuses or ignores depending on its path).
    """

    def __init__(self, mha: Any, kind: str) -> None:
        super().__init__()
        torch = _torch()
        self.original = mha
        self.num_heads, self.embed_dim, self.batch_first = mha.num_heads, mha.embed_dim, mha.batch_first
        self.head_dim = mha.head_dim
        e = mha.embed_dim
        packed = torch.nn.Linear(e, 3 * e, bias=mha.in_proj_bias is not None, device=mha.in_proj_weight.device,
                                 dtype=mha.in_proj_weight.dtype)
        with torch.no_grad():
            packed.weight.copy_(mha.in_proj_weight)
            if mha.in_proj_bias is not None:
                packed.bias.copy_(mha.in_proj_bias)
        self.q_in_proj = _LINEARS[kind](packed)
        self.q_out_proj = _LINEARS[kind](mha.out_proj)

    # what TransformerEncoder(Layer).forward reads before choosing its fused path: the original's
    @property
    def _qkv_same_embed_dim(self) -> bool:
        return bool(self.original._qkv_same_embed_dim)

    @property
    def in_proj_weight(self) -> Any:
        return self.original.in_proj_weight

    @property
    def in_proj_bias(self) -> Any:
        return self.original.in_proj_bias

    @property
    def out_proj(self) -> Any:
        return self.original.out_proj

    def forward(self, query: Any, key: Any, value: Any, key_padding_mask: Any = None, need_weights: bool = True,
                attn_mask: Any = None, average_attn_weights: bool = True, is_causal: bool = False) -> Any:
        if (need_weights or query is not key or key is not value or query.dim() != 3
                or (is_causal and attn_mask is None)):  # the hint without its mask: the original's to judge
            return self.original(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                 attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
        torch = _torch()
        x = query if self.batch_first else query.transpose(0, 1)
        n, length, e = x.shape
        qkv = self.q_in_proj(x).view(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [n, heads, length, head_dim]
        causal = is_causal and key_padding_mask is None  # MultiheadAttention: the mask is then only a hint
        mask = None if causal else _additive_mask(attn_mask, key_padding_mask, n, self.num_heads, q.dtype)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        out = self.q_out_proj(out.transpose(1, 2).reshape(n, length, e))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _additive_mask(attn_mask: Any, key_padding_mask: Any, n: int, heads: int, dtype: Any) -> Any:
    """MultiheadAttention's masks (bool: True = not attended; float: added) as one additive mask for SDPA."""
    torch = _torch()

    def additive(m: Any) -> Any:
        if m.dtype == torch.bool:
            return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf"))
        return m.to(dtype)

    mask = None
    if attn_mask is not None:
        m = additive(attn_mask)
        mask = m.view(n, heads, *m.shape[-2:]) if m.dim() == 3 else m
    if key_padding_mask is not None:
        pad = additive(key_padding_mask).view(n, 1, 1, -1)
        mask = pad if mask is None else mask + pad
    return mask


def _noop_pre_hook(module: Any, args: Any) -> None:
    return None


def _fast_path_layers() -> tuple[type[Any], ...]:
    nn = _torch().nn
    return (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def has_transformer_layers(module: Any) -> bool:
    """Whether ``module`` holds an ``nn.TransformerEncoderLayer`` / ``DecoderLayer`` (a fast path to turn off)."""
    return any(isinstance(m, _fast_path_layers()) for m in module.modules())


def turn_off_transformer_fast_path(module: Any, within: Sequence[str] | None = None) -> int:
    """Turn off the fused inference "fast paths" of ``nn.TransformerEncoderLayer`` / ``DecoderLayer`` (a no-op
    forward pre-hook, which those layers check) and ``nn.TransformerEncoder``'s nested-tensor path, in the modules
    holding one of the qualified names ``within`` (every one when None); how many layers were changed.

    The fast path runs a whole layer as one native op (``torch._transformer_encoder_layer_fwd``) that reads the
    layers' weights directly (so it would skip replaced linears) and that torch.compile cannot look into: with it
    off, inductor sees the layer's ops and can fuse the residual adds, layer norms and activations around the
    matmuls (``fastpath=off``). The layers are changed in place, this model only; no process-wide flag is set.
    """
    nn = _torch().nn

    def holds(name: str) -> bool:
        if within is None:
            return True
        return any(s.startswith(name + ".") for s in within) if name else bool(within)

    layers = 0
    for name, child in module.named_modules():
        if isinstance(child, _fast_path_layers()) and holds(name):
            child.register_forward_pre_hook(_noop_pre_hook)
            layers += 1
        if isinstance(child, nn.TransformerEncoder) and holds(name):
            # its own fused path (nested tensors, taken with a src_key_padding_mask) reads linear1.weight and
            # feeds nested tensors to the layers; hooks do not turn it off
            child.use_nested_tensor = False
    return layers


def _eligible(linear: Any, dtype: Any) -> bool:
    return bool(linear.weight.dtype is dtype and not linear.in_features % _ALIGN and not linear.out_features % _ALIGN)


def swap_quantized_linears(module: Any, kind: str, device: str, dtype: Any) -> list[str]:
    """Replace the eligible linears and self-attentions of ``module`` (in place) by their ``kind`` (fp8, int8)
    versions; the qualified names of the replaced modules.

    HardwareUnavailableError when the matmuls cannot run on ``device``; InvalidArgumentError when the compute
    dtype does not fit (fp8: bf16 only) or no layer is eligible (the option would change nothing).
    """
    torch = _torch()
    nn = torch.nn
    if kind not in _LINEARS:
        raise InvalidArgumentError(f"linear={kind}: choose one of {', '.join(KINDS)}.")
    if kind == "fp8" and dtype is not torch.bfloat16:
        raise InvalidArgumentError("linear=fp8 runs at precision bf16 (the row-wise FP8 matmul writes bf16); "
                                   "use it with :bf16.")
    why = fp8_supported(device) if kind == "fp8" else int8_supported(device)
    if why is not None:
        raise HardwareUnavailableError(f"linear={kind}: {why}.")

    def replace_child(name: str, new: Any) -> None:
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, new)

    swapped: list[str] = []
    for name, child in list(module.named_modules()):
        if (isinstance(child, nn.MultiheadAttention) and name and child._qkv_same_embed_dim
                and child.bias_k is None and not child.add_zero_attn and child.in_proj_weight.dtype is dtype
                and not child.embed_dim % _ALIGN):
            replace_child(name, QuantSelfAttention(child, kind))
            swapped.append(name)
    inside_mha = {id(m) for mha in module.modules() if isinstance(mha, nn.MultiheadAttention) for m in mha.modules()}
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.Linear) and id(child) not in inside_mha and _eligible(child, dtype):
            replace_child(name, _LINEARS[kind](child))
            swapped.append(name)
    if not swapped:
        raise InvalidArgumentError(f"linear={kind}: the model has no nn.Linear layer that {kind.upper()} matmuls can "
                                   "take (weights in the compute dtype, in/out features multiples of 16).")
    turn_off_transformer_fast_path(module, within=swapped)
    return swapped


def quantizable_layers(module: Any) -> bool:
    """Whether ``module`` holds a layer that ``swap_quantized_linears`` would replace (at the weights' own dtype):
    the configuration search offers 8-bit candidates only then."""
    nn = _torch().nn
    for child in module.modules():
        if isinstance(child, nn.MultiheadAttention) and child._qkv_same_embed_dim and not child.embed_dim % _ALIGN:
            return True
        if isinstance(child, nn.Linear) and _eligible(child, child.weight.dtype):
            return True
    return False
