"""The latent path's moving parts at run time: the codec between images and scaled latents (with tiled decoding whose
GroupNorms use whole-volume statistics), and a latent denoiser steered by a ControlNet on the mask.

Tiled decoding: convolutions and upsampling are local, so a tile with enough context decodes its core exactly, but
every GroupNorm normalises with the statistics of what it sees. Decoding tile by tile with MONAI's sliding window
therefore differs from whole decoding by about the reconstruction error itself. Here the statistics of each GroupNorm
are gathered over the whole volume first, one norm at a time in call order (pass k runs every tile up to norm k with
norms 0..k-1 already fixed, and accumulates sums over tile cores only), then a last pass decodes the tiles with all
norms fixed. Each tile gets the decoder's receptive radius as context, so its core decodes exactly. Memory stays that
of one tile plus the output whatever the volume; the price is time, one pass per norm (32x a whole decode at 64^3 for
ct_latent_3d.yaml's autoencoder, docs/benchmarks.md). An optional cache keeps tiles' activations between passes:
several times faster, but more memory than whole decoding.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL, ControlNet
from monai.networks.utils import copy_model_state
from torch import nn

from medsynth.config import LatentConfig, ModelConfig
from medsynth.models import EMBEDDING_MODES, ConditionEmbedding, Denoiser
from medsynth.models.autoencoder import AutoencoderSpec, build_autoencoder


def autoencoder_spec(cfg: LatentConfig) -> AutoencoderSpec:
    return AutoencoderSpec(tuple(cfg.channels), cfg.latent_channels, cfg.num_res_blocks, cfg.norm_num_groups,
                           checkpointing=cfg.checkpointing)


class _Collected(Exception):
    """Stops a statistics pass once the norm being measured has seen its tile."""


class WholeVolumeNorm(nn.Module):
    """A GroupNorm that, in tiled decoding, measures or applies statistics of the whole volume instead of the tile's."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.norm = norm
        self.mode = "plain"         # plain | collect | apply
        self.core: tuple[tuple[float, float], ...] = ()   # the tile's core per axis, as fractions of the tile
        self.sums = self.squares = None
        self.count = 0
        self.mean = self.inv_std = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "plain":
            return self.norm(x)
        b, c, groups = x.shape[0], x.shape[1], self.norm.num_groups
        if self.mode == "collect":
            core = x[(slice(None), slice(None), *[slice(round(lo * n), round(hi * n))
                                                  for (lo, hi), n in zip(self.core, x.shape[2:])])]
            values = core.reshape(b, groups, -1).double()
            sums, squares = values.sum(-1), values.pow(2).sum(-1)
            self.sums = sums if self.sums is None else self.sums + sums
            self.squares = squares if self.squares is None else self.squares + squares
            self.count += values.shape[-1]
            raise _Collected
        shape = (b, groups, -1)
        y = (x.reshape(shape) - self.mean.to(x.dtype)[..., None]) * self.inv_std.to(x.dtype)[..., None]
        y = y.reshape(x.shape)
        view = (1, c, *([1] * (x.ndim - 2)))
        return y * self.norm.weight.view(view) + self.norm.bias.view(view)

    def fix(self) -> None:
        """Turn the accumulated sums into the whole-volume mean and 1 / std, and apply them from now on."""
        mean = self.sums / self.count
        var = (self.squares / self.count - mean.pow(2)).clamp_min(0)
        self.mean, self.inv_std = mean.float(), (var + self.norm.eps).rsqrt().float()
        self.sums = self.squares = None
        self.count, self.mode = 0, "apply"


def _tiles(shape: tuple[int, ...], tile: int, overlap: int):
    """(input slices, core slices within the input, core slices in the volume) of each tile, in latent voxels."""
    per_axis = []
    for n in shape:
        axis = []
        for start in range(0, n, tile):
            stop = min(n, start + tile)
            lo, hi = max(0, start - overlap), min(n, stop + overlap)
            axis.append((slice(lo, hi), slice(start - lo, stop - lo), slice(start, stop)))
        per_axis.append(axis)
    for combo in itertools.product(*per_axis):
        yield tuple(c[0] for c in combo), tuple(c[1] for c in combo), tuple(c[2] for c in combo)


def receptive_radius(autoencoder: AutoencoderKL) -> int:
    """How many latent voxels on each side an output voxel of the decoder depends on: the context a tile needs for
    its core to decode exactly (each k-wide convolution adds k // 2 voxels at its resolution, each nearest
    upsampling up to one voxel before it)."""
    radius, scale = 0.0, 1
    for block in autoencoder.decoder.blocks:
        if type(block).__name__ == "UpSample":
            radius += 1.0 / scale
            scale *= 2
        for conv in block.modules():
            if isinstance(conv, (nn.Conv2d, nn.Conv3d)):
                radius += (conv.kernel_size[0] // 2) / scale
    return math.ceil(radius)


@torch.no_grad()
def tiled_decode(autoencoder: AutoencoderKL, z: torch.Tensor, tile: int, overlap: int = 0, cache: bool = False) -> torch.Tensor:
    """Decode latents (B, C, *spatial) in tiles of `tile` latent voxels with `overlap` voxels of context per side
    (0: the decoder's receptive radius, which makes tiles exact), GroupNorms normalising with whole-volume
    statistics. Equals whole decoding to float rounding when the context covers the receptive radius.

    Without `cache` each statistics pass starts from the latents again: memory stays that of one tile plus the output
    whatever the volume, time grows with the number of norms. `cache` keeps every tile's activations (with context)
    between passes, in host memory when decoding on a GPU: every block then runs about twice per tile, but the cache
    holds more than a whole decode would (the context is stored once per tile)."""
    overlap = overlap or receptive_radius(autoencoder)
    decoder = autoencoder.decoder
    originals = [(parent, name, child) for parent in decoder.modules() for name, child in parent.named_children()
                 if isinstance(child, nn.GroupNorm)]
    for parent, name, child in originals:
        setattr(parent, name, WholeVolumeNorm(child))
    blocks = list(decoder.blocks)
    owner = {m: b for b, block in enumerate(blocks) for m in block.modules() if isinstance(m, WholeVolumeNorm)}
    norms = _call_order(autoencoder, list(owner), z)
    tiles = list(_tiles(tuple(z.shape[2:]), tile, overlap))
    store = torch.device("cpu") if cache else None
    progress: list[tuple[int, torch.Tensor | None]] = [(0, None)] * len(tiles)

    def advance(i: int, inputs: tuple[slice, ...], to: int) -> torch.Tensor:
        """Tile i's activations at the input of block `to` (from its cache, or from the latents)."""
        at, h = progress[i] if cache else (0, None)
        h = autoencoder.post_quant_conv(z[(slice(None), slice(None), *inputs)]) if h is None else h.to(z.device)
        for block in blocks[at:to]:
            h = block(h)
        if cache:
            progress[i] = (to, h.to(store))
        return h

    try:
        for norm in norms:                      # one statistics pass per norm, in call order
            norm.mode = "collect"
            for i, (inputs, core, _) in enumerate(tiles):
                norm.core = tuple((c.start / (span.stop - span.start), c.stop / (span.stop - span.start))
                                  for span, c in zip(inputs, core))
                try:
                    blocks[owner[norm]](advance(i, inputs, owner[norm]))
                except _Collected:
                    pass
            norm.fix()
        out = None
        for i, (inputs, core, where) in enumerate(tiles):       # the decoding pass
            piece = advance(i, inputs, len(blocks))
            progress[i] = (0, None)
            factor = piece.shape[2] // (inputs[0].stop - inputs[0].start)
            if out is None:
                out = piece.new_empty((z.shape[0], piece.shape[1], *[n * factor for n in z.shape[2:]]))
            out[(slice(None), slice(None), *[slice(w.start * factor, w.stop * factor) for w in where])] = \
                piece[(slice(None), slice(None), *[slice(c.start * factor, c.stop * factor) for c in core])]
        return out
    finally:
        for parent, name, child in originals:
            setattr(parent, name, child)


def _call_order(autoencoder: AutoencoderKL, norms: list[WholeVolumeNorm], z: torch.Tensor) -> list[WholeVolumeNorm]:
    """The norms in the order the decoder calls them (found on a 2-voxel latent)."""
    order: list[WholeVolumeNorm] = []
    hooks = [n.register_forward_pre_hook(lambda module, args: order.append(module)) for n in norms]
    try:
        autoencoder.decode(z.new_zeros((1, z.shape[1], *([2] * (z.ndim - 2)))))
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(order))


@dataclass
class LatentCodec:
    """Images in [-1, 1] <-> latents scaled to unit variance, on the autoencoder's device."""

    autoencoder: AutoencoderKL
    scale: float
    factor: int
    tile: int = 0
    overlap: int = 0                 # 0: the decoder's receptive radius
    mask_mode: str = "concat"
    cache: bool = False

    @property
    def device(self) -> torch.device:
        return next(self.autoencoder.parameters()).device

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """Scaled latent means (N, latent_channels, *spatial / factor) on the CPU; the mean, never a sample."""
        return torch.cat([self.autoencoder.encode(images[i : i + batch_size].to(self.device))[0].cpu() * self.scale
                          for i in range(0, len(images), batch_size)])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (N, C, *spatial) in [-1, 1] on the CPU; tiled when `tile` is set and smaller than the latent grid."""
        out = []
        for z in latents.split(1):
            z = z.to(self.device) / self.scale
            if self.tile and any(n > self.tile for n in z.shape[2:]):
                out.append(tiled_decode(self.autoencoder, z, self.tile, self.overlap, self.cache).cpu())
            else:
                out.append(self.autoencoder.decode(z).cpu())
        return torch.cat(out).clamp(-1.0, 1.0).float()

    def model_mask(self, one_hot: torch.Tensor | None) -> torch.Tensor | None:
        """What the latent model is conditioned on: the one-hot mask pooled to the latent grid (each channel the share
        of a latent voxel that label covers), or the full-resolution mask a ControlNet embeds itself."""
        if one_hot is None or self.mask_mode == "controlnet":
            return one_hot
        return pool_to_grid(one_hot, self.factor)


def pool_to_grid(one_hot: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, K, *spatial) one-hot -> (B, K, *spatial / factor): each channel the share of a coarse voxel its label covers."""
    return (F.avg_pool3d if one_hot.ndim == 5 else F.avg_pool2d)(one_hot, factor)


def load_codec(state: dict, cfg: LatentConfig, spatial_dims: int, device: torch.device) -> LatentCodec:
    """The stage-1 autoencoder of a checkpoint, decoding whole volumes (generation sets tiling)."""
    autoencoder = build_autoencoder(autoencoder_spec(cfg), spatial_dims, int(state["image_channels"]))
    autoencoder.load_state_dict(state["autoencoder"])
    return LatentCodec(autoencoder.to(device).eval(), float(state["scale_factor"]), cfg.factor, mask_mode=cfg.mask_mode)


def build_controlnet(model: ModelConfig, spatial_dims: int, latent_channels: int, num_labels: int, base: Denoiser,
                     factor: int) -> ControlNet:
    """A MONAI ControlNet matching the latent UNet `base`, conditions included (its class table, summed extra
    conditions or cross-attention to the base's condition tokens); its conditioning embedding takes the
    full-resolution one-hot mask down to the latent grid (one stride-2 convolution per factor of 2)."""
    embed = tuple(min(64, 8 * 2 ** i) for i in range(int(math.log2(factor)) + 1))
    net = ControlNet(spatial_dims=spatial_dims, in_channels=latent_channels, num_res_blocks=model.num_res_blocks,
                     channels=model.channels, attention_levels=model.attention_levels,
                     norm_num_groups=model.norm_num_groups, num_head_channels=model.num_head_channels,
                     num_class_embeds=base.net.num_class_embeds, with_conditioning=base.token_dim is not None,
                     cross_attention_dim=base.token_dim,
                     conditioning_embedding_in_channels=num_labels, conditioning_embedding_num_channels=embed)
    if base.extras and base.token_dim is None:
        net.class_embedding = ConditionEmbedding(net.class_embedding, base.extras, base.covariate)
    return EMBEDDING_MODES[model.embedding_mode](net)


def controlnet_from(base: Denoiser, controlnet: ControlNet) -> ControlNet:
    """Start the ControlNet from the trained UNet's encoder weights (its zero convolutions stay zero), as MAISI does."""
    log = logging.getLogger("monai.networks.utils")   # it logs how many variables it copied at INFO
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        copy_model_state(controlnet, base.net.state_dict())
    finally:
        log.setLevel(level)
    return controlnet


class ControlledDenoiser(nn.Module):
    """A frozen latent Denoiser steered by a ControlNet on the mask: Denoiser's interface, mask at full resolution.

    A study whose mask is all zeros (the "no mask" of classifier-free guidance) gets the base model alone."""

    def __init__(self, base: Denoiser, controlnet: ControlNet) -> None:
        super().__init__()
        self.base, self.controlnet = base, controlnet
        self.num_classes = base.num_classes

    @property
    def null_class(self) -> int:
        return self.base.null_class

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditions | None = None) -> torch.Tensor:
        cond = Conditions() if cond is None else cond
        if cond.mask is None:
            return self.base(x, t, cond)
        kwargs = self.base.class_kwargs(x, cond.classes, cond.extra)
        down, mid = self.controlnet(x, t, controlnet_cond=cond.mask.to(x.dtype), **kwargs)
        on = (cond.mask.flatten(1).amax(1) > 0).to(x.dtype)
        gate = lambda r: r * on.view(-1, *([1] * (r.ndim - 1)))  # noqa: E731
        return self.base.net(x, t, down_block_additional_residuals=[gate(d) for d in down],
                             mid_block_additional_residual=gate(mid), **kwargs)
