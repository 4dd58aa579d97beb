"""Tiny PyTorch models for the torch / inductor / aoti backend tests (factories: ``torch_models.py:NAME``)."""

from __future__ import annotations

import torch
from torch import nn


def convnet() -> nn.Module:
    """x[batch,3,16,16] -> logits[batch,10]: conv, batch norm, relu, strided conv, pooling, linear."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    with torch.no_grad():  # non-trivial batch-norm statistics
        bn = model[1]
        assert isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None and bn.running_var is not None
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


class TinyEncoder(nn.Module):
    """x[batch,seq,24] -> {"tokens": [batch,seq,24], "pooled": [batch,24]} through one encoder layer.

    Three heads (an odd count) keep nn.TransformerEncoderLayer off its fused inference fast path, so that
    the compilers see (and fuse) the attention, layer norms and feed-forward themselves.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.layer = nn.TransformerEncoderLayer(24, 3, 48, dropout=0.0, batch_first=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.layer(x)
        return {"tokens": y, "pooled": y.mean(dim=1)}


def encoder() -> nn.Module:
    return TinyEncoder().eval()


def mlp() -> nn.Module:
    """x[batch,8] -> [batch,4]: the cheapest model to compile, for recompilation tests."""
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


class Branchy(nn.Module):
    """A data-dependent Python branch: dynamo breaks the graph at ``.item()``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if float(h.sum().item()) > 0:
            h = h.relu()
        out: torch.Tensor = self.b(h)
        return out


def branchy() -> nn.Module:
    return Branchy().eval()


class FastPathEncoder(nn.Module):
    """ids-free encoder x[batch,seq,32] -> [batch,seq,32]: two nn.TransformerEncoderLayer (4 heads, an even count,
    so eager PyTorch takes its fused fast path), between two linears; every width a multiple of 16 (FP8 matmuls)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu", batch_first=True)
        self.inp = nn.Linear(32, 32)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.encoder(self.inp(x)))


def fast_path_encoder() -> nn.Module:
    return FastPathEncoder().eval()


def overflowing_mlp() -> nn.Module:
    """x[batch,8] -> [batch,4] whose activations pass 65504 (fp16's largest) and return to a small scale:
    exact in fp32, inf/NaN in fp16."""
    torch.manual_seed(3)

    class Overflow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            big = self.fc(x) * 1e5 + 1e5
            return big / (big.abs().amax(dim=1, keepdim=True) + 1.0)

    return Overflow().eval()
