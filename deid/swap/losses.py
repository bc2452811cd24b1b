"""Reconstruction losses: SSIM + L1, weighted towards the face.

SSIM (Wang, Bovik, Sheikh and Simoncelli, IEEE TIP 2004) with its published constants:
an 11 x 11 Gaussian window of sigma 1.5, C1 = (0.01 L)^2 and C2 = (0.03 L)^2 for a
dynamic range L (1 here). SSIM rewards structure (edges of eyes, mouth, nose), L1
keeps colours and low frequencies honest; Faceswap's default loss mixes the two.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


@functools.lru_cache(maxsize=8)
def _gauss(window: int, sigma: float, channels: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(window, dtype=torch.float64) - (window - 1) / 2.0
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).to(dtype)
    return k.expand(channels, 1, window, window).contiguous().to(device)


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Per-pixel SSIM (N, C, H', W') of two (N, C, H, W) images in [0, 1] (valid region)."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two (N, C, H, W) tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    c = a.shape[1]
    w = min(window, a.shape[2], a.shape[3])
    k = _gauss(w, sigma, c, str(a.device), a.dtype)
    mu_a = F.conv2d(a, k, groups=c)
    mu_b = F.conv2d(b, k, groups=c)
    aa = F.conv2d(a * a, k, groups=c) - mu_a**2
    bb = F.conv2d(b * b, k, groups=c) - mu_b**2
    ab = F.conv2d(a * b, k, groups=c) - mu_a * mu_b
    num = (2 * mu_a * mu_b + SSIM_C1) * (2 * ab + SSIM_C2)
    den = (mu_a**2 + mu_b**2 + SSIM_C1) * (aa + bb + SSIM_C2)
    return num / den


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (scalar); 1 for identical images."""
    return ssim_map(a, b).mean()


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, face_weight: float = 3.0) -> torch.Tensor:
    """(1 - SSIM) + L1, both weighted ``1 + face_weight`` inside the face mask so the
    model spends its capacity on the face rather than on hair and background."""
    if mask is None:
        return (1.0 - ssim(pred, target)) + (pred - target).abs().mean()
    w = 1.0 + face_weight * mask
    l1 = ((pred - target).abs() * w).mean() / w.mean()
    s = ssim_map(pred, target)
    off = (mask.shape[-1] - s.shape[-1]) // 2
    wc = w[..., off : off + s.shape[-2], off : off + s.shape[-1]]
    dssim = ((1.0 - s) * wc).mean() / wc.mean()
    return dssim + l1


def mask_loss(pred: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
    if pred is None:
        return target.new_zeros(())
    return (pred - target).abs().mean()
