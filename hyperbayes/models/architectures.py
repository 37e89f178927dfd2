"""Plain ``torch.nn`` architectures of the experiments (LeNet-5, Gal et al.'s active-learning CNN).

Nothing in them is specific to hyperbayes: they are what a user would write, and every method
runs on them by passing the module where an MLP's sizes would go
(``hb.methods.setup(name, "classification", LeNet5(), prior, likelihood)``), which wraps it as a
:class:`~hyperbayes.models.TorchNet`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LeNet5", "GalCNN"]


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling: conv 5×5×6 (padding 2), pool,
    conv 5×5×16, pool, fc 120, fc 84, fc ``classes`` (61,706 parameters on 28×28 images).

    Args:
        in_channels, image_size: inputs are (N, in_channels, image_size, image_size).
        classes: number of outputs.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, classes: int = 10):
        super().__init__()
        side = (image_size // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNet-5 needs images of at least 12×12 pixels, got {image_size}")
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for images (N, C, H, W)."""
        h = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        h = nn.functional.max_pool2d(torch.relu(self.conv2(h)), 2)
        h = torch.relu(self.fc1(h.flatten(1)))
        return self.fc3(torch.relu(self.fc2(h)))


class GalCNN(nn.Module):
    """The CNN of Gal, Islam & Ghahramani (2017) for MNIST active learning: conv 4×4×32, ReLU,
    conv 4×4×32, ReLU, max-pool 2, dense 128, ReLU, dense ``classes`` (513,994 parameters on
    28×28 images). Its dropout layers are left to the method (MC dropout puts p = 0.5 before
    the last dense layer, as the paper does), so that every method trains the same net.
    """

    def __init__(self, classes: int = 10, image_size: int = 28):
        super().__init__()
        side = (image_size - 6) // 2
        self.features = nn.Sequential(nn.Conv2d(1, 32, 4), nn.ReLU(), nn.Conv2d(32, 32, 4),
                                      nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * side * side, 128),
                                        nn.ReLU(), nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for images (N, 1, H, W) or flattened (N, H·W)."""
        if x.dim() == 2:
            side = math.isqrt(x.shape[1])
            x = x.reshape(-1, 1, side, side)
        return self.classifier(self.features(x))
