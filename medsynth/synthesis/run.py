"""A finished training run, loaded for generation: EMA weights, config, grid, classes, intensity mapping."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medsynth import provenance
from medsynth.config import Config, config_from_dict
from medsynth.data.preprocess import IntensityMap
from medsynth.diffusion import sample
from medsynth.errors import MedsynthError
from medsynth.exporter.synthset import SyntheticSet, read_synthetic_set
from medsynth.models import Denoiser, build_denoiser
from medsynth.models.latent import LatentCodec, load_codec
from medsynth.training.checkpoint import load_checkpoint, run_checkpoint
from medsynth.training.latent import AUTOENCODER, CONTROLNET, load_controlnet


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
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def num_labels(self) -> int:
        return int(self.meta["num_labels"])

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

    def to_model(self, images: torch.Tensor, one_hot: torch.Tensor | None = None):
        """Images in [-1, 1] (and one-hot masks) as the diffusion model sees them: latents for latent runs."""
        if self.codec is None:
            return images, one_hot
        return self.codec.encode(images), self.codec.model_mask(one_hot)

    def sample(self, generators, classes, one_hot, steps: int, guidance: float, device) -> torch.Tensor:
        """(N, C, *spatial) images in [-1, 1] on the CPU: the sampler in model space, then decoding for latent runs."""
        mask = self.codec.model_mask(one_hot) if self.codec is not None else one_hot
        x = sample(self.model, self.cfg.diffusion, self.model_shape, generators, classes, mask, steps=steps,
                   guidance=guidance, device=device, clip=self.codec is None)
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
    path = run_checkpoint(run)
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
    cfg = config_from_dict(meta["config"], str(path))
    model = build_denoiser(cfg.model, cfg.spatial_dims, int(meta.get("model_channels", meta["image_channels"])),
                           int(meta.get("model_mask_channels", meta["num_labels"])), len(meta["class_names"]))
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
    if "latent" not in meta:
        raise MedsynthError(f"the checkpoint in {run} is a latent config without latent metadata; retrain the run.")
    ae_path = run / AUTOENCODER
    if not ae_path.is_file() or provenance.sha256_file(ae_path) != meta["latent"]["autoencoder_sha256"]:
        raise MedsynthError(f"{run}'s autoencoder ({AUTOENCODER}) is missing or not the one its diffusion model was "
                            "trained on; retrain the run (medsynth train ... --overwrite).")
    codec = load_codec(load_checkpoint(ae_path), cfg.latent, cfg.spatial_dims, device)
    hashes = [diffusion_hash, meta["latent"]["autoencoder_sha256"]]
    if cfg.latent.mask_mode == "controlnet":
        model = load_controlnet(run, cfg, model, diffusion_hash, int(meta["num_labels"]))
        hashes.append(provenance.sha256_file(run / CONTROLNET))
    return model, codec, provenance.sha256_bytes("\n".join(hashes).encode())


def open_with_run(run: str | Path, synth: str | Path, device, verb: str) -> tuple[LoadedRun, SyntheticSet]:
    """The run and the synthetic set it made, refused in one sentence when the set came from elsewhere.

    `verb` names the command in the message ("audit", "evaluate")."""
    loaded = load_run(run, device)
    sset = read_synthetic_set(synth)
    if sset.modality != loaded.meta["modality"]:
        raise MedsynthError(f"the synthetic set is {sset.modality} but the run was trained on {loaded.meta['modality']}; "
                            f"{verb} a set against the run that generated it.")
    if sset.meta.get("inputs", {}).get("run_hash") not in (None, loaded.run_hash):
        raise MedsynthError(f"{sset.folder} was generated by another checkpoint than {loaded.path}'s; "
                            f"{verb} a set against the run that generated it.")
    return loaded, sset


def studies_on_grid(sset: SyntheticSet, loaded: LoadedRun, verb: str):
    """Each synthetic study as (samples.csv row, Study, image in the run's model units (C, *spatial)), refusing any
    study that is not on the run's model grid."""
    shape = tuple(loaded.meta["shape"])
    for _, row in sset.table.iterrows():
        study = sset.load(row)
        if tuple(study.image.shape[1:]) != shape:
            raise MedsynthError(f"synthetic study {row['study_id']} is on a {study.image.shape[1:]} grid but the run's "
                                f"model grid is {shape}; {verb} a set generated by this run.")
        yield row, study, loaded.intensity.to_unit(study.image)
