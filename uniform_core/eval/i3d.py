"""I3D (Inception-v1, Kinetics-400), the FVD/KVD feature network, as MM-Diffusion's and TATS's FVD code use it.

Module and key names follow piergiaj's pytorch-i3d, which those projects load ``i3d_pretrained_400.pt`` into:
``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_mean``, ``logits.conv3d.bias``, ... Convolutions and
pools pad "same" the TensorFlow way (more at the end when the padding is odd). Features are the 400 logits averaged
over time. Videos are scaled so the short side is 224 (bilinear), centre-cropped to 224 x 224 and mapped to [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..errors import InputError

RESOLUTION = 224


def _same_pad(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """TensorFlow "SAME" padding of (B, C, T, H, W) for a kernel/stride: the odd pixel goes at the end."""
    pads = []
    for size, k, s in zip(x.shape[2:], kernel, stride, strict=True):
        total = max(k - (s if size % s == 0 else size % s), 0)
        pads.append((total // 2, total - total // 2))
    (tf, tb), (hf, hb), (wf, wb) = pads
    return F.pad(x, (wf, wb, hf, hb, tf, tb))


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm + ReLU with "same" padding; the logits layer keeps only the conv, with bias."""

    def __init__(self, c_in: int, c_out: int, kernel=(1, 1, 1), stride=(1, 1, 1), head: bool = False):
        super().__init__()
        self.kernel, self.stride, self.head = tuple(kernel), tuple(stride), head
        self.conv3d = nn.Conv3d(c_in, c_out, self.kernel, self.stride, padding=0, bias=head)
        if not head:
            self.bn = nn.BatchNorm3d(c_out, eps=1e-5, momentum=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        return x if self.head else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max-pool -> 1x1."""

    def __init__(self, c_in: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(c_in, widths[0])
        self.b1a, self.b1b = Unit3D(c_in, widths[1]), Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(c_in, widths[3]), Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(c_in, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# Inception modules: name (the checkpoint's key prefix) -> (input channels, branch widths).
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class I3D(nn.Module):
    """Inception-v1 I3D returning the 400 Kinetics logits averaged over time: the FVD/KVD features."""

    name = "i3d"
    dim = 400

    def __init__(self, num_classes: int = 400):
        super().__init__()
        layers = {
            "Conv3d_1a_7x7": Unit3D(3, 64, (7, 7, 7), (2, 2, 2)),
            "MaxPool3d_2a_3x3": MaxPoolSame((1, 3, 3), (1, 2, 2)),
            "Conv3d_2b_1x1": Unit3D(64, 64),
            "Conv3d_2c_3x3": Unit3D(64, 192, (3, 3, 3)),
            "MaxPool3d_3a_3x3": MaxPoolSame((1, 3, 3), (1, 2, 2)),
        }
        for name, (c_in, widths) in _MIXED.items():
            if name == "Mixed_4b":
                layers["MaxPool3d_4a_3x3"] = MaxPoolSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                layers["MaxPool3d_5a_2x2"] = MaxPoolSame((2, 2, 2), (2, 2, 2))
            layers[name] = InceptionModule(c_in, widths)
        self.order = tuple(layers)
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.dim = num_classes
        self.logits = Unit3D(1024, num_classes, head=True)

    def forward_clips(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, 224, 224) in [-1, 1] -> (B, num_classes) logits, averaged over the remaining time steps."""
        for name in self.order:
            x = getattr(self, name)(x)
        x = self.logits(F.avg_pool3d(x, (2, 7, 7), stride=1))  # dropout is off in eval
        return x.squeeze(4).squeeze(3).mean(dim=2)

    @torch.no_grad()
    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, 3) float in [0, 1], T >= 9 frames -> (B, 400) features."""
        if videos.ndim != 5 or videos.shape[-1] != 3 or videos.shape[1] < 9:
            raise InputError(f"I3D takes videos (B, T >= 9, H, W, 3) in [0, 1]; got shape {tuple(videos.shape)}")
        device = next(self.parameters()).device
        return self.forward_clips(torch.stack([preprocess(v) for v in videos]).to(device))


def preprocess(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) in [0, 1] -> (3, T, 224, 224) in [-1, 1]: short side to 224 (bilinear), centre crop."""
    x = rearrange(frames.float(), "t h w c -> t c h w")
    h, w = x.shape[-2:]
    scale = RESOLUTION / min(h, w)
    size = (RESOLUTION, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), RESOLUTION)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (x.shape[-2] - RESOLUTION) // 2, (x.shape[-1] - RESOLUTION) // 2
    x = x[..., top : top + RESOLUTION, left : left + RESOLUTION]
    return rearrange(x, "t c h w -> c t h w") * 2 - 1
