"""Model sizes as data (no torch import): the presets the config names.

The layout follows the description of Faceswap's "original" model (Faceswap docs and
the original 2017 deepfakes autoencoder): an encoder of strided 5x5 convolutions with
LeakyReLU(0.1), a dense bottleneck (flatten -> dense -> dense -> reshape), one
pixel-shuffle upscale at the end of the encoder, and per identity a decoder of
pixel-shuffle upscales ending in a 5x5 sigmoid RGB output (plus an optional 1-channel
mask output). The original is 64 px with convolutions of 128-256-512-1024 filters and
a 1024-wide bottleneck (82 M parameters with two decoders): 5.5 s a training step on
this project's 2-core reference machine. ``small`` keeps its shape at a quarter of its
widths (5 M parameters, ~0.16 s a step of 2 x 16 faces on 2 idle cores) so a
per-patient model trains on a CPU within the demo's budget; ``large`` is 128 px at the
original's widths for GPU pools.

Batch and learning rate of ``small`` were chosen by measurement on the demo clip: at
equal compute (1300 steps of 8 faces vs 657 steps of 16), batch 8 at lr 5e-4 reached a
lower loss (0.32 vs 0.37) and a larger smallest dlib distance to the patient (0.70 vs
0.68) than batch 16 at 3e-4, which itself converged about twice as fast as 1e-4.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of one shared-encoder / per-identity-decoder model."""

    size: int = 64  # input and output crop side (pixels)
    enc_channels: tuple[int, ...] = (32, 64, 128, 256)  # one strided conv per entry (each halves the side)
    dense: int = 256  # bottleneck width
    enc_up: int = 128  # channels after the encoder's upscale
    dec_channels: tuple[int, ...] = (64, 32, 16)  # one pixel-shuffle upscale per entry (each doubles the side)
    mask: bool = True  # also predict a face mask
    batch_size: int = 8  # faces per identity per step
    learning_rate: float = 5e-4

    def __post_init__(self) -> None:
        object.__setattr__(self, "enc_channels", tuple(int(c) for c in self.enc_channels))
        object.__setattr__(self, "dec_channels", tuple(int(c) for c in self.dec_channels))
        n_down = len(self.enc_channels)
        if n_down < 1 or any(c < 1 for c in self.enc_channels + self.dec_channels):
            raise ConfigError(f"model spec: channel lists must be non-empty and positive, got {self}")
        if self.size % (2**n_down) != 0:
            raise ConfigError(f"model spec: size {self.size} must be divisible by 2**{n_down} (one halving per encoder conv)")
        # encoder: size / 2**n_down, then one upscale; decoder: one doubling per entry
        if len(self.dec_channels) != n_down - 1:
            raise ConfigError(
                f"model spec: {n_down} encoder convs need {n_down - 1} decoder upscales to get back to {self.size} px, "
                f"got {len(self.dec_channels)}"
            )
        if self.dense < 1 or self.enc_up < 1 or self.batch_size < 1 or not (0 < self.learning_rate < 1):
            raise ConfigError(f"model spec: bad dense/enc_up/batch_size/learning_rate in {self}")

    def arch(self) -> dict[str, Any]:
        """The fields that shape the weights (batch size and learning rate do not)."""
        d = self.to_dict()
        return {k: d[k] for k in ("size", "enc_channels", "dense", "enc_up", "dec_channels", "mask")}

    def arch_key(self) -> str:
        """Short stable id of :meth:`arch` (names cached pre-trained weights)."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.arch(), sort_keys=True).encode()).hexdigest()[:10]

    @property
    def bottleneck_side(self) -> int:
        return self.size // (2 ** len(self.enc_channels))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["enc_channels"] = list(self.enc_channels)
        d["dec_channels"] = list(self.dec_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        return cls(**{**d, "enc_channels": tuple(d["enc_channels"]), "dec_channels": tuple(d["dec_channels"])})


PRESETS: dict[str, ModelSpec] = {
    # tests only: trains a step in milliseconds, learns nothing useful
    "tiny": ModelSpec(size=32, enc_channels=(8, 16, 32), dense=32, enc_up=16, dec_channels=(8, 8), batch_size=4, learning_rate=1e-3),
    # CPU, minutes: the demo and per-patient training without a GPU
    "small": ModelSpec(),
    # GPU pools: 128 px, the original model's widths, one more down/up stage for the larger side
    "large": ModelSpec(
        size=128,
        enc_channels=(64, 128, 256, 512, 1024),
        dense=1024,
        enc_up=512,
        dec_channels=(512, 256, 128, 64),
        batch_size=32,
        learning_rate=5e-5,
    ),
}


def preset(name: str) -> ModelSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown swap preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
