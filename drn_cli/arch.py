"""The DRN network: primal (LR -> HR) and dual (HR -> LR) models.

The module tree and parameter names follow the official implementation (model/drn.py of
github.com/guoyongcs/DRN) exactly, so an official ``state_dict`` loads with ``strict=True``.
The code itself is ours.

Data flow of the primal network for scale ``s = 2**phases``::

    LR --bicubic x s--> sub_mean --> head --> down[0] --> ... --> down[phases-1]
                                      |copy0     |copy1                 |
    tail[0] (lowest scale output)  <--------------------------------- x
    up_blocks[i]: n_blocks RCABs, 2x pixel-shuffle, 1x1 conv; concat with copy; tail[i+1]

so there is one output per scale level, the first at the LR size and the last at ``s`` times it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

#: The official code's mean-shift initialisation (DIV2K RGB mean, rgb_range 255).
RGB_MEAN = (0.4488, 0.4371, 0.4040)
RGB_RANGE = 255.0
#: LeakyReLU slope of the down-sampling blocks (the official ``negval``).
NEGATIVE_SLOPE = 0.2
#: Channel-attention reduction of every RCAB.
CA_REDUCTION = 16
SUPPORTED_SCALES = (2, 4, 8)


@dataclass(frozen=True)
class DRNConfig:
    """Hyper-parameters that fully determine a DRN primal network's shape."""

    scale: int
    n_blocks: int
    n_feats: int

    def __post_init__(self) -> None:
        if self.scale not in SUPPORTED_SCALES:
            raise ValueError(f"scale must be one of {SUPPORTED_SCALES}, got {self.scale}")
        if self.n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {self.n_blocks}")
        smallest_rcab = min(self.rcab_channels)
        if smallest_rcab < CA_REDUCTION:
            raise ValueError(
                f"n_feats={self.n_feats} is too small for scale {self.scale}: the narrowest RCAB "
                f"would have {smallest_rcab} channels, channel attention needs >= {CA_REDUCTION}"
            )

    @property
    def phases(self) -> int:
        """Number of 2x stages (log2 of the scale)."""
        return int(math.log2(self.scale))

    @property
    def rcab_channels(self) -> list[int]:
        """Channel width of the RCABs in each up block, from the lowest scale up."""
        p = self.phases
        return [self.n_feats * 2**p] + [self.n_feats * 2**q for q in range(p, 1, -1)]


def conv3x3(in_ch: int, out_ch: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)


class MeanShift(nn.Conv2d):
    """1x1 convolution initialised to add or subtract the RGB mean.

    It is an ordinary, trainable convolution (as in the official code), so checkpoints may
    carry other values: they are loaded, never re-initialised.
    """

    def __init__(self, sign: int) -> None:
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * RGB_RANGE * torch.tensor(RGB_MEAN))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: a per-channel gate computed from the global mean."""

    def __init__(self, channels: int, reduction: int = CA_REDUCTION) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def gate(self, mean: torch.Tensor) -> torch.Tensor:
        """The N x C x 1 x 1 gate for a given per-channel mean (used by tiled inference)."""
        return self.conv_du(mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel-attention block: x + CA(conv(relu(conv(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels),
            nn.ReLU(inplace=True),
            conv3x3(channels, channels),
            ChannelAttention(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class Upsampler2x(nn.Sequential):
    """3x3 conv to 4x channels, then pixel shuffle: a learned 2x up-sampling."""

    def __init__(self, channels: int) -> None:
        super().__init__(conv3x3(channels, 4 * channels), nn.PixelShuffle(2))


class DownBlock(nn.Module):
    """A 2x down-sampling block: strided conv + LeakyReLU, then a 3x3 conv (no biases).

    Used twice in DRN: inside the primal network's encoder and as one stage of the dual model.
    """

    def __init__(self, in_channels: int, n_feats: int, out_channels: int) -> None:
        super().__init__()
        self.dual_module = nn.Sequential(
            nn.Sequential(
                nn.Conv2d(in_channels, n_feats, 3, stride=2, padding=1, bias=False),
                nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
            ),
            nn.Conv2d(n_feats, out_channels, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dual_module(x)


class DRN(nn.Module):
    """The DRN primal network.

    ``forward(x)`` takes an N x 3 x H x W tensor in 0..255 and returns the final
    N x 3 x sH x sW output (unclamped, unrounded). ``forward_pyramid(x)`` returns every
    scale's output, lowest scale first, as training needs them.
    """

    def __init__(self, config: DRNConfig) -> None:
        super().__init__()
        self.config = config
        p, nf = config.phases, config.n_feats
        self.upsample = nn.Upsample(scale_factor=config.scale, mode="bicubic", align_corners=False)
        self.sub_mean = MeanShift(-1)
        self.head = conv3x3(3, nf)
        self.down = nn.ModuleList(DownBlock(nf * 2**i, nf * 2**i, nf * 2 ** (i + 1)) for i in range(p))

        self.up_blocks = nn.ModuleList()
        for i, width in enumerate(config.rcab_channels):
            self.up_blocks.append(
                nn.Sequential(
                    *(RCAB(width) for _ in range(config.n_blocks)),
                    Upsampler2x(width),
                    nn.Conv2d(width, nf * 2 ** (p - i - 1), 1),
                )
            )
        self.tail = nn.ModuleList([conv3x3(nf * 2**p, 3)] + [conv3x3(nf * 2**q, 3) for q in range(p, 0, -1)])
        self.add_mean = MeanShift(+1)

    @property
    def scale(self) -> int:
        return self.config.scale

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bicubic up-sampling, head and the down path: the skip copies, then the bottleneck."""
        x = self.head(self.sub_mean(self.upsample(x)))
        feats = [x]
        for down in self.down:
            feats.append(down(feats[-1]))
        return feats

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All outputs, from the LR size (index 0) to the final scale (index -1)."""
        feats = self.encode(x)
        x = feats.pop()
        outputs = [self.add_mean(self.tail[0](x))]
        for i, block in enumerate(self.up_blocks):
            x = torch.cat((block(x), feats.pop()), 1)
            outputs.append(self.add_mean(self.tail[i + 1](x)))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pyramid(x)[-1]


class DualModel(nn.Module):
    """The dual (down-sampling) model: one 2x DownBlock per scale level.

    ``blocks[i]`` maps an image at scale 2**(i+1) to scale 2**i, as in the official
    ``*_dual_model.pt`` files (a list of state dicts, lowest scale first).
    """

    def __init__(self, config: DRNConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(DownBlock(3, config.n_feats, 3) for _ in range(config.phases))

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        """Chain every block: from the final scale down to the LR size."""
        for block in reversed(self.blocks):
            hr = block(hr)
        return hr


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (the official code counts ``requires_grad`` ones)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
