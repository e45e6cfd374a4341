"""Denoising networks (MONAI), behind one interface: Denoiser(x_t, t, Conditions) -> prediction.

A registry: a latent model or another backbone slots in by adding a builder to MODELS.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.utils.checkpoint
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from medsynth.conditioning import Conditions
from medsynth.config import ModelConfig
from medsynth.errors import MedsynthError


class Denoiser(nn.Module):
    """Wraps a MONAI network with the conditioning contract (medsynth.conditioning).

    Class conditioning: ids 0..num_classes-1, plus a reserved null id `num_classes` (classifier-free guidance).
    Mask conditioning: a one-hot label map (B, K, *spatial) concatenated to the input; all zeros means "no mask".
    """

    def __init__(self, net: nn.Module, image_channels: int, mask_channels: int, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.image_channels = image_channels
        self.mask_channels = mask_channels
        self.num_classes = num_classes

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditions | None = None) -> torch.Tensor:
        """x (B, C, *spatial), t (B,) -> prediction (B, C, *spatial); a condition left out takes its null form."""
        cond = Conditions() if cond is None else cond
        if self.mask_channels:
            mask = cond.mask if cond.mask is not None else x.new_zeros((x.shape[0], self.mask_channels, *x.shape[2:]))
            x = torch.cat([x, mask.to(x.dtype)], dim=1)
        return self.net(x, t, **self.class_kwargs(x, cond.classes))

    def class_kwargs(self, x: torch.Tensor, class_labels: torch.Tensor | None) -> dict:
        """The network's class argument: the given ids, the null class when none are given, nothing if unconditioned."""
        if not self.num_classes:
            return {}
        if class_labels is None:
            class_labels = torch.full((x.shape[0],), self.null_class, dtype=torch.long, device=x.device)
        return {"class_labels": class_labels}


def build_unet(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, num_class_embeds: int | None) -> nn.Module:
    return DiffusionModelUNet(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, channels=cfg.channels,
        attention_levels=cfg.attention_levels, num_res_blocks=cfg.num_res_blocks, norm_num_groups=cfg.norm_num_groups,
        num_head_channels=cfg.num_head_channels, num_class_embeds=num_class_embeds,
    )


def checkpoint_blocks(net: nn.Module) -> nn.Module:
    """Activation checkpointing for a DiffusionModelUNet in training: each down, middle and up block recomputes its
    activations in the backward pass instead of keeping them. Only the blocks' forward is replaced, so state dicts
    (and checkpoints) are the same as without it."""
    blocks = [*net.down_blocks, net.middle_block, *net.up_blocks]
    for block in blocks:
        plain = block.forward

        def forward(*args, _plain=plain, **kwargs):
            if torch.is_grad_enabled():
                return torch.utils.checkpoint.checkpoint(_plain, *args, use_reentrant=False, **kwargs)
            return _plain(*args, **kwargs)
        block.forward = forward
    return net


MODELS: dict[str, Callable[..., nn.Module]] = {"unet": build_unet}


def build_denoiser(cfg: ModelConfig, spatial_dims: int, image_channels: int, mask_channels: int, num_classes: int) -> Denoiser:
    """The configured network for images of `image_channels`, with room for mask channels and a null class."""
    if cfg.name not in MODELS:
        raise MedsynthError(f"model.name {cfg.name!r} is unknown; choose one of {', '.join(MODELS)}.")
    net = MODELS[cfg.name](cfg, spatial_dims, image_channels + mask_channels, image_channels,
                           num_classes + 1 if num_classes else None)
    if cfg.checkpointing:
        checkpoint_blocks(net)
    return Denoiser(net, image_channels, mask_channels, num_classes)
