"""U-Net encoder-decoder with optional CBAM attention (the 4D-PreNet denoiser and centre finder)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class CBAM(nn.Module):
    """Convolutional block attention: channel attention, then spatial attention (Woo et al. 2018)."""

    def __init__(self, channels: int, reduction: int = 4, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 2)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        x = x * torch.sigmoid(avg + mx)
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(s))


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and ReLU, optionally followed by CBAM."""

    def __init__(self, cin: int, cout: int, cbam: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )
        self.attention = CBAM(cout) if cbam else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(self.body(x))


class UNet(nn.Module):
    """U-Net: ``depth`` down-sampling levels with skip connections.

    Parameters
    ----------
    in_channels, out_channels : channel counts of input and output maps.
    base : channels at full resolution (doubled per level).
    depth : number of 2x down-samplings; input sides must be divisible by ``2**depth``.
    cbam : add CBAM attention after every encoder/bottleneck block (the denoiser).
    out_activation : ``"sigmoid"`` (non-negative, bounded output), ``"softplus"`` or ``"none"``.
    residual : add the first ``out_channels`` input channels to the output (before the activation): the
        network learns a correction, so the identity (nothing to remove) is easy to represent; further
        input channels (neighbouring patterns, a noise-level map) only inform the correction.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 8, depth: int = 4,
                 cbam: bool = False, out_activation: str = "sigmoid", residual: bool = False) -> None:
        super().__init__()
        if out_activation not in ("sigmoid", "softplus", "none", "relu"):
            raise ValueError(f"out_activation must be sigmoid, softplus, relu or none, got {out_activation!r}")
        if residual and in_channels < out_channels:
            raise ValueError("a residual U-Net needs in_channels >= out_channels")
        self.depth, self.out_activation, self.residual = depth, out_activation, residual
        chans = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([ConvBlock(in_channels, chans[0], cbam)])
        self.down.extend(ConvBlock(chans[i], chans[i + 1], cbam) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(ConvBlock(2 * chans[i], chans[i], False) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(f"input sides {tuple(x.shape[-2:])} must be divisible by {2**self.depth}")
        skips, inp = [], x
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        x = self.head(x) + (inp[:, :self.head.out_channels] if self.residual else 0)
        if self.out_activation == "relu":
            return F.relu(x)
        if self.out_activation == "sigmoid":
            return torch.sigmoid(x)
        if self.out_activation == "softplus":
            return F.softplus(x)
        return x
