"""A finished training run, loaded for generation, the audit and the evaluation: EMA weights, config, grid,
conditioning, noise process, intensity mapping and (latent runs) the codec and ControlNet."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medsynth import provenance
from medsynth.conditioning import Column, Conditions, ConditionSpec
from medsynth.config import Config, config_from_dict, legacy_decoding
from medsynth.data.preprocess import IntensityMap
from medsynth.diffusion import NoiseProcess, noise_process, sample
from medsynth.errors import MedsynthError
from medsynth.models import Denoiser, build_denoiser
from medsynth.models.latent import ControlledDenoiser, LatentCodec, build_controlnet, load_codec
from medsynth.runs.checkpoint import load_checkpoint
from medsynth.runs.layout import RunFolder
from medsynth.runs.lineage import datasets, privacy_of

# what generation, the audit and the evaluation read from a checkpoint besides the weights
REQUIRED = ("config", "class_names", "class_counts", "num_labels", "image_channels", "shape", "spacing", "modality",
            "intensity_lo", "intensity_hi", "intensity_stats", "catalog_fingerprint")


@dataclass
class LoadedRun:
    path: Path
    model: nn.Module  # a Denoiser, or for ControlNet latent runs a ControlledDenoiser (same call)
    cfg: Config
    meta: dict
    run_hash: str   # sha256 of the checkpoint file (latent runs: of every stage's file): names exactly which weights made a study
    codec: LatentCodec | None = None   # latent runs: images <-> scaled latents

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path)

    @property
    def privacy(self) -> dict:
        """The privacy the weights were trained under (training.private's record, or {'private': False, ...})."""
        return privacy_of(self.meta)

    def lineage(self) -> dict:
        """What every artefact made from this run records about its weights: privacy, and every dataset behind them."""
        return {"privacy": self.privacy, "trained_on": datasets(self.meta)}

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def num_labels(self) -> int:
        return int(self.meta["num_labels"])

    @property
    def spec(self) -> ConditionSpec:
        """What the run's model is conditioned on."""
        return ConditionSpec(tuple(self.class_names), self.num_labels, tuple(self.meta.get("label_ids") or ()),
                             self.extras)

    @property
    def extras(self) -> tuple[Column, ...]:
        """The run's extra conditions (categorical columns beyond the class, covariates)."""
        return tuple(Column.from_dict(d) for d in self.meta.get("condition_columns", []))

    @cached_property
    def process(self) -> NoiseProcess:
        """The run's noise process, chosen once from its config."""
        return noise_process(self.cfg.diffusion)

    def label_names(self) -> dict[int, str]:
        """The names of the run's mask labels, keyed by its compact ids (the dataset's names of their ids)."""
        ids = list(self.spec.dataset_ids)
        return {ids.index(int(k)): v for k, v in self.meta.get("label_names", {}).items() if int(k) in ids}

    @property
    def decoding(self) -> dict:
        """The decoding settings the run recorded (older latent runs kept them in their training config), else {}."""
        return legacy_decoding(self.meta["config"])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return (int(self.meta["image_channels"]), *self.meta["shape"])

    @property
    def intensity(self) -> IntensityMap:
        return IntensityMap(tuple(self.meta["intensity_lo"]), tuple(self.meta["intensity_hi"]))

    @property
    def model_shape(self) -> tuple[int, ...]:
        """What the diffusion model samples: the image shape, or the latent shape of a latent run."""
        if self.codec is None:
            return self.image_shape
        return (int(self.meta["latent"]["channels"]), *self.meta["latent"]["shape"])

    def to_model(self, images: torch.Tensor, cond: Conditions) -> tuple[torch.Tensor, Conditions]:
        """Images in [-1, 1] and their conditions as the diffusion model sees them: latents (and masks pooled to the
        latent grid, for concat masks) for latent runs."""
        if self.codec is None:
            return images, cond
        return self.codec.encode(images), self.model_conditions(cond)

    def model_conditions(self, cond: Conditions) -> Conditions:
        return cond.replace(mask=self.codec.model_mask(cond.mask)) if self.codec is not None else cond

    def sample(self, generators, cond: Conditions, steps: int, guidance: float, device, per: dict | None = None,
               interval: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        """(N, C, *spatial) images in [-1, 1] on the CPU: the sampler in model space, then decoding for latent runs.
        `per`: per-condition guidance scales (diffusion.sampling.guided); `interval`: the noise fractions guidance
        applies at (diffusion.sampling.sample)."""
        x = sample(self.model, self.process, self.model_shape, generators, self.model_conditions(cond), steps,
                   guidance, device=device, clip=self.codec is None, per=per, interval=tuple(interval))
        return self.codec.decode(x) if self.codec is not None else x

    def default_affine(self) -> np.ndarray:
        """RAS affine of the model grid at the training spacing, centred on the world origin."""
        dims = len(self.meta["shape"])
        affine = np.eye(4)
        for axis, (size, spacing) in enumerate(zip(self.meta["shape"], self.meta["spacing"])):
            affine[axis, axis] = spacing
            affine[axis, 3] = -(size - 1) / 2.0 * spacing
        if dims == 2:
            affine[2, 2] = 1.0
        return affine


def load_run(run: str | Path, device: torch.device) -> LoadedRun:
    """The EMA model of a run whose training finished; refuses runs that stopped early."""
    run = Path(run).expanduser().resolve()
    if not run.is_dir():
        raise MedsynthError(f"run folder {run} does not exist; train one with `medsynth train`.")
    path = RunFolder(run).checkpoint
    if not path.is_file():
        raise MedsynthError(f"{run} holds no checkpoint; train a model there first (medsynth train).")
    meta = load_checkpoint(path)
    if not meta.get("finished"):
        raise MedsynthError(f"the checkpoint in {run} is not finished (training stopped at step {meta.get('step')}); "
                            "resume training with `medsynth train ... --resume` first.")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise MedsynthError(f"the checkpoint in {run} lacks {', '.join(missing)} (it was written by an older medsynth); "
                            "retrain the run with this version (medsynth train ... --overwrite).")
    cfg = config_from_dict(meta["config"], str(path), stored=True)
    model = build_denoiser(cfg.model, cfg.spatial_dims, int(meta.get("model_channels", meta["image_channels"])),
                           int(meta.get("model_mask_channels", meta["num_labels"])), len(meta["class_names"]),
                           tuple(Column.from_dict(d) for d in meta.get("condition_columns", [])))
    model.load_state_dict(meta.pop("ema"))
    for key in ("model", "optimizer", "scheduler"):
        meta.pop(key, None)
    run_hash, codec = provenance.sha256_file(path), None
    if cfg.latent.enabled:
        model, codec, run_hash = load_latent_parts(run, cfg, meta, model, run_hash, device)
    return LoadedRun(run, model.to(device).eval(), cfg, meta, run_hash, codec)


def load_latent_parts(run: Path, cfg: Config, meta: dict, model: Denoiser, diffusion_hash: str, device):
    """A latent run's autoencoder (the one its diffusion model was trained on) and, for mask_mode controlnet, the
    ControlNet on top; the run hash then covers every stage's file."""
    folder = RunFolder(run)
    if "latent" not in meta:
        raise MedsynthError(f"the checkpoint in {run} is a latent config without latent metadata; retrain the run.")
    if not folder.autoencoder.is_file() or provenance.sha256_file(folder.autoencoder) != meta["latent"]["autoencoder_sha256"]:
        raise MedsynthError(f"{run}'s autoencoder ({folder.relative(folder.autoencoder)}) is missing or not the one its "
                            "diffusion model was trained on; retrain the run (medsynth train ... --overwrite).")
    codec = load_codec(load_checkpoint(folder.autoencoder), cfg.latent, cfg.spatial_dims, device)
    hashes = [diffusion_hash, meta["latent"]["autoencoder_sha256"]]
    if cfg.latent.mask_mode == "controlnet":
        model = load_controlnet(run, cfg, model, diffusion_hash, int(meta["num_labels"]))
        hashes.append(provenance.sha256_file(folder.controlnet))
    return model, codec, provenance.sha256_bytes("\n".join(hashes).encode())


def load_controlnet(run: Path, cfg: Config, base: Denoiser, base_sha256: str, num_labels: int) -> ControlledDenoiser:
    """The run's ControlNet on `base`, provided it was trained on exactly that latent model."""
    path = RunFolder(run).controlnet
    if not path.is_file():
        raise MedsynthError(f"{run} is a ControlNet-conditioned latent run whose ControlNet is not trained yet; "
                            "train it with `medsynth train ... --stage controlnet`.")
    state = load_checkpoint(path)
    if state["base_sha256"] != base_sha256:
        raise MedsynthError(f"the ControlNet in {run} was trained on another latent model than the run's last checkpoint; "
                            "retrain it with `medsynth train ... --stage controlnet`.")
    controlnet = build_controlnet(cfg.model, cfg.spatial_dims, cfg.latent.latent_channels, num_labels, base,
                                  cfg.latent.factor)
    controlnet.load_state_dict(state["controlnet"])
    return ControlledDenoiser(base, controlnet)
