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


class SignBranch(nn.Module):
    """Branches on the sign of the input: uniform [0, 1) feeds always take the first branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


def sign_branch() -> nn.Module:
    return SignBranch()


class RareBranch(nn.Module):
    """A branch no verification feed reaches: only the tracer's warning tells it was baked in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().max() > 1e6:
            return x * 0
        return x + 1


def rare_branch() -> nn.Module:
    return RareBranch()


class PythonNumber(nn.Module):
    """Takes a tensor out as a Python float: tracing records the traced input's maximum as a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(x.abs().max())
        return x / scale


def python_number() -> nn.Module:
    return PythonNumber()


class ShapeChecks(nn.Module):
    """Python values from shapes only (an assert, a reshape): the tracer warns, the trace is still right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 8, "expects 8 features"
        return x.reshape(x.shape[0], 2, 4).sum(-1)


def shape_checks() -> nn.Module:
    return ShapeChecks()


class LogOfInput(nn.Module):
    """Defined for positive inputs only: negated feeds give NaN in the source and the ONNX model alike."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x) + 1


def log_of_input() -> nn.Module:
    return LogOfInput()


class Passthrough(nn.Module):
    """Returns its input and one tensor twice: outputs that need their own tensors to be renamed."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = torch.relu(x)
        return x, y, y


def passthrough() -> nn.Module:
    return Passthrough()


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
