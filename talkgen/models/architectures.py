"""The sample models' architectures (small enough to train on a laptop CPU in seconds)."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two 3x3 conv layers and two linear layers for 8x8 grey digits.

    (B, 1, 8, 8) -conv1-> (B, 16, 8, 8) -conv2-> (B, 32, 8, 8) -pool-> (B, 32, 4, 4)
    -fc1-> (B, 64) -fc2-> (B, 10) logits.
    """

    def __init__(self, width: int = 16, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(2 * width * 4 * 4, 64)
        self.fc2 = nn.Linear(64, n_classes)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x))                # (B, W, 8, 8)
        h = self.pool(self.act(self.conv2(h)))     # (B, 2W, 4, 4)
        h = self.act(self.fc1(h.flatten(1)))       # (B, 64)
        return self.fc2(h)                         # (B, 10)


def digits_cnn() -> DigitsCNN:
    """Factory used by the ``digits-cnn`` sample (``talkgen.models.architectures:digits_cnn``)."""
    return DigitsCNN()
