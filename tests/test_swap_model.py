"""Swap model: shapes, gradients, presets, ICNR start, losses."""

from __future__ import annotations

import pytest
import torch

from deid.errors import ConfigError
from deid.swap.losses import reconstruction_loss, ssim
from deid.swap.model import SIDES, build_model, count_parameters
from deid.swap.spec import PRESETS, ModelSpec, preset


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_forward_shapes_for_both_decoders(name):
    spec = preset(name)
    model = build_model(spec)
    x = torch.rand(2, 3, spec.size, spec.size)
    for side in SIDES:
        with torch.no_grad():
            rgb, mask = model(x, side)
        assert rgb.shape == (2, 3, spec.size, spec.size)
        assert mask is not None and mask.shape == (2, 1, spec.size, spec.size)
        assert float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0


def test_large_preset_builds_at_128_px():
    spec = preset("large")
    assert spec.size == 128
    with torch.device("meta"):  # shapes only: no 100 M parameters allocated in a unit test
        model = build_model(spec)
        rgb, mask = model(torch.empty(1, 3, 128, 128), "donor")
    assert rgb.shape == (1, 3, 128, 128) and mask.shape == (1, 1, 128, 128)
    assert count_parameters(model) > count_parameters(build_model(preset("small")))


def test_backward_reaches_the_encoder_and_only_the_decoder_used():
    spec = preset("tiny")
    model = build_model(spec)
    x = torch.rand(3, 3, spec.size, spec.size)
    rgb, mask = model(x, "patient")
    loss = reconstruction_loss(rgb, x) + mask.mean()
    loss.backward()
    enc = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in enc)
    assert any(float(g.abs().sum()) > 0 for g in enc)
    assert all(p.grad is not None for p in model.decoders["patient"].parameters())
    assert all(p.grad is None for p in model.decoders["donor"].parameters())


def test_input_shape_and_side_are_checked():
    model = build_model(preset("tiny"))
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        model(torch.rand(1, 3, 64, 64), "donor")
    with pytest.raises(ValueError, match="unknown decoder"):
        model(torch.rand(1, 3, 32, 32), "someone")


def test_spec_validation_explains_the_mismatch():
    with pytest.raises(ConfigError, match="divisible"):
        ModelSpec(size=60)
    with pytest.raises(ConfigError, match="decoder upscales"):
        ModelSpec(dec_channels=(32, 16))
    with pytest.raises(ConfigError, match="unknown swap preset"):
        preset("huge")
    assert set(PRESETS) >= {"tiny", "small", "large"}


def test_spec_round_trips_through_a_dict():
    for spec in PRESETS.values():
        assert ModelSpec.from_dict(spec.to_dict()) == spec
        assert spec.arch_key() == ModelSpec.from_dict(spec.to_dict()).arch_key()
    from dataclasses import replace

    s = preset("small")
    assert replace(s, learning_rate=1e-3).arch_key() == s.arch_key()  # training knobs do not change weights
    assert replace(s, dense=128).arch_key() != s.arch_key()


def test_icnr_upscale_starts_as_nearest_neighbour():
    from deid.swap.model import Up

    up = Up(4, 3)
    x = torch.rand(1, 4, 5, 5)
    conv = up[0]
    y = torch.pixel_shuffle(conv(x), 2)  # before the nonlinearity: 2x2 blocks are equal (bias aside)
    y = y - torch.pixel_shuffle(conv.bias.view(1, -1, 1, 1).expand(1, -1, 5, 5), 2)
    blocks = y.unfold(2, 2, 2).unfold(3, 2, 2)  # (1, C, 5, 5, 2, 2)
    assert torch.allclose(blocks, blocks[..., :1, :1].expand_as(blocks), atol=1e-6)


def test_ssim_is_one_for_identical_images_and_lower_otherwise():
    a = torch.rand(2, 3, 32, 32)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-5)
    b = (a + 0.3 * torch.rand_like(a)).clamp(0, 1)
    assert float(ssim(a, b)) < 0.95
    assert float(reconstruction_loss(a, a)) == pytest.approx(0.0, abs=1e-5)


def test_masked_loss_weights_the_face():
    a = torch.zeros(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1.0
    inside, outside = a.clone(), a.clone()
    inside[..., 12:20, 12:20] = 1.0
    outside[..., 0:8, 0:8] = 1.0  # same number of wrong pixels, outside the face
    assert float(reconstruction_loss(inside, a, mask)) > float(reconstruction_loss(outside, a, mask))
