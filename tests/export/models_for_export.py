"""Model factories for export tests (imported by `enginekit export tests/export/models_for_export.py:NAME`)."""

from __future__ import annotations

import torch
from torch import nn


class TinyEncoder(nn.Module):
    """Embedding + 2 transformer encoder layers (LayerNorm, multi-head attention) + mean-pool head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.enc(self.emb(ids), src_key_padding_mask=mask == 0)
        return self.head(h.mean(1))


def encoder() -> nn.Module:
    torch.manual_seed(0)
    return TinyEncoder()


class Branchy(nn.Module):
    """Data-dependent control flow: tracing records one branch as a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0.5:
            return x * 2
        return x - 1


def branchy() -> nn.Module:
    return Branchy()


def convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 2)
        self.b = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.a(x), "boxes": self.b(x)}


def two_heads() -> nn.Module:
    torch.manual_seed(0)
    return TwoHeads()


def not_a_module() -> int:
    return 3
