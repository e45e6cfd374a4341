"""Stage 1 of the latent path: the AutoencoderKL learns the phantoms; latents are means, scaled to unit variance."""

import numpy as np
import pytest
import torch

from medsynth.data.phantom import PhantomSpec, make_phantom
from medsynth.models.autoencoder import (AutoencoderSpec, build_autoencoder, encode_mean, reconstruction_quality,
                                         scale_factor, train_autoencoder)

SPEC = AutoencoderSpec(channels=(8, 16, 16), latent_channels=2, norm_num_groups=4)


def phantom_volumes(n: int, size: int = 16) -> torch.Tensor:
    studies = [make_phantom(PhantomSpec(size=size, seed=3), k, k % 4 == 0) for k in range(n)]
    return torch.from_numpy(np.stack([np.clip(s.image / 1000.0, -1, 1) for s in studies]).astype(np.float32))


def test_round_trip_improves_with_training():
    torch.manual_seed(0)
    images = phantom_volumes(12)
    model = build_autoencoder(SPEC, spatial_dims=3)
    before = reconstruction_quality(model.eval(), images)
    history = train_autoencoder(model, images, steps=60, batch_size=4, lr=2e-3, show_progress=False)
    after = reconstruction_quality(model, images)
    assert np.mean(history[-10:]) < 0.5 * np.mean(history[:10])
    assert after["psnr"] > before["psnr"] + 3 and after["ssim"] > before["ssim"]


def test_latents_are_the_mean_at_the_spec_factor_and_scale_to_unit_variance():
    images = phantom_volumes(4)
    model = build_autoencoder(SPEC, spatial_dims=3).eval()
    latents = encode_mean(model, images)
    assert latents.shape == (4, 2, 4, 4, 4) and SPEC.factor == 4
    assert torch.equal(latents, encode_mean(model, images))              # the mean, not a sample
    assert (latents * scale_factor(latents)).std().item() == pytest.approx(1.0, rel=1e-4)
