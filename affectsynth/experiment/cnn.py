"""The experiment's network and training loop: a small CNN in pure torch, trained on CPU.

    net = train_network(images, targets, outputs, TrainSettings(steps=200), generator, classic=False)
    scores = predict(net, test_images)                  # [N, outputs]

Images are [N, 3, S, S] uint8 tensors. Targets are class indices [N] int64 (cross-entropy) or
valence-arousal [N, 2] float32 in [-1, 1] (mean squared error on a tanh head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["SmallCNN", "TrainSettings", "train_network", "predict", "classic_augment"]


class SmallCNN(nn.Module):
    """Four conv blocks (16-32-64-128 channels; each a stride-2 and a stride-1 3x3 conv with batch norm and
    ReLU), global average pooling, dropout and a linear head: [B, 3, S, S] float in [0, 1] -> [B, outputs].
    0.29 M parameters, ~40 M multiply-adds per 112² image, so dozens of runs fit in minutes on a CPU."""

    def __init__(self, outputs: int, bounded: bool = False):
        super().__init__()
        blocks, channels = [], 3
        for width in (16, 32, 64, 128):
            blocks += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3))
        self.head = nn.Linear(channels, outputs)
        self.bounded = bounded  # VA lies in [-1, 1]: a tanh head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Per-image standardisation: the photos come from different cameras, lighting and datasets.
        flat = images.flatten(1)
        images = (images - flat.mean(1)[:, None, None, None]) / (flat.std(1)[:, None, None, None] + 1e-3)
        out = self.head(self.features(images))
        return torch.tanh(out) if self.bounded else out


def classic_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The control's augmentation of a batch [B, 3, S, S] float in [0, 1]: horizontal flip (p 0.5), a random
    crop (scale 0.8-1 of the side, anywhere inside, resized back) and colour jitter (brightness, contrast and
    saturation each x U(0.8, 1.2)). Same shape and range out."""
    b = images.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, *shape, generator=generator)

    flip = torch.rand(b, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    scale = uniform(0.8, 1.0)
    shift = (1 - scale)[:, None] * uniform(-1.0, 1.0, 2)  # the crop stays inside the image
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    images = nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    images = images * uniform(0.8, 1.2, 1, 1, 1)
    mean = images.mean((1, 2, 3), keepdim=True)
    images = mean + (images - mean) * uniform(0.8, 1.2, 1, 1, 1)
    gray = images.mean(1, keepdim=True)
    images = gray + (images - gray) * uniform(0.8, 1.2, 1, 1, 1)
    return images.clamp(0.0, 1.0)


@dataclass(frozen=True)
class TrainSettings:
    """``steps`` optimiser steps of ``batch_size`` images (Adam, ``learning_rate``, ``weight_decay``)."""

    steps: int
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4


def train_network(images: torch.Tensor, targets: torch.Tensor, outputs: int, settings: TrainSettings,
                  generator: torch.Generator, classic: bool = False) -> SmallCNN:
    """A :class:`SmallCNN` with ``outputs`` outputs trained on ``images`` [N, 3, S, S] uint8 and ``targets``
    ([N] int64 class indices, or [N, 2] float VA); initial weights, batches and dropout drawn from
    ``generator``; ``classic`` applies :func:`classic_augment` to each batch. Returned in eval mode."""
    regression = targets.is_floating_point()
    # Weights and dropout use torch's global RNG: seed it from the run's generator, and restore it after.
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))
        net = SmallCNN(outputs, bounded=regression)
        optimizer = torch.optim.Adam(net.parameters(), settings.learning_rate, weight_decay=settings.weight_decay)
        net.train()
        order = torch.empty(0, dtype=torch.int64)
        for _ in range(settings.steps):
            if len(order) < settings.batch_size:  # epochs of fresh permutations, batches across their seams
                order = torch.cat([order, torch.randperm(len(images), generator=generator)])
            batch, order = order[:settings.batch_size], order[settings.batch_size:]
            x = images[batch].float() / 255
            if classic:
                x = classic_augment(x, generator)
            out = net(x)
            loss = (nn.functional.mse_loss(out, targets[batch]) if regression
                    else nn.functional.cross_entropy(out, targets[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


@torch.no_grad()
def predict(net: SmallCNN, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The network's outputs [N, outputs] for ``images`` [N, 3, S, S] uint8."""
    return torch.cat([net(images[i:i + batch_size].float() / 255) for i in range(0, len(images), batch_size)])
