"""The built-in UNet (Ronneberger et al. 2015) in the layout of the seed material.

Modules: ``in_conv`` (DoubleConv), ``down1``..``down4`` (max-pool + DoubleConv), ``up1``..``up4``
(bilinear upsampling or transposed convolution, concatenation with the skip, DoubleConv) and
``out_conv`` (1x1). Inside, the names follow the widely used Pytorch-UNet layout (``double_conv``,
``maxpool_conv``, ``up``, ``conv``), so its checkpoints map onto this one by renaming the top level.

>>> import torch
>>> net = UNet(in_channels=3, num_classes=2, base_channels=8)
>>> net(torch.zeros(1, 3, 64, 64)).shape
torch.Size([1, 2, 64, 64])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DoubleConv(nn.Module):
    """(conv 3x3 -> BatchNorm -> ReLU) x 2: (N, C_in, H, W) -> (N, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        super().__init__()
        mid = mid_channels or out_channels
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """Max-pool 2x2 then DoubleConv: (N, C_in, H, W) -> (N, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Upsample x2, concatenate the skip, DoubleConv: (N, C_in, H, W) + skip -> (N, C_out, 2H, 2W).

    ``align_corners=True`` (the seed layout's and Pytorch-UNet's bilinear upsampling) maps
    coordinates by the input's size, so a pixel's output depends on where the tile starts: not
    shift-equivariant. ``False`` (and transposed convolutions) are, for shifts by the multiple.
    """

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool = True,
                 align_corners: bool = True) -> None:
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=align_corners)
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        # odd sizes: pad to the skip's size. Always padded (by zero when the sizes match) rather than
        # under ``if dy or dx``: that branch on shape integers breaks the ONNX export of the
        # TorchScript form (an If node whose condition is int64, not bool).
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class OutConv(nn.Module):
    """1x1 convolution to the class logits."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNet(nn.Module):
    """UNet: (N, in_channels, H, W) -> (N, num_classes, H, W) logits; H and W multiples of 16.

    Parameters
    ----------
    in_channels : image channels.
    num_classes : output channels (logits).
    base_channels : width of the first level; levels double it up to 16x (8x with bilinear).
    bilinear : bilinear upsampling (True) or transposed convolutions (False).
    align_corners : for bilinear upsampling: True as the seed layout and Pytorch-UNet were trained
        (not shift-equivariant), False for a UNet that tiles exactly (see :meth:`context_radius`).
    """

    #: Spatial multiple the input needs: four 2x2 poolings.
    multiple = 16

    def __init__(
        self, in_channels: int = 3, num_classes: int = 2, base_channels: int = 64, bilinear: bool = True,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.base_channels, self.bilinear, self.align_corners = base_channels, bilinear, align_corners
        b, factor = base_channels, 2 if bilinear else 1
        self.in_conv = DoubleConv(in_channels, b)
        self.down1 = Down(b, 2 * b)
        self.down2 = Down(2 * b, 4 * b)
        self.down3 = Down(4 * b, 8 * b)
        self.down4 = Down(8 * b, 16 * b // factor)
        self.up1 = Up(16 * b, 8 * b // factor, bilinear, align_corners)
        self.up2 = Up(8 * b, 4 * b // factor, bilinear, align_corners)
        self.up3 = Up(4 * b, 2 * b // factor, bilinear, align_corners)
        self.up4 = Up(2 * b, b, bilinear, align_corners)
        self.out_conv = OutConv(b, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.in_conv(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.out_conv(x)

    def config(self) -> dict[str, int | bool]:
        """Constructor arguments, to store beside the weights."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "base_channels": self.base_channels,
            "bilinear": self.bilinear,
            "align_corners": self.align_corners,
        }

    @property
    def shift_equivariant(self) -> bool:
        """True when shifting the input by a multiple of :attr:`multiple` shifts the output alike
        (away from the borders): transposed convolutions, or bilinear with ``align_corners=False``."""
        return not (self.bilinear and self.align_corners)

    def context_radius(self) -> int:
        """The receptive-field radius R in input pixels, from the architecture: output pixel y
        depends on input pixels [y - R, y + R] only (zero padding further away does not reach it).

        Walked level by level, at stride s (input pixels per feature): a 3x3 convolution adds s on
        each side, a 2x2 max-pool nothing (its cell is the next level's pixel), a bilinear x2
        upsampling one coarse pixel (s) on each side, a 2x2 transposed convolution half of one;
        the skip's side is always narrower than the upsampled path's.

        >>> UNet(3, 2, base_channels=8).context_radius(), UNet(3, 2, 8, bilinear=False).context_radius()
        (122, 107)
        """
        s, r = 1, 0
        for level, block in enumerate((self.in_conv, self.down1, self.down2, self.down3, self.down4)):
            s = 1 if level == 0 else 2 * s
            r += _conv_reach(block, s)
        for block in (self.up1, self.up2, self.up3, self.up4):
            r += s if self.bilinear else s // 2  # the upsampling, at the coarse stride s
            s //= 2
            r += _conv_reach(block.conv, s)
        return r


def _conv_reach(module: nn.Module, stride: int) -> int:
    """Pixels (at input scale) the convolutions of ``module`` add on each side at feature stride ``stride``."""
    reach = 0
    for conv in (m for m in module.modules() if isinstance(m, nn.Conv2d)):
        k, d = conv.kernel_size[0], conv.dilation[0]
        reach += (k // 2) * d * stride
    return reach
