"""The swap network in torch (no torchvision): one shared encoder, one decoder per identity.

Why this shape (the 2017 deepfakes autoencoder, as Faceswap's "original" model
describes it): the shared encoder must describe faces of *both* people with the same
code, so that code can only hold what the two have in common — pose, expression,
gaze, lighting. Each decoder learns to draw one identity from that code. Swapping is
then "encode the patient's face, decode with the donor's decoder": the donor's face
with the patient's pose and expression, which is what keeps facial motion measurable
(Zhu et al., AIES 2020). Layer sizes come from :class:`deid.swap.spec.ModelSpec`.

Upscales are pixel shuffles (sub-pixel convolution, Shi et al. 2016) with ICNR
initialisation (Aitken et al. 2017) so that an untrained upscale starts as a
nearest-neighbour resize instead of a checkerboard.
"""

from __future__ import annotations

import torch
from torch import nn

from .spec import ModelSpec

SIDES = ("patient", "donor")


def _icnr_(weight: torch.Tensor, scale: int = 2) -> None:
    """ICNR: initialise a (C*s^2, Cin, k, k) sub-pixel conv so that its s^2 outputs per
    channel start identical (each sub-pixel a copy: a nearest-neighbour upscale)."""
    out_c, in_c, kh, kw = weight.shape
    sub = torch.empty(out_c // (scale * scale), in_c, kh, kw)
    nn.init.kaiming_uniform_(sub, a=0.1)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(scale * scale, dim=0))


class Down(nn.Sequential):
    """5x5 stride-2 convolution + LeakyReLU(0.1): halves the side."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 5, stride=2, padding=2), nn.LeakyReLU(0.1, inplace=True))


class Up(nn.Sequential):
    """3x3 convolution to 4x channels + LeakyReLU(0.1) + pixel shuffle: doubles the side."""

    def __init__(self, cin: int, cout: int):
        conv = nn.Conv2d(cin, cout * 4, 3, padding=1)
        _icnr_(conv.weight)
        super().__init__(conv, nn.LeakyReLU(0.1, inplace=True), nn.PixelShuffle(2))


class Encoder(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        chans = (3,) + spec.enc_channels
        self.down = nn.Sequential(*[Down(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.side = spec.bottleneck_side
        self.cl = spec.enc_channels[-1]
        flat = self.side * self.side * self.cl
        self.dense_in = nn.Linear(flat, spec.dense)
        self.dense_out = nn.Linear(spec.dense, flat)
        self.up = Up(self.cl, spec.enc_up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.down(x).flatten(1)
        z = self.dense_out(self.dense_in(z)).view(-1, self.cl, self.side, self.side)
        return self.up(z)


class Decoder(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        chans = (spec.enc_up,) + spec.dec_channels
        self.up = nn.Sequential(*[Up(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.rgb = nn.Conv2d(chans[-1], 3, 5, padding=2)
        self.mask = nn.Conv2d(chans[-1], 1, 5, padding=2) if spec.mask else None

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.up(z)
        rgb = torch.sigmoid(self.rgb(h))
        mask = torch.sigmoid(self.mask(h)) if self.mask is not None else None
        return rgb, mask


class SwapModel(nn.Module):
    """``model(x, side)`` -> (rgb, mask or None); x is (N, 3, S, S) float in [0, 1]."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.encoder = Encoder(spec)
        self.decoders = nn.ModuleDict({s: Decoder(spec) for s in SIDES})

    def forward(self, x: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.spec.size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"SwapModel expects (N, 3, {s}, {s}) input, got {tuple(x.shape)}")
        if side not in self.decoders:
            raise ValueError(f"unknown decoder {side!r}; this model has {list(self.decoders)}")
        return self.decoders[side](self.encoder(x))


def build_model(spec: ModelSpec) -> SwapModel:
    return SwapModel(spec)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
