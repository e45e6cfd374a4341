"""The training run, read top to bottom in `train`: checks, the run folder, the latent stages, then the loop.

The step itself (batch draw, loss, clipped step, EMA, learning-rate factor, metrics) lives in loop.py and is shared
with the ControlNet stage; the latent stages in latent.py; process-group set-up in distributed.py; the run folder's
files in medsynth.runs.
"""

from __future__ import annotations

import math
import secrets
import shutil
import time
from contextlib import nullcontext
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medsynth import provenance
from medsynth.config import Config
from medsynth.data.catalog import catalog_fingerprint
from medsynth.diffusion import noise_process
from medsynth.errors import Interrupted, MedsynthError
from medsynth.models import build_denoiser
from medsynth.models.latent import LatentCodec
from medsynth.outputs import check_output_dir
from medsynth.progress import StepBar
from medsynth.runs import RunFolder
from medsynth.runs.checkpoint import save_checkpoint
from medsynth.runs.lineage import keyed_fingerprint, spend_summary
from medsynth.runs.rules import check_stage, resume_state
from medsynth.runtime import resolve_device, stop_on_signals
from medsynth.training.data import (Catalogued, TrainingSet, check_conditioning, intensity_stats, load_training_set,
                                    open_catalog)
from medsynth.training.distributed import Processes
from medsynth.training.init_from import Parent, freeze_untrained, read_parent
from medsynth.training.latent import autoencoder_stage, controlnet_stage, latent_meta, latent_training_set
from medsynth.training.loop import MetricsLog, Optimisation, draw_batch, optimisation, step_generator, training_step
from medsynth.training.preview import preview
from medsynth.training.private import PrivacyPlan, PrivateStep, stored_statistics


@dataclass(frozen=True)
class Lineage:
    """Where a run's weights start (a parent run, or fresh) and the privacy plan they are trained under (or none)."""

    parent: Parent | None = None
    plan: PrivacyPlan | None = None
    stored: tuple[str, ...] = ()      # non-private statistics a private checkpoint would store
    fingerprint_key: str | None = None   # a private run's key for the catalog fingerprint it shows (run.json only)

    def shown(self, fingerprint: str) -> str:
        """The catalog fingerprint the checkpoint and every output carry: keyed for a private run."""
        return keyed_fingerprint(fingerprint, self.fingerprint_key) if self.fingerprint_key else fingerprint

    @classmethod
    def of(cls, cfg: Config, ts: TrainingSet, procs: Processes, state: dict | None, run: Path) -> "Lineage":
        """Read the parent and plan the privacy budget: both can refuse the run before anything is written."""
        parent = read_parent(cfg, int(ts.images.shape[1]), ts.num_labels, ts.class_names, ts.label_ids) \
            if state is None else (Parent(state["parent"], {}) if state.get("parent") else None)
        if not cfg.train.dp.enabled:
            return cls(parent)
        if procs.world > 1:
            raise MedsynthError("train.dp trains in one process; launch it without torchrun.")
        plan = PrivacyPlan.for_run(cfg, len(ts))
        before = (state or {}).get("privacy")
        if before and before["steps"] != plan.steps:
            raise MedsynthError(f"a private run's budget is spent over its max_steps ({before['steps']}); it cannot "
                                f"change to {plan.steps} on resume. Resume with train.max_steps={before['steps']}.")
        key = RunFolder(run).read_record()["fingerprint_key"] if state else secrets.token_hex(16)
        return cls(parent, plan, tuple(stored_statistics(cfg, ts.modality)), key)

    def notes(self, step: int) -> list[str]:
        """What the CLI tells the user about the parent and the privacy spent."""
        found = []
        if self.parent is not None:
            rec = self.parent.record
            fresh, trained = rec["fresh_layers"], rec.get("trained_parameters")
            found.append(f"started from {rec['run']} ({rec['weights']} weights"
                         + (f"; fresh: {'; '.join(fresh)}" if fresh else "")
                         + (f"; trained {trained:,} of {rec['all_parameters']:,} parameters" if trained else "") + ")")
        if self.plan is not None:
            found.append("privacy: " + spend_summary(self.plan.record(step, list(self.stored))))
        return found

    def records(self, step: int) -> dict:
        """What run.json and each checkpoint carry: the parent and the privacy spent after `step` steps."""
        parent = (self.parent.record if self.parent else None)
        return {**({"parent": parent} if parent else {}),
                **({"privacy": self.plan.record(step, list(self.stored))} if self.plan else {})}


@dataclass
class TrainResult:
    run: Path
    step: int
    finished: bool
    loss: float
    samples_per_s: float
    notes: list[str] = field(default_factory=list)   # one line per latent stage trained


def train(cfg: Config, data: str | Path, out: str | Path, *, labels: str | Path | None = None, resume: bool = False,
          overwrite: bool = False, device: str = "auto", show_progress: bool = True,
          config_source: str | None = None, stop_at: int | None = None, stage: str = "all") -> TrainResult:
    """Train a conditional diffusion model; checkpoints, metrics.csv and sample grids go to `out`.

    `stop_at` pauses the run after that many steps (checkpoint saved, not finished); `resume=True` continues it
    exactly as if it had not stopped. Latent runs (`latent.enabled`) train the autoencoder first, then the diffusion
    model on its latents, then (mask_mode controlnet) a ControlNet; `stage` runs one of them on its own.
    """
    dev = resolve_device(device)
    check_stage(stage, cfg)
    procs = Processes.start(dev)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    run = Path(out).expanduser().resolve()

    # Data and checks: everything that can refuse the run happens before anything is written.
    cat = open_catalog(data, cfg, labels)
    check_conditioning(cat, cfg)
    fingerprint = catalog_fingerprint(cat.catalog)
    later_stage = stage in ("diffusion", "controlnet")
    state = resume_state(run, cfg, fingerprint, stage, resume)
    ts = load_training_set(cat, cfg, show_progress and procs.main)
    lineage = Lineage.of(cfg, ts, procs, state, run)
    if procs.main:
        prepare_folder(run, cfg, cat, ts, fingerprint, fresh=not (resume or later_stage),
                       new_stage2=stage == "diffusion" and state is None, overwrite=overwrite,
                       config_source=config_source, lineage=lineage)
    meta = checkpoint_meta(cfg, ts, lineage.shown(fingerprint), cat.source, lineage)

    # Latent runs: stage 1 (trained now, or the run's own), then the training set becomes scaled latent means.
    image_ts, codec, notes = ts, None, []
    if cfg.latent.enabled:
        stage1 = autoencoder_stage(run, cfg, ts, fingerprint, procs, resume or later_stage, show_progress)
        notes += stage1.notes
        if stage == "autoencoder":
            return TrainResult(run, cfg.latent.steps, True, float("nan"), 0.0, notes)
        meta["latent"] = latent_meta(run, stage1, cfg)
        codec = stage1.codec
        ts = latent_training_set(ts, codec, with_masks=cfg.latent.mask_mode == "concat", latents=stage1.latents)
    meta["model_channels"], meta["model_mask_channels"] = int(ts.images.shape[1]), ts.num_labels

    opt, step = build_optimisation(cfg, ts, procs.device, state, lineage.parent)
    if stage == "controlnet":
        return train_controlnet_stage(run, cfg, image_ts, ts, opt, codec, procs.device, show_progress, step, notes)
    step, finished, log = diffusion_loop(run, cfg, ts, opt, step, meta, procs, codec, show_progress, stop_at, lineage)
    notes += lineage.notes(step)
    if procs.main:
        preview(opt.ema, cfg, ts, RunFolder(run).samples("final.png"), step, procs.device, codec)
    procs.close()
    if finished and stage == "all" and cfg.latent.enabled and cfg.latent.mask_mode == "controlnet" and procs.main:
        train_controlnet_stage(run, cfg, image_ts, ts, opt, codec, procs.device, show_progress, step, notes)
    return TrainResult(run, step, finished, log.last_loss, log.samples_per_s, notes)


def prepare_folder(run: Path, cfg: Config, cat: Catalogued, ts: TrainingSet, fingerprint: str, fresh: bool,
                   new_stage2: bool, overwrite: bool, config_source: str | None, lineage: Lineage) -> None:
    """A fresh run gets its folder (config.yaml, split.csv, catalog.csv, run.json, the mask bank: not for private
    runs, whose generation takes --masks); a fresh stage 2 of a latent run rewrites config.yaml (its later-stage
    settings may differ from stage 1's); a resume keeps all."""
    folder = RunFolder(run)
    if fresh:
        check_output_dir(run, overwrite)
        if run.exists():
            shutil.rmtree(run)
        folder.write_start(cfg.to_dict(), cat.catalog, provenance.record(
            "training run", cfg.to_dict(), {"data": cat.source, "catalog_fingerprint": fingerprint,
                                            "config_file": config_source},
            seeds={"train": cfg.train.seed, "split": cfg.data.split_seed}, **lineage.records(0),
            **({"fingerprint_key": lineage.fingerprint_key} if lineage.fingerprint_key else {})))
        if ts.labels is not None and lineage.plan is None:
            folder.save_mask_bank(ts.labels.numpy(), ts.study_ids, ts.bank_classes())
    elif new_stage2:
        folder.write_config(cfg.to_dict())


def build_optimisation(cfg: Config, ts: TrainingSet, dev: torch.device, state: dict | None,
                       parent: Parent | None = None) -> tuple[Optimisation, int]:
    """The denoiser, its EMA copy, AdamW and the learning-rate schedule, restored from `state` when resuming (else
    started from `parent`'s weights, when fine-tuning); and the step to continue from."""
    torch.manual_seed(cfg.train.seed)
    model = build_denoiser(cfg.model, cfg.spatial_dims, ts.images.shape[1], ts.num_labels, len(ts.class_names),
                           ts.extras)
    if parent is not None and state is None:
        model.load_state_dict(parent.weights)
    freeze_untrained(model, cfg.train.trainable)
    model = model.to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d if cfg.spatial_dims == 3 else torch.channels_last)
    t = cfg.train
    opt = optimisation(model, deepcopy(model).requires_grad_(False), t.lr, t.weight_decay, t.warmup_steps, t.max_steps)
    if state is None:
        return opt, 0
    for module, key in ((opt.trained, "model"), (opt.ema, "ema"), (opt.optimizer, "optimizer"),
                        (opt.scheduler, "scheduler")):
        module.load_state_dict(state[key])
    return opt, int(state["step"])


def diffusion_loop(run: Path, cfg: Config, ts: TrainingSet, opt: Optimisation, step: int, meta: dict,
                   procs: Processes, codec: LatentCodec | None, show_progress: bool,
                   stop_at: int | None, lineage: Lineage = Lineage()) -> tuple[int, bool, MetricsLog]:
    """Train until max_steps, max_minutes or `stop_at`; checkpoint periodically, on Ctrl-C / SIGTERM and at the end.
    Returns the step reached, whether the run finished, and its metrics log. A private run (lineage.plan) draws
    Poisson batches and takes DP steps; each checkpoint says the privacy spent so far."""
    folder, dev, main = RunFolder(run), procs.device, procs.main
    private = PrivateStep(opt.trained, opt.optimizer, lineage.plan) if lineage.plan else None
    net, process = private.net if private else procs.wrap(opt.trained), noise_process(cfg.diffusion)
    repeats = lineage.plan.multiplicity if lineage.plan else 1
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()

    def checkpoint(finished: bool) -> None:
        if main:
            save_checkpoint(folder.checkpoint, {
                **meta, **lineage.records(step), "step": step, "finished": finished, "model": opt.trained.state_dict(),
                "ema": opt.ema.state_dict(), "optimizer": opt.optimizer.state_dict(),
                "scheduler": opt.scheduler.state_dict()})

    deadline = time.monotonic() + 60 * cfg.train.max_minutes if cfg.train.max_minutes else math.inf
    log = MetricsLog(folder.metrics(), enabled=main)
    bar = StepBar(cfg.train.max_steps, step, enabled=show_progress and main)
    finished, last_step = False, min(cfg.train.max_steps, stop_at or cfg.train.max_steps)
    try:
        with stop_on_signals():
            while step < last_step and time.monotonic() < deadline:
                batch = draw_batch(ts, cfg, process, step_generator(cfg.train.seed, step, procs.rank),
                                   opt.trained.null_class, private.draw(len(ts)) if private else None)
                loss = training_step(net, opt, batch, process, cfg, step, dev, autocast, dev.type == "cuda", private)
                step += 1
                log.add(step, loss, opt.scheduler.get_last_lr()[0], len(batch.x0) // repeats * procs.world)
                bar.update(step, log.last_loss, log.samples_per_s)
                if step % cfg.train.log_every == 0:
                    log.flush()
                if main and cfg.train.sample_every and step % cfg.train.sample_every == 0:
                    preview(opt.ema, cfg, ts, folder.samples(f"step_{step:06d}.png"), step, dev, codec)
                if step % cfg.train.checkpoint_every == 0:
                    checkpoint(False)
        finished = step >= cfg.train.max_steps or (time.monotonic() >= deadline and step > 0)  # 0 steps: never done
    except KeyboardInterrupt:
        checkpoint(False)
        log.flush()
        raise Interrupted(f"interrupted at step {step}; the last checkpoint is saved in {folder.checkpoint}. "
                          f"Continue with the same command plus --resume.") from None
    finally:
        bar.close()
    log.flush()
    checkpoint(finished)
    return step, finished, log


def train_controlnet_stage(run: Path, cfg: Config, image_ts: TrainingSet, ts: TrainingSet, opt: Optimisation,
                           codec: LatentCodec, dev: torch.device, show_progress: bool, step: int,
                           notes: list[str]) -> TrainResult:
    """The ControlNet stage on the finished latent model's EMA weights, reported as the run's result."""
    state, note = controlnet_stage(run, cfg, image_ts, ts, opt.ema, codec, dev, show_progress, step)
    notes.append(note)
    return TrainResult(run, step, True, float(state["loss"]), 0.0, notes)


def checkpoint_meta(cfg: Config, ts: TrainingSet, fingerprint: str, source: str, lineage: Lineage = Lineage()) -> dict:
    """What a checkpoint carries besides weights: enough to generate and to trace where it came from. A private run
    leaves out the statistics of its training data (training.private says which, and what replaces them)."""
    counts = torch.bincount(ts.classes, minlength=len(ts.class_names)).tolist() if ts.classes is not None else []
    meta = {
        "format": "medsynth-checkpoint/1", "config": cfg.to_dict(), "versions": provenance.versions(),
        "catalog_fingerprint": fingerprint, "data_source": source, "seed": cfg.train.seed,
        "class_names": list(ts.class_names), "class_counts": counts, "num_labels": ts.num_labels,
        "label_names": {str(k): v for k, v in ts.label_names.items()} if ts.num_labels else {},
        **({"label_ids": list(ts.label_ids)} if ts.label_ids else {}),
        "image_channels": int(ts.images.shape[1]), "modality": ts.modality, "spacing": ts.spacing,
        "shape": list(cfg.data.shape), "intensity_lo": ts.intensity_lo, "intensity_hi": ts.intensity_hi,
        **({"condition_columns": [c.as_dict() for c in ts.extras], "condition_rows": ts.condition_rows()}
           if ts.extras else {}),
    }
    # the QC statistics (a pass over every study) are not computed for a private run, which leaves them out
    return {**meta, **private_meta(cfg, ts, lineage)} if lineage.plan else {**meta, "intensity_stats": intensity_stats(ts)}


def private_meta(cfg: Config, ts: TrainingSet, lineage: Lineage) -> dict:
    """A private checkpoint's replacements for statistics of the data: no class counts (generation then draws classes
    in equal shares), no QC statistics, and the configured intensity range unless the run says it stores the data's."""
    replaced = {"class_counts": [], "intensity_stats": {"global": None, "labels": {}}}
    if not lineage.stored and ts.modality.upper() != "CT":
        lo, hi = cfg.train.dp.intensity_range
        replaced.update(intensity_lo=[lo] * len(ts.intensity_lo), intensity_hi=[hi] * len(ts.intensity_hi))
    return replaced
