"""Stage 1 of the latent path: a MONAI AutoencoderKL (2D or 3D), its L1 + KL training (plus, as an option, a
PatchDiscriminator adversarial loss), mean-latent encoding with a scale factor learned from the data, reconstruction
quality.

The diffusion model of stage 2 works on `encode_mean(x) * scale_factor` (the latent mean, never a sampled latent:
sampled latents put a noise floor under the diffusion loss). Tiled decoding with whole-volume GroupNorm statistics is in
medsynth.models.latent.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from monai.metrics.regression import compute_ssim_and_cs
from monai.networks.nets import AutoencoderKL, PatchDiscriminator

from medsynth.progress import progress_iter


@dataclass(frozen=True)
class AutoencoderSpec:
    channels: tuple[int, ...] = (32, 64, 64)   # one entry per level; 2^(levels-1) downsampling per side
    latent_channels: int = 4
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    attention: bool = False                     # non-local attention in the deepest level (memory grows fast in 3D)
    checkpointing: bool = False                 # recompute encoder/decoder activations in the backward pass

    @property
    def factor(self) -> int:
        """Spatial downsampling per side."""
        return 2 ** (len(self.channels) - 1)


def build_autoencoder(spec: AutoencoderSpec, spatial_dims: int, in_channels: int = 1) -> AutoencoderKL:
    levels = len(spec.channels)
    return AutoencoderKL(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=in_channels,
                         num_res_blocks=(spec.num_res_blocks,) * levels, channels=spec.channels,
                         attention_levels=(False,) * levels, latent_channels=spec.latent_channels,
                         norm_num_groups=spec.norm_num_groups, with_encoder_nonlocal_attn=spec.attention,
                         with_decoder_nonlocal_attn=spec.attention, include_fc=False, use_checkpoint=spec.checkpointing)


def kl_loss(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, 1)) summed over latent voxels, averaged over the batch."""
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-12) - 1)
    return kl.flatten(1).sum(1).mean()


def build_discriminator(spatial_dims: int, in_channels: int = 1, channels: int = 16, layers: int = 3,
                        smallest_side: int | None = None) -> PatchDiscriminator:
    """MONAI's PatchDiscriminator; fewer stride-2 layers for small images (its last norm needs > 1 voxel)."""
    if smallest_side is not None:
        layers = max(1, min(layers, int(np.log2(smallest_side)) - 3))
    return PatchDiscriminator(spatial_dims=spatial_dims, channels=channels, in_channels=in_channels, num_layers_d=layers,
                              norm="INSTANCE")


def train_autoencoder(model: AutoencoderKL, images: torch.Tensor, steps: int, batch_size: int = 4, lr: float = 1e-4,
                      kl_weight: float = 1e-6, seed: int = 0, show_progress: bool = True,
                      adversarial_weight: float = 0.0, adversarial_start: int = 0) -> list[float]:
    """L1 reconstruction + weighted KL with AdamW; images (N, C, *spatial) in model units. Returns the L1 per step.

    With `adversarial_weight` > 0, a PatchDiscriminator (least-squares GAN loss) joins from step `adversarial_start`:
    it sharpens textures that L1 alone blurs."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)
    discriminator = adversarial = None
    if adversarial_weight > 0:
        with torch.random.fork_rng(devices=[]):   # its initialisation leaves the autoencoder's random stream alone
            torch.manual_seed(seed + 1)
            discriminator = build_discriminator(images.ndim - 2, images.shape[1], smallest_side=min(images.shape[2:]))
        discriminator = discriminator.to(device)
        d_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=lr, weight_decay=1e-5)
        adversarial = PatchAdversarialLoss(criterion="least_squares")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    history = []
    model.train()
    for step in progress_iter(range(steps), "autoencoder", enabled=show_progress):
        index = torch.randint(len(images), (min(batch_size, len(images)),), generator=g)
        x = images[index].to(device)
        with autocast:
            reconstruction, mu, sigma = model(x)
        reconstruction, mu, sigma = reconstruction.float(), mu.float(), sigma.float()
        l1 = F.l1_loss(reconstruction, x)
        loss = l1 + kl_weight * kl_loss(mu, sigma)
        gan = discriminator is not None and step >= adversarial_start
        if gan:
            with autocast:
                fake = discriminator(reconstruction)[-1].float()
            loss = loss + adversarial_weight * adversarial(fake, target_is_real=True, for_discriminator=False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if gan:
            with autocast:
                fake, real = discriminator(reconstruction.detach())[-1].float(), discriminator(x)[-1].float()
            d_loss = 0.5 * (adversarial(fake, target_is_real=False, for_discriminator=True)
                            + adversarial(real, target_is_real=True, for_discriminator=True))
            d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optimizer.step()
        history.append(l1.item())
    model.eval()
    return history


@torch.no_grad()
def encode_mean(model: AutoencoderKL, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """The latent means (N, latent_channels, *spatial / factor), computed once and cached by stage 2."""
    device = next(model.parameters()).device
    return torch.cat([model.encode(images[i : i + batch_size].to(device))[0].cpu()
                      for i in range(0, len(images), batch_size)])


def scale_factor(latents: torch.Tensor) -> float:
    """1 / standard deviation of the training latents: stage 2 then sees unit-variance inputs (Rombach et al.)."""
    return float(1.0 / latents.float().std().clamp_min(1e-6))


@torch.no_grad()
def reconstruction_quality(model: AutoencoderKL, images: torch.Tensor) -> dict[str, float]:
    """PSNR (dB, data range 2 for [-1, 1] images) and SSIM of mean-latent reconstructions."""
    device = next(model.parameters()).device
    recon = torch.cat([model.decode(model.encode(images[i : i + 8].to(device))[0]).cpu() for i in range(0, len(images), 8)])
    mse = F.mse_loss(recon, images).item()
    psnr = float(10 * np.log10(4.0 / max(mse, 1e-12)))
    unit = lambda x: ((x.clamp(-1, 1) + 1) / 2).float()  # noqa: E731
    ssim, _ = compute_ssim_and_cs(unit(recon), unit(images), spatial_dims=images.ndim - 2, data_range=1.0,
                                  kernel_type="gaussian", kernel_size=[min(7, s - (1 - s % 2)) for s in images.shape[2:]],
                                  kernel_sigma=[1.5] * (images.ndim - 2), k1=0.01, k2=0.03)
    return {"psnr": psnr, "ssim": float(ssim.mean())}
