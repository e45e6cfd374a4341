"""A finished training run, loaded for generation: EMA weights, config, grid, classes, intensity mapping."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsynth import provenance
from medsynth.config import Config, config_from_dict
from medsynth.data.preprocess import IntensityMap
from medsynth.errors import MedsynthError
from medsynth.models import Denoiser, build_denoiser
from medsynth.training.checkpoint import load_checkpoint, run_checkpoint


# what generation, the audit and the evaluation read from a checkpoint besides the weights
REQUIRED = ("config", "class_names", "class_counts", "num_labels", "image_channels", "shape", "spacing", "modality",
            "intensity_lo", "intensity_hi", "intensity_stats", "catalog_fingerprint")


@dataclass
class LoadedRun:
    path: Path
    model: Denoiser
    cfg: Config
    meta: dict
    run_hash: str   # sha256 of the checkpoint file: names exactly which weights made a study

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
    model = build_denoiser(cfg.model, cfg.spatial_dims, int(meta["image_channels"]), int(meta["num_labels"]),
                           len(meta["class_names"]))
    model.load_state_dict(meta.pop("ema"))
    for key in ("model", "optimizer", "scheduler"):
        meta.pop(key, None)
    return LoadedRun(run, model.to(device).eval(), cfg, meta, provenance.sha256_file(path))
