"""A small ResNet-style CNN in plain torch: conv stem, batch norm, max pool, two basic
blocks (one strided, with a 1x1 projection shortcut), adaptive average pool, linear head.

`make()` returns (model, example_inputs): a seeded model in eval mode with random
weights and non-trivial batch-norm running statistics, and a batch of small images.
It exercises the op families of issue 17: convolution (lowered as an implicit GEMM
on the matmul path), inference batch norm (elementwise, fused into the conv
epilogue), max and adaptive average pooling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ResNetConfig:
    channels: int = 8
    classes: int = 10
    image: int = 16
    batch: int = 2


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNetStyle(nn.Module):
    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        c = cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.layer1 = BasicBlock(c, c, 1)
        self.layer2 = BasicBlock(c, 2 * c, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * c, cfg.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def make(cfg: ResNetConfig | None = None):
    cfg = cfg or ResNetConfig()
    torch.manual_seed(0)
    model = ResNetStyle(cfg)
    with torch.no_grad():  # running statistics as a trained model would have them
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    images = torch.randn(cfg.batch, 3, cfg.image, cfg.image)
    return model.eval(), (images,)
