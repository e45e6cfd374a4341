"""The latent path's extra stages: stage 1 (AutoencoderKL on the training images, saved with its reconstruction
quality and the latent scale factor), the latent training set stage 2 trains on, and the ControlNet stage (mask
conditioning added to a trained latent model whose weights stay frozen, as MAISI does)."""

from __future__ import annotations

import csv
import dataclasses
import time
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medsynth import provenance
from medsynth.config import Config
from medsynth.diffusion import noise_process
from medsynth.models import Denoiser
from medsynth.models.autoencoder import (build_autoencoder, encode_mean, reconstruction_quality, scale_factor,
                                         train_autoencoder)
from medsynth.models.latent import ControlledDenoiser, LatentCodec, autoencoder_spec, build_controlnet, controlnet_from
from medsynth.progress import StepBar
from medsynth.runs import RunFolder
from medsynth.runs.checkpoint import save_checkpoint
from medsynth.runs.rules import load_autoencoder_stage
from medsynth.training.data import TrainingSet
from medsynth.training.distributed import Processes
from medsynth.training.loop import MetricsLog, draw_batch, optimisation, step_generator, training_step
from medsynth.training.preview import preview
from medsynth.viz import save_grid

@dataclass
class Stage1:
    """A latent run's autoencoder, ready for stage 2: the codec, its checkpoint, and what to report."""

    codec: LatentCodec
    state: dict
    latents: torch.Tensor | None = None   # the training images' scaled latents, when stage 1 just computed them
    notes: list[str] = field(default_factory=list)

def autoencoder_stage(run: Path, cfg: Config, ts: TrainingSet, fingerprint: str, procs: Processes, reuse: bool,
                      show_progress: bool) -> Stage1:
    """Stage 1 trained now by the first process (the others wait and load it, so all share one latent space), or the
    run's own when `reuse` and it exists."""
    trained_before = RunFolder(run).autoencoder.is_file() and reuse
    if not trained_before and procs.main:
        stage1 = train_autoencoder_stage(run, cfg, ts, fingerprint, procs.device, show_progress)
    procs.barrier()
    if trained_before or not procs.main:
        return Stage1(*load_autoencoder_stage(run, cfg, fingerprint, procs.device))
    return stage1

def train_autoencoder_stage(run: Path, cfg: Config, ts: TrainingSet, fingerprint: str, device: torch.device,
                            show_progress: bool) -> Stage1:
    """Train stage 1 on the training images; save it with its quality, scale factor, L1 curve and a reconstruction
    grid."""
    lat, folder = cfg.latent, RunFolder(run)
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
    save_checkpoint(folder.autoencoder, state)
    with open(folder.metrics("autoencoder"), "w", newline="") as handle:
        csv.writer(handle).writerows([("step", "l1"), *((k + 1, f"{v:.6f}") for k, v in enumerate(history))])
    codec = LatentCodec(autoencoder.eval(), state["scale_factor"], lat.factor, mask_mode=lat.mask_mode)
    shown = sample[:4]
    recon = codec.decode(codec.encode(shown))
    save_grid(folder.samples("autoencoder.png"), torch.cat([shown, recon]).numpy(),
              [f"real {k}" for k in range(len(shown))] + [f"reconstruction {k}" for k in range(len(shown))])
    q = state["quality"]
    note = (f"autoencoder: {lat.steps} steps in {seconds:.0f} s, reconstruction PSNR {q['psnr']:.1f} dB, SSIM "
            f"{q['ssim']:.3f} (training studies); latents {'x'.join(map(str, state['latent_shape']))}, scale factor "
            f"{state['scale_factor']:.3f}")
    return Stage1(codec, state, latents * state["scale_factor"], [note])

def latent_training_set(ts: TrainingSet, codec: LatentCodec, with_masks: bool,
                        latents: torch.Tensor | None = None) -> TrainingSet:
    """The training set stage 2 sees: scaled latent means instead of images (computed once); masks stay at full
    resolution and are pooled to the latent grid when drawn (concat), or kept full-size for a ControlNet."""
    latents = codec.encode(ts.images) if latents is None else latents   # stage 1 may have just computed them
    if not with_masks:
        return dataclasses.replace(ts, images=latents, labels=None, num_labels=0)
    pool = codec.factor if codec.mask_mode == "concat" else 1
    return dataclasses.replace(ts, images=latents, mask_pool=pool)

def latent_meta(run: Path, stage1: Stage1, cfg: Config) -> dict:
    """What a latent run's diffusion checkpoint records about stage 1 (its file hash names the exact weights)."""
    return {"channels": int(cfg.latent.latent_channels), "shape": list(cfg.model_shape), "factor": stage1.codec.factor,
            "scale_factor": stage1.codec.scale, "mask_mode": cfg.latent.mask_mode, "quality": stage1.state["quality"],
            "autoencoder_sha256": provenance.sha256_file(RunFolder(run).autoencoder)}

def train_controlnet(run: Path, cfg: Config, ts: TrainingSet, base: Denoiser, base_sha256: str, device: torch.device,
                     show_progress: bool) -> tuple[dict, ControlledDenoiser]:
    """Train a ControlNet on the full-resolution masks with the latent model frozen; save its EMA weights.

    `ts` holds latents and full-resolution label maps. Every drawn study keeps its mask (the frozen model is the
    unconditioned branch of guidance already). Not resumable mid-stage: an interrupted stage starts again."""
    lat, steps, folder = cfg.latent, cfg.latent.controlnet_steps, RunFolder(run)
    torch.manual_seed(cfg.train.seed + 1)
    base = base.to(device).eval().requires_grad_(False)
    controlnet = controlnet_from(base, build_controlnet(cfg.model, cfg.spatial_dims, ts.images.shape[1], ts.num_labels,
                                                        base, lat.factor)).to(device)
    model = ControlledDenoiser(base, controlnet)
    opt = optimisation(controlnet, deepcopy(controlnet).requires_grad_(False), lat.controlnet_lr,
                       cfg.train.weight_decay, min(cfg.train.warmup_steps, steps // 4 + 1), steps)
    draw_cfg = dataclasses.replace(cfg, conditioning=dataclasses.replace(cfg.conditioning, mask_dropout=0.0))
    process = noise_process(cfg.diffusion)
    log = MetricsLog(folder.metrics("controlnet"), enabled=True)
    bar = StepBar(steps, 0, enabled=show_progress)
    controlnet.train()
    try:
        for step in range(steps):
            batch = draw_batch(ts, draw_cfg, process, step_generator(cfg.train.seed + 1, step), base.null_class)
            loss = training_step(model, opt, batch, process, cfg, step, device)
            log.add(step + 1, loss, opt.scheduler.get_last_lr()[0], cfg.train.batch_size)
            bar.update(step + 1, log.last_loss, log.samples_per_s)
    finally:
        bar.close()
        log.flush()
    state = {"format": "medsynth-controlnet/1", "config": cfg.to_dict(), "versions": provenance.versions(),
             "base_sha256": base_sha256, "steps": steps, "seed": cfg.train.seed + 1, "loss": log.last_loss,
             "controlnet": opt.ema.state_dict()}
    save_checkpoint(folder.controlnet, state)
    return state, ControlledDenoiser(base, opt.ema.eval())

def controlnet_stage(run: Path, cfg: Config, image_ts: TrainingSet, latent_ts: TrainingSet, ema: Denoiser,
                     codec: LatentCodec, dev: torch.device, show_progress: bool, step: int) -> tuple[dict, str]:
    """Train the ControlNet on the finished latent model's EMA weights, then preview mask-conditioned samples.
    Returns its checkpoint and the line that reports it."""
    folder = RunFolder(run)
    masks_ts = dataclasses.replace(latent_ts, labels=image_ts.labels, num_labels=image_ts.num_labels)
    state, controlled = train_controlnet(run, cfg, masks_ts, ema, provenance.sha256_file(folder.checkpoint), dev,
                                         show_progress)
    preview(controlled, cfg, masks_ts, folder.samples("controlnet.png"), step, dev, codec)
    return state, f"controlnet: {state['steps']} steps on the frozen latent model, loss {state['loss']:.4f}"
