"""Model factories for the GPU benchmarks (random weights; nothing is downloaded).

Used as enginekit PyTorch sources, e.g. ``benchmarks/models.py:resnet50``.
"""

from __future__ import annotations

import torch
from torch import nn


def resnet50() -> nn.Module:
    """torchvision's ResNet-50 (needs torchvision, which the GPU machines have), random weights with
    BatchNorm statistics recalibrated on random images, so that activations have the scale of a trained
    network instead of growing through 50 un-normalized layers (which would overflow fp16)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    return recalibrate_batchnorm(model, (8, 3, 224, 224))


def recalibrate_batchnorm(model: nn.Module, shape: tuple[int, ...], steps: int = 4) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(shape))
    return model.eval()


class BertBaseEncoder(nn.Module):
    """A BERT-base-shaped encoder: 12 layers, hidden 768, 12 heads, FFN 3072, GELU, post-LayerNorm,
    over token embeddings (vocabulary 30522) with learned positions, and a pooled 2-class head."""

    def __init__(self, vocab: int = 30522, hidden: int = 768, layers: int = 12, heads: int = 12,
                 ffn: int = 3072, max_len: int = 512) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(max_len, hidden)
        self.norm = nn.LayerNorm(hidden)
        layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(hidden, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        h = self.norm(self.tokens(ids) + self.positions(pos)[None])
        return self.head(self.encoder(h)[:, 0])


def bert_base() -> nn.Module:
    torch.manual_seed(0)
    return BertBaseEncoder()


def tiny_convnet() -> nn.Module:
    """For a quick CPU check of the benchmark script."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))
