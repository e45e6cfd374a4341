"""Denoising networks (MONAI), behind one interface: Denoiser(x_t, t, Conditions) -> prediction.

A registry: a latent model or another backbone slots in by adding a builder to MODELS.
"""

from __future__ import annotations

import types
from typing import Callable

import torch
import torch.utils.checkpoint
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
from torch import nn

from medsynth.conditioning import Column, Conditions
from medsynth.config import ModelConfig
from medsynth.errors import MedsynthError


class FourierCovariate(nn.Module):
    """A covariate (standardised value, present flag) -> `dim` numbers through sinusoids of the value at octave
    frequencies and a two-layer MLP, as diffusion networks embed their timestep: each value gets its own code rather
    than a point on one line. Left out: the flag is 0 and the features are zeros, so the MLP's output is the null code."""

    def __init__(self, dim: int, octaves: int = 6) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.pi / 8 * 2.0 ** torch.arange(octaves), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 + 2 * octaves, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        value, present = pair[:, :1], pair[:, 1:]
        angles = value * self.frequencies.to(value.dtype)
        return self.mlp(torch.cat([value, present, present * torch.sin(angles), present * torch.cos(angles)], 1))


COVARIATE_LAYERS: dict[str, Callable[[int], nn.Module]] = {"linear": lambda dim: nn.Linear(2, dim),
                                                            "fourier": FourierCovariate}


def column_layers(extras: tuple[Column, ...], dim: int, covariate: str = "linear") -> nn.ModuleList:
    """One layer per extra condition, each to `dim` numbers: a table with a null row for a categorical column; for a
    covariate a map of (value, present) (left out: its null output), linear or Fourier features and an MLP
    (`model.covariate_embedding`)."""
    return nn.ModuleList([COVARIATE_LAYERS[covariate](dim) if c.continuous else nn.Embedding(len(c.values) + 1, dim)
                          for c in extras])


def embed_column(layer: nn.Module, value: torch.Tensor) -> torch.Tensor:
    """(B,) values of one column, NaN where left out -> (B, dim)."""
    present = ~torch.isnan(value)
    if isinstance(layer, nn.Embedding):
        return layer(torch.where(present, value, layer.num_embeddings - 1).long())
    return layer(torch.stack([torch.where(present, value, 0.0), present.to(value.dtype)], 1))


class ConditionEmbedding(nn.Module):
    """Class embeddings summed: the primary class's embedding (MONAI's own table, null row included) plus one per
    extra condition (column_layers). Takes the packed (B, 1 + E) tensor: class id, then Conditions.extra."""

    def __init__(self, primary: nn.Embedding, extras: tuple[Column, ...], covariate: str = "linear") -> None:
        super().__init__()
        self.primary = primary
        self.columns = column_layers(extras, primary.embedding_dim, covariate)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        out = self.primary(packed[:, 0].long())
        for j, layer in enumerate(self.columns):
            out = out + embed_column(layer, packed[:, 1 + j])
        return out


class ConditionTokens(nn.Module):
    """Extra conditions as a sequence for cross-attention (the brain LDM's path): (B, E) -> (B, E, dim), one token per
    condition from the same layers as the summed path, so a left-out condition is its null token."""

    def __init__(self, extras: tuple[Column, ...], dim: int, covariate: str = "linear") -> None:
        super().__init__()
        self.columns = column_layers(extras, dim, covariate)

    def forward(self, extra: torch.Tensor) -> torch.Tensor:
        return torch.stack([embed_column(layer, extra[:, j]) for j, layer in enumerate(self.columns)], 1)


class Denoiser(nn.Module):
    """Wraps a MONAI network with the conditioning contract (medsynth.conditioning).

    Class conditioning: ids 0..num_classes-1, plus a reserved null id `num_classes` (classifier-free guidance).
    Mask conditioning: a one-hot label map (B, K, *spatial) concatenated to the input; all zeros means "no mask".
    Extra conditions (categorical columns, covariates): embeddings summed with the class's (ConditionEmbedding), or,
    given `token_dim`, tokens the network's cross-attention reads (ConditionTokens).
    """

    def __init__(self, net: nn.Module, image_channels: int, mask_channels: int, num_classes: int,
                 extras: tuple[Column, ...] = (), token_dim: int | None = None, covariate: str = "linear") -> None:
        super().__init__()
        self.net = net
        self.image_channels = image_channels
        self.mask_channels = mask_channels
        self.num_classes = num_classes
        self.extras = tuple(extras)
        self.covariate = covariate
        self.token_dim = token_dim if token_dim and self.extras else None
        self.tokens = ConditionTokens(self.extras, token_dim, covariate) if self.token_dim else None
        if self.extras and self.tokens is None:
            net.class_embedding = ConditionEmbedding(net.class_embedding, self.extras, covariate)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditions | None = None) -> torch.Tensor:
        """x (B, C, *spatial), t (B,) -> prediction (B, C, *spatial); a condition left out takes its null form."""
        cond = Conditions() if cond is None else cond
        if self.mask_channels:
            mask = cond.mask if cond.mask is not None else x.new_zeros((x.shape[0], self.mask_channels, *x.shape[2:]))
            x = torch.cat([x, mask.to(x.dtype)], dim=1)
        return self.net(x, t, **self.class_kwargs(x, cond.classes, cond.extra))

    def class_kwargs(self, x: torch.Tensor, class_labels: torch.Tensor | None, extra: torch.Tensor | None = None) -> dict:
        """The network's class argument: the given ids, the null class when none are given, nothing if unconditioned;
        with extra conditions, the ids and the extra values packed (B, 1 + E), NaN where left out; with condition
        tokens, the ids (when the run has classes) and the tokens as the cross-attention context."""
        if not self.num_classes and not self.extras:
            return {}
        if class_labels is None:
            class_labels = torch.full((x.shape[0],), self.null_class, dtype=torch.long, device=x.device)
        if not self.extras:
            return {"class_labels": class_labels}
        if extra is None:
            extra = torch.full((x.shape[0], len(self.extras)), float("nan"), device=x.device)
        if self.tokens is not None:
            context = self.tokens(extra.to(x.device, x.dtype))
            return {"context": context, **({"class_labels": class_labels} if self.num_classes else {})}
        return {"class_labels": torch.cat([class_labels[:, None].to(extra.dtype), extra.to(x.device)], 1)}


def scale_shift_forward(block: DiffusionUNetResnetBlock, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """MONAI's residual block with adaptive group normalisation (Dhariwal & Nichol 2021, "AdaGN"): the embedding
    (timestep, class, extra conditions) scales and shifts the normalised features, norm(h) * (1 + scale) + shift,
    where MONAI adds it before the normalisation (which removes part of a per-channel sum)."""
    h = block.nonlinearity(block.norm1(x))
    if block.upsample is not None:
        x, h = block.upsample(x), block.upsample(h)
    elif block.downsample is not None:
        x, h = block.downsample(x), block.downsample(h)
    h = block.conv1(h)
    out = block.time_emb_proj(block.nonlinearity(emb))
    scale, shift = out.reshape(out.shape[0], 2, -1, *[1] * (h.ndim - 2)).unbind(1)
    h = block.conv2(block.nonlinearity(block.norm2(h) * (1 + scale) + shift))
    return block.skip_connection(x) + h


def scale_shift_blocks(net: nn.Module) -> nn.Module:
    """Every residual block of a MONAI diffusion UNet or ControlNet takes its embedding as a scale and a shift
    (scale_shift_forward). Its projection gets twice the outputs, so the state dict is not the additive network's:
    the run's config (`model.embedding_mode`) says which network a checkpoint holds."""
    for block in net.modules():
        if isinstance(block, DiffusionUNetResnetBlock):
            block.time_emb_proj = nn.Linear(block.time_emb_proj.in_features, 2 * block.out_channels)
            block.forward = types.MethodType(scale_shift_forward, block)
    return net


EMBEDDING_MODES: dict[str, Callable[[nn.Module], nn.Module]] = {"add": lambda net: net,
                                                               "scale_shift": scale_shift_blocks}


def build_unet(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, num_class_embeds: int | None,
               cross_attention_dim: int | None = None) -> nn.Module:
    """MONAI's DiffusionModelUNet; with `cross_attention_dim`, its attention levels are transformer blocks that also
    attend to a context of condition tokens; `model.embedding_mode` says how its blocks take the embedding."""
    return EMBEDDING_MODES[cfg.embedding_mode](DiffusionModelUNet(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, channels=cfg.channels,
        attention_levels=cfg.attention_levels, num_res_blocks=cfg.num_res_blocks, norm_num_groups=cfg.norm_num_groups,
        num_head_channels=cfg.num_head_channels, num_class_embeds=num_class_embeds,
        with_conditioning=cross_attention_dim is not None, cross_attention_dim=cross_attention_dim,
    ))


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


def build_denoiser(cfg: ModelConfig, spatial_dims: int, image_channels: int, mask_channels: int, num_classes: int,
                   extras: tuple[Column, ...] = ()) -> Denoiser:
    """The configured network for images of `image_channels`, with room for mask channels, a null class and extra
    conditions (a run with summed extra conditions but no class keeps a one-row class table: the null class alone;
    with cross-attention, the extra conditions are tokens and the class table holds the classes only)."""
    if cfg.name not in MODELS:
        raise MedsynthError(f"model.name {cfg.name!r} is unknown; choose one of {', '.join(MODELS)}.")
    tokens = cfg.cross_attention_dim if extras and cfg.condition_path == "cross_attention" else None
    table = num_classes + 1 if num_classes or (extras and tokens is None) else None
    net = MODELS[cfg.name](cfg, spatial_dims, image_channels + mask_channels, image_channels, table,
                           **({"cross_attention_dim": tokens} if tokens else {}))
    if cfg.checkpointing:
        checkpoint_blocks(net)
    return Denoiser(net, image_channels, mask_channels, num_classes, extras, tokens, cfg.covariate_embedding)
