"""The training loop: conditional diffusion on a catalog's train split, read top to bottom in `train`."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import signal
import time
from collections import deque
from contextlib import contextmanager, nullcontext
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medsynth import provenance
from medsynth.config import Config
from medsynth.data.catalog import catalog_fingerprint
from medsynth.diffusion import NoiseProcess, sample
from medsynth.errors import MedsynthError
from medsynth.models import Denoiser, build_denoiser
from medsynth.models.latent import LatentCodec
from medsynth.progress import StepBar
from medsynth.training.checkpoint import run_checkpoint, save_checkpoint
from medsynth.training.data import (TrainingSet, check_conditioning, intensity_stats, load_training_set, open_catalog,
                                    save_mask_bank)
from medsynth.training.latent import (AUTOENCODER, STAGES, latent_meta, latent_training_set, load_autoencoder_stage,
                                      train_autoencoder_stage, train_controlnet)
from medsynth.training.run_dir import resume_state, start_run, write_config
from medsynth.viz import save_grid


class Interrupted(MedsynthError):
    """Training stopped by Ctrl-C or SIGTERM after saving its last checkpoint."""


@dataclass
class TrainResult:
    run: Path
    step: int
    finished: bool
    loss: float
    samples_per_s: float
    notes: list[str] = dataclasses.field(default_factory=list)   # one line per latent stage trained


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MedsynthError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto.")
    if name != "cpu" and not name.startswith("cuda"):
        raise MedsynthError(f"--device must be auto, cpu or cuda, got {name!r}.")
    return torch.device(name)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The random stream of one training step: batch k depends only on (seed, step, rank), so resume is exact."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def ema_update(ema: Denoiser, model: Denoiser, step: int, decay: float) -> None:
    """EMA with warm-up, decay min(decay, (1 + step) / (10 + step)), so short runs are not dominated by init."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - d)


def draw_batch(ts: TrainingSet, cfg: Config, process: NoiseProcess, g: torch.Generator, null_class: int):
    """Clean images, noise, timesteps and conditions of one batch, with condition dropout for guidance."""
    index = torch.randint(0, len(ts), (cfg.train.batch_size,), generator=g)
    x0 = ts.images[index]
    noise = torch.randn(x0.shape, generator=g)
    t = process.sample_timesteps(x0.shape[0], g)
    classes = mask = None
    if ts.classes is not None:
        classes = ts.classes[index].clone()
        classes[torch.rand(len(index), generator=g) < cfg.conditioning.class_dropout] = null_class
    if ts.labels is not None:
        mask = ts.one_hot(index)
        keep = torch.rand(len(index), generator=g) >= cfg.conditioning.mask_dropout
        mask *= keep.view(-1, *([1] * (mask.ndim - 1)))
    for axis in cfg.train.flip_axes:  # drawn last, so runs without flips keep their random stream
        flip = (torch.rand(len(index), generator=g) < 0.5).view(-1, *([1] * (x0.ndim - 1)))
        x0 = torch.where(flip, x0.flip(2 + axis), x0)
        if mask is not None:
            mask = torch.where(flip, mask.flip(2 + axis), mask)
    return x0, noise, t, classes, mask


def training_step(net: nn.Module, trained: nn.Module, ema: nn.Module, batch, process: NoiseProcess,
                  optimizer: torch.optim.Optimizer, scheduler, cfg: Config, step: int, dev: torch.device,
                  autocast=nullcontext(), channels_last: bool = False) -> float:
    """One optimisation step on a drawn batch: noisy input, prediction by `net`, MSE to the process's target, clipped
    AdamW step on `trained`'s parameters, learning-rate schedule, EMA of `trained` into `ema`. Returns the loss."""
    x0, noise, t, classes, mask = batch
    x_t, target, t = process.noisy(x0, noise, t).to(dev), process.target(x0, noise, t).to(dev), t.to(dev)
    if channels_last:
        x_t = x_t.contiguous(memory_format=torch.channels_last_3d if x_t.ndim == 5 else torch.channels_last)
    with autocast:
        prediction = net(x_t, t, classes.to(dev) if classes is not None else None,
                         mask.to(dev) if mask is not None else None)
    loss = F.mse_loss(prediction.float(), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trained.parameters(), cfg.train.grad_clip)
    optimizer.step()
    scheduler.step()
    ema_update(ema, trained, step, cfg.train.ema_decay)
    return loss.item()


def train(cfg: Config, data: str | Path, out: str | Path, *, labels: str | Path | None = None, resume: bool = False,
          overwrite: bool = False, device: str = "auto", show_progress: bool = True,
          config_source: str | None = None, stop_at: int | None = None, stage: str = "all") -> TrainResult:
    """Train a conditional diffusion model; checkpoints, metrics.csv and sample grids go to `out`.

    `stop_at` pauses the run after that many steps (checkpoint saved, not finished); `resume=True` continues it
    exactly as if it had not stopped. Latent runs (`latent.enabled`) train the autoencoder first, then the diffusion
    model on its latents, then (mask_mode controlnet) a ControlNet; `stage` runs one of them on its own.
    """
    world, rank, local_rank = (int(os.environ.get(k, d)) for k, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))
    dev = resolve_device(device)
    if stage not in STAGES:
        raise MedsynthError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}.")
    if stage != "all" and not cfg.latent.enabled:
        raise MedsynthError(f"--stage {stage} applies to latent runs only (latent.enabled: true); drop --stage.")
    if stage == "controlnet" and cfg.latent.mask_mode != "controlnet":
        raise MedsynthError("--stage controlnet needs latent.mask_mode: controlnet in the config.")
    if world > 1:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        dev = torch.device(f"cuda:{local_rank}") if dev.type == "cuda" else dev
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    run = Path(out).expanduser().resolve()

    # Data and checks: everything that can refuse the run happens before anything is written.
    cat = open_catalog(data, cfg, labels)
    check_conditioning(cat, cfg)
    fingerprint = catalog_fingerprint(cat.catalog)
    later_stage = stage in ("diffusion", "controlnet")
    state = resume_state(run, cfg, fingerprint, stage, resume)
    ts = load_training_set(cat, cfg, show_progress and rank == 0)
    if not (resume or later_stage) and rank == 0:
        start_run(run, cfg, cat, fingerprint, overwrite, config_source)
        if ts.labels is not None:
            save_mask_bank(run / "mask_bank.npz", ts)
    elif stage == "diffusion" and state is None and rank == 0:
        write_config(run, cfg)   # a fresh stage 2 may differ from stage 1's config in its later-stage settings
    meta = checkpoint_meta(cfg, ts, fingerprint, cat.source)

    # Latent runs: stage 1 (trained now, or the run's own), then the training set becomes scaled latent means.
    codec, image_ts, notes, latents = None, ts, [], None
    if cfg.latent.enabled:
        trained_before = (run / AUTOENCODER).is_file() and (resume or later_stage)
        if not trained_before and rank == 0:
            codec, ae_state, latents = train_autoencoder_stage(run, cfg, ts, fingerprint, dev, show_progress)
        if world > 1:
            dist.barrier()   # under torchrun the other processes wait for the first one's autoencoder
        if trained_before or rank != 0:
            codec, ae_state = load_autoencoder_stage(run, cfg, fingerprint, dev)
        else:
            q = ae_state["quality"]
            notes.append(f"autoencoder: {cfg.latent.steps} steps in {ae_state['seconds']:.0f} s, reconstruction PSNR "
                         f"{q['psnr']:.1f} dB, SSIM {q['ssim']:.3f} (training studies); latents "
                         f"{'x'.join(map(str, ae_state['latent_shape']))}, scale factor {ae_state['scale_factor']:.3f}")
        if stage == "autoencoder":
            return TrainResult(run, cfg.latent.steps, True, float("nan"), 0.0, notes)
        meta["latent"] = latent_meta(run, codec, ae_state, cfg)
        ts = latent_training_set(ts, codec, with_masks=cfg.latent.mask_mode == "concat", latents=latents)
    meta["model_channels"], meta["model_mask_channels"] = int(ts.images.shape[1]), ts.num_labels

    # Model, EMA copy, optimiser, learning-rate schedule, noise process.
    torch.manual_seed(cfg.train.seed)
    model = build_denoiser(cfg.model, cfg.spatial_dims, ts.images.shape[1], ts.num_labels, len(ts.class_names)).to(dev)
    channels_last = dev.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d if cfg.spatial_dims == 3 else torch.channels_last)
    ema = deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.train.warmup_steps, cfg.train.max_steps))
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
    if stage == "controlnet":
        return controlnet_stage(run, cfg, image_ts, ts, ema, codec, dev, show_progress, step, notes)
    net = DistributedDataParallel(model, device_ids=[local_rank] if dev.type == "cuda" else None) if world > 1 else model
    process = NoiseProcess(cfg.diffusion)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()

    def checkpoint(finished: bool) -> None:
        if rank == 0:
            save_checkpoint(run_checkpoint(run), {
                **meta, "step": step, "finished": finished, "model": model.state_dict(), "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})

    # The loop.
    deadline = time.monotonic() + 60 * cfg.train.max_minutes if cfg.train.max_minutes else math.inf
    log = MetricsLog(run / "metrics.csv", enabled=rank == 0)
    bar = StepBar(cfg.train.max_steps, step, enabled=show_progress and rank == 0)
    finished, last_step = False, min(cfg.train.max_steps, stop_at or cfg.train.max_steps)
    try:
        with stop_on_sigterm():
            while step < last_step and time.monotonic() < deadline:
                batch = draw_batch(ts, cfg, process, step_generator(cfg.train.seed, step, rank), model.null_class)
                loss = training_step(net, model, ema, batch, process, optimizer, scheduler, cfg, step, dev, autocast,
                                     channels_last)
                step += 1
                log.add(step, loss, scheduler.get_last_lr()[0], cfg.train.batch_size * world)
                bar.update(step, log.last_loss, log.samples_per_s)
                if step % cfg.train.log_every == 0:
                    log.flush()
                if rank == 0 and cfg.train.sample_every and step % cfg.train.sample_every == 0:
                    preview(ema, cfg, ts, run / "samples" / f"step_{step:06d}.png", step, dev, codec)
                if step % cfg.train.checkpoint_every == 0:
                    checkpoint(False)
        finished = step >= cfg.train.max_steps or time.monotonic() >= deadline
    except KeyboardInterrupt:
        checkpoint(False)
        log.flush()
        raise Interrupted(f"interrupted at step {step}; the last checkpoint is saved in {run_checkpoint(run)}. "
                          f"Continue with the same command plus --resume.") from None
    finally:
        bar.close()
    log.flush()
    checkpoint(finished)
    if rank == 0:
        preview(ema, cfg, ts, run / "samples" / "final.png", step, dev, codec)
    if world > 1:
        dist.destroy_process_group()
    if finished and stage == "all" and cfg.latent.enabled and cfg.latent.mask_mode == "controlnet" and rank == 0:
        controlnet_stage(run, cfg, image_ts, ts, ema, codec, dev, show_progress, step, notes)
    return TrainResult(run, step, finished, log.last_loss, log.samples_per_s, notes)


def controlnet_stage(run: Path, cfg: Config, image_ts: TrainingSet, latent_ts: TrainingSet, ema: Denoiser,
                     codec: LatentCodec, dev: torch.device, show_progress: bool, step: int, notes: list[str]) -> TrainResult:
    """Train the ControlNet on the finished latent model's EMA weights, then preview mask-conditioned samples."""
    masks_ts = dataclasses.replace(latent_ts, labels=image_ts.labels, num_labels=image_ts.num_labels)
    state, controlled = train_controlnet(run, cfg, masks_ts, ema, provenance.sha256_file(run_checkpoint(run)), dev,
                                         show_progress)
    preview(controlled, cfg, masks_ts, run / "samples" / "controlnet.png", step, dev, codec)
    notes.append(f"controlnet: {state['steps']} steps on the frozen latent model, loss {state['loss']:.4f}")
    return TrainResult(run, step, True, float(state["loss"]), 0.0, notes)


def checkpoint_meta(cfg: Config, ts: TrainingSet, fingerprint: str, source: str) -> dict:
    """What a checkpoint carries besides weights: enough to generate and to trace where it came from."""
    counts = torch.bincount(ts.classes, minlength=len(ts.class_names)).tolist() if ts.classes is not None else []
    return {
        "format": "medsynth-checkpoint/1", "config": cfg.to_dict(), "versions": provenance.versions(),
        "catalog_fingerprint": fingerprint, "data_source": source, "seed": cfg.train.seed,
        "class_names": list(ts.class_names), "class_counts": counts, "num_labels": ts.num_labels,
        "label_names": {str(k): v for k, v in ts.label_names.items()} if ts.num_labels else {},
        "image_channels": int(ts.images.shape[1]), "modality": ts.modality, "spacing": ts.spacing,
        "shape": list(cfg.data.shape), "intensity_lo": ts.intensity_lo, "intensity_hi": ts.intensity_hi,
        "intensity_stats": intensity_stats(ts),
    }


@torch.no_grad()
def preview(model: Denoiser, cfg: Config, ts: TrainingSet, path: Path, step: int, device: torch.device,
            codec: LatentCodec | None = None, n: int = 8) -> None:
    """A PNG grid of EMA samples (decoded, for latent runs): classes in turn; masks from the first training studies."""
    model.eval()
    n = min(n, len(ts)) if ts.labels is not None else n
    classes = torch.arange(n) % len(ts.class_names) if ts.class_names else None
    mask = ts.one_hot(torch.arange(n)) if ts.labels is not None else None
    images = sample(model, cfg.diffusion, ts.images.shape[1:], [torch.Generator().manual_seed(k) for k in range(n)],
                    classes, mask, device=device, clip=codec is None)
    if codec is not None:
        images = codec.decode(images)
    titles = [f"{ts.class_names[int(c)]} @{step}" for c in classes] if classes is not None else [f"@{step}"] * n
    save_grid(path, images.numpy(), titles, ts.labels[:n].numpy() if ts.labels is not None else None)
    model.train()


class MetricsLog:
    """metrics.csv (step, loss, lr, samples_per_s, elapsed_s), appended every log interval."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled, self.rows = path, enabled, []
        self.start = self.window_start = time.monotonic()
        self.window_samples, self.last_loss, self.samples_per_s = 0, float("nan"), 0.0
        self.losses: deque[float] = deque(maxlen=20)  # the window last_loss averages

    def add(self, step: int, loss: float, lr: float, samples: int) -> None:
        self.losses.append(loss)
        self.window_samples += samples
        self.last_loss = float(np.mean(self.losses))
        elapsed = time.monotonic() - self.window_start
        if elapsed > 0:
            self.samples_per_s = self.window_samples / elapsed
        self.rows.append((step, loss, lr, self.samples_per_s, time.monotonic() - self.start))

    def flush(self) -> None:
        if not self.enabled or not self.rows:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "loss", "lr", "samples_per_s", "elapsed_s"])
            writer.writerows((s, f"{l:.6f}", f"{r:.3e}", f"{sps:.2f}", f"{e:.1f}") for s, l, r, sps, e in self.rows)
        self.rows = []
        self.window_start, self.window_samples = time.monotonic(), 0


@contextmanager
def stop_on_sigterm():
    """Turn SIGTERM (kill) into KeyboardInterrupt so a killed run still saves its last checkpoint."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
