"""The digits CNN architecture. Imports torch at module level: import this module lazily."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Small CNN for 8x8 grayscale digits: input [batch, 1, 8, 8] in [0, 1], output logits [batch, 10].

    Only static-shape ops (Conv, Relu, MaxPool, GlobalAveragePool, Flatten, Gemm) so the exported
    ONNX graph has no data-dependent shapes and builds on every backend, TensorRT included.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.features(x)
        logits: torch.Tensor = self.classifier(features)
        return logits
