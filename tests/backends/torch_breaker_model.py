"""A PyTorch model that float16 breaks, for precision-plan tests (factory: ``torch_breaker_model.py:breaker``)."""

from __future__ import annotations

import torch
from torch import nn


class Energy(nn.Module):
    """L2 norm of activations scaled by 1e3: its squares (~1e5 to 1e6) are beyond fp16's 65504, so it gives inf in
    float16 while its output (about 1) is fine in any precision."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x) * 1000.0
        return torch.sqrt((h * h).sum(-1, keepdim=True)) / 1000.0


class Breaker(nn.Module):
    """x[batch,8] -> [batch,3]: a linear + relu block, the Energy block, a linear head and a residual."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.energy = Energy()
        self.head = nn.Linear(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.energy(self.pre(x))) + x[:, :3]


def breaker() -> nn.Module:
    return Breaker().eval()


class Renamed(nn.Module):
    """Breaker's layers under other names: a plan made on Breaker's export does not fit it."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.power = Energy()
        self.head = nn.Linear(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.power(self.pre(x))) + x[:, :3]


def renamed() -> nn.Module:
    return Renamed().eval()
