"""The latent path's extra stages: stage 1 (AutoencoderKL on the training images, saved with its reconstruction
quality and the latent scale factor), the latent training set stage 2 trains on, and the ControlNet stage (mask
conditioning added to a trained latent model whose weights stay frozen, as MAISI does)."""

from __future__ import annotations

import csv
import dataclasses
import time
from copy import deepcopy
from pathlib import Path

import torch

from medsynth import provenance
from medsynth.config import Config
from medsynth.diffusion import NoiseProcess
from medsynth.errors import MedsynthError
from medsynth.models import Denoiser
from medsynth.models.autoencoder import (build_autoencoder, encode_mean, reconstruction_quality, scale_factor,
                                         train_autoencoder)
from medsynth.models.latent import (ControlledDenoiser, LatentCodec, autoencoder_spec, build_controlnet,
                                    controlnet_from, load_codec)
from medsynth.progress import StepBar
from medsynth.training.checkpoint import load_checkpoint, save_checkpoint
from medsynth.training.data import TrainingSet
from medsynth.training.run_dir import DECODE_KEYS
from medsynth.viz import save_grid

AUTOENCODER = "checkpoints/autoencoder.pt"
CONTROLNET = "checkpoints/controlnet.pt"
STAGES = ("all", "autoencoder", "diffusion", "controlnet")


def train_autoencoder_stage(run: Path, cfg: Config, ts: TrainingSet, fingerprint: str, device: torch.device,
                            show_progress: bool) -> tuple[LatentCodec, dict, torch.Tensor]:
    """Train stage 1 on the training images; save it with its quality, scale factor, L1 curve and a reconstruction
    grid. Returns the codec, the saved state and the training images' scaled latents (stage 2's inputs)."""
    lat = cfg.latent
    torch.manual_seed(cfg.train.seed)
    autoencoder = build_autoencoder(autoencoder_spec(lat), cfg.spatial_dims, ts.images.shape[1]).to(device)
    start = time.monotonic()
    history = train_autoencoder(autoencoder, ts.images, lat.steps, lat.batch_size, lat.lr, lat.kl_weight,
                                cfg.train.seed, show_progress, lat.adversarial_weight, lat.adversarial_start)
    seconds = time.monotonic() - start
    sample = ts.images[: min(32, len(ts))]
    quality = reconstruction_quality(autoencoder, sample)
    latents = encode_mean(autoencoder, ts.images)
    state = {
        "format": "medsynth-autoencoder/1", "config": cfg.to_dict(), "versions": provenance.versions(),
        "catalog_fingerprint": fingerprint, "seed": cfg.train.seed, "steps": lat.steps, "seconds": seconds,
        "image_channels": int(ts.images.shape[1]), "latent_shape": list(latents.shape[1:]),
        "scale_factor": scale_factor(latents), "quality": {**quality, "studies": len(sample), "split": "train"},
        "autoencoder": autoencoder.state_dict(),
    }
    save_checkpoint(run / AUTOENCODER, state)
    with open(run / "autoencoder_metrics.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("step", "l1"), *((k + 1, f"{v:.6f}") for k, v in enumerate(history))])
    codec = LatentCodec(autoencoder.eval(), state["scale_factor"], lat.factor, lat.tile, lat.tile_overlap, lat.mask_mode,
                        lat.tile_cache)
    shown = sample[:4]
    recon = codec.decode(codec.encode(shown))
    save_grid(run / "samples" / "autoencoder.png", torch.cat([shown, recon]).numpy(),
              [f"real {k}" for k in range(len(shown))] + [f"reconstruction {k}" for k in range(len(shown))])
    return codec, state, latents * state["scale_factor"]


def load_autoencoder_stage(run: Path, cfg: Config, fingerprint: str, device: torch.device) -> tuple[LatentCodec, dict]:
    """The stage-1 checkpoint of `run`, provided it was trained with this config's autoencoder on the same data."""
    path = run / AUTOENCODER
    if not path.is_file():
        raise MedsynthError(f"{run} holds no trained autoencoder ({AUTOENCODER}); train stage 1 first "
                            "(--stage autoencoder or --stage all).")
    state = load_checkpoint(path)
    if stage1_keys(state["config"]) != stage1_keys(cfg.to_dict()) or state["catalog_fingerprint"] != fingerprint:
        raise MedsynthError(f"the autoencoder in {run} was trained with another latent config or other data; "
                            "use the run's own config.yaml or retrain stage 1 (--stage autoencoder --overwrite).")
    return load_codec(state, cfg.latent, cfg.spatial_dims, device), state


# latent keys that do not change what stage 1 learns (decoding and the later stages)
LATER_KEYS = DECODE_KEYS + ("mask_mode", "controlnet_steps", "controlnet_lr")


def stage1_keys(config: dict) -> dict:
    """What a trained autoencoder depends on: the data and the stage-1 part of the latent config."""
    return {"data": config["data"], "latent": {k: v for k, v in config.get("latent", {}).items() if k not in LATER_KEYS}}


def latent_training_set(ts: TrainingSet, codec: LatentCodec, with_masks: bool,
                        latents: torch.Tensor | None = None) -> TrainingSet:
    """The training set stage 2 sees: scaled latent means instead of images (computed once); masks stay at full
    resolution and are pooled to the latent grid when drawn (concat), or kept full-size for a ControlNet."""
    latents = codec.encode(ts.images) if latents is None else latents   # stage 1 may have just computed them
    if not with_masks:
        return dataclasses.replace(ts, images=latents, labels=None, num_labels=0)
    pool = codec.factor if codec.mask_mode == "concat" else 1
    return dataclasses.replace(ts, images=latents, mask_pool=pool)


def latent_meta(run: Path, codec: LatentCodec, ae_state: dict, cfg: Config) -> dict:
    """What a latent run's diffusion checkpoint records about stage 1 (its file hash names the exact weights)."""
    return {"channels": int(cfg.latent.latent_channels), "shape": list(cfg.model_shape), "factor": codec.factor,
            "scale_factor": codec.scale, "mask_mode": cfg.latent.mask_mode, "quality": ae_state["quality"],
            "autoencoder_sha256": provenance.sha256_file(run / AUTOENCODER)}


def train_controlnet(run: Path, cfg: Config, ts: TrainingSet, base: Denoiser, base_sha256: str, device: torch.device,
                     show_progress: bool) -> tuple[dict, ControlledDenoiser]:
    """Train a ControlNet on the full-resolution masks with the latent model frozen; save its EMA weights.

    `ts` holds latents and full-resolution label maps. Every drawn study keeps its mask (the frozen model is the
    unconditioned branch of guidance already). Not resumable mid-stage: an interrupted stage starts again."""
    from medsynth.training.trainer import MetricsLog, draw_batch, lr_factor, step_generator, training_step

    lat, steps = cfg.latent, cfg.latent.controlnet_steps
    torch.manual_seed(cfg.train.seed + 1)
    base = base.to(device).eval().requires_grad_(False)
    controlnet = controlnet_from(base, build_controlnet(cfg.model, cfg.spatial_dims, ts.images.shape[1], ts.num_labels,
                                                        len(ts.class_names), lat.factor)).to(device)
    model = ControlledDenoiser(base, controlnet)
    ema = deepcopy(controlnet).requires_grad_(False)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=lat.controlnet_lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, min(cfg.train.warmup_steps, steps // 4 + 1), steps))
    draw_cfg = dataclasses.replace(cfg, conditioning=dataclasses.replace(cfg.conditioning, mask_dropout=0.0))
    process = NoiseProcess(cfg.diffusion)
    log = MetricsLog(run / "controlnet_metrics.csv", enabled=True)
    bar = StepBar(steps, 0, enabled=show_progress)
    controlnet.train()
    try:
        for step in range(steps):
            batch = draw_batch(ts, draw_cfg, process, step_generator(cfg.train.seed + 1, step), base.null_class)
            loss = training_step(model, controlnet, ema, batch, process, optimizer, scheduler, cfg, step, device)
            log.add(step + 1, loss, scheduler.get_last_lr()[0], cfg.train.batch_size)
            bar.update(step + 1, log.last_loss, log.samples_per_s)
    finally:
        bar.close()
        log.flush()
    state = {"format": "medsynth-controlnet/1", "config": cfg.to_dict(), "versions": provenance.versions(),
             "base_sha256": base_sha256, "steps": steps, "seed": cfg.train.seed + 1, "loss": log.last_loss,
             "controlnet": ema.state_dict()}
    save_checkpoint(run / CONTROLNET, state)
    return state, ControlledDenoiser(base, ema.eval())


def load_controlnet(run: Path, cfg: Config, base: Denoiser, base_sha256: str, num_labels: int) -> ControlledDenoiser:
    path = run / CONTROLNET
    if not path.is_file():
        raise MedsynthError(f"{run} is a ControlNet-conditioned latent run whose ControlNet is not trained yet; "
                            "train it with `medsynth train ... --stage controlnet`.")
    state = load_checkpoint(path)
    if state["base_sha256"] != base_sha256:
        raise MedsynthError(f"the ControlNet in {run} was trained on another latent model than the run's last checkpoint; "
                            "retrain it with `medsynth train ... --stage controlnet`.")
    controlnet = build_controlnet(cfg.model, cfg.spatial_dims, cfg.latent.latent_channels, num_labels, base.num_classes,
                                  cfg.latent.factor)
    controlnet.load_state_dict(state["controlnet"])
    return ControlledDenoiser(base, controlnet)
