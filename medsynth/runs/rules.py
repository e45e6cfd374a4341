"""What may differ between a run's sessions and stages, and the checks that refuse what cannot continue.

- Between sessions of one stage (`--resume`): only the budgets (train.max_steps, train.max_minutes).
- Between stage 1 (the autoencoder) and later stages of a latent run: the diffusion, train and model sections, and
  the latent keys that only later stages read (mask_mode, controlnet_steps, controlnet_lr).
Decoding settings are generation's (older runs' checkpoints still hold them in the latent section; they never count).
"""

from __future__ import annotations

from pathlib import Path

import torch

from medsynth.config import LEGACY_DECODING, Config, config_from_dict
from medsynth.errors import MedsynthError
from medsynth.models.latent import LatentCodec, load_codec
from medsynth.runs.checkpoint import load_checkpoint
from medsynth.runs.layout import RunFolder
from medsynth.runs.lineage import keyed_fingerprint

BUDGET_KEYS = ("max_steps", "max_minutes")  # may change when resuming; everything else must match
LATER_KEYS = LEGACY_DECODING + ("mask_mode", "controlnet_steps", "controlnet_lr")  # latent keys stage 1 does not read
STAGES = ("all", "autoencoder", "diffusion", "controlnet")


def comparable(config: dict) -> dict:
    """The config minus what may change between a run's sessions (budgets; older runs' decoding settings); runs from
    before latent configs existed count as latent.enabled: false."""
    latent = {k: v for k, v in config.get("latent", Config().to_dict()["latent"]).items() if k not in LEGACY_DECODING}
    return {**config, "train": {k: v for k, v in config["train"].items() if k not in BUDGET_KEYS}, "latent": latent}


def stage1_keys(config: dict) -> dict:
    """What a trained autoencoder depends on: the data and the stage-1 part of the latent config."""
    return {"data": config["data"], "latent": {k: v for k, v in config.get("latent", {}).items() if k not in LATER_KEYS}}


def check_stage(stage: str, cfg: Config) -> None:
    """Refuse a --stage the config cannot have."""
    if stage not in STAGES:
        raise MedsynthError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}.")
    if stage != "all" and not cfg.latent.enabled:
        raise MedsynthError(f"--stage {stage} applies to latent runs only (latent.enabled: true); drop --stage.")
    if stage == "controlnet" and cfg.latent.mask_mode != "controlnet":
        raise MedsynthError("--stage controlnet needs latent.mask_mode: controlnet in the config.")


def check_resume(run: Path, cfg: Config, fingerprint: str) -> dict:
    """The last checkpoint of `run`, provided it was made with the same config (budgets aside) and data."""
    folder = RunFolder(run)
    if not folder.checkpoint.is_file():
        raise MedsynthError(f"--resume given but {run} holds no checkpoint; start a new run without --resume.")
    state = load_checkpoint(folder.checkpoint)
    stored = config_from_dict(state["config"], str(folder.checkpoint), stored=True).to_dict()  # keys added since: defaults
    if comparable(stored) != comparable(cfg.to_dict()):
        old, new = comparable(stored), comparable(cfg.to_dict())
        diff = next(f"{s}.{k}" for s in new for k in new[s] if old.get(s, {}).get(k) != new[s][k])
        raise MedsynthError(f"cannot resume {run}: its checkpoint was trained with another config ({diff} differs); "
                            "use the run's own config.yaml or start a new run.")
    if "privacy" in state:   # a private run shows its fingerprint keyed (runs.lineage.keyed_fingerprint)
        fingerprint = keyed_fingerprint(fingerprint, folder.read_record()["fingerprint_key"])
    if state["catalog_fingerprint"] != fingerprint:
        raise MedsynthError(f"cannot resume {run}: its checkpoint was trained on other data (catalog fingerprint differs).")
    return state


def resume_state(run: Path, cfg: Config, fingerprint: str, stage: str, resume: bool) -> dict | None:
    """The checkpoint training continues from (None: a fresh diffusion model), refusing what cannot continue: a
    resume with nothing to resume, a later latent stage without its earlier ones, a config or data that differ."""
    folder = RunFolder(run)
    state = None
    if resume and folder.checkpoint.is_file():
        state = check_resume(run, cfg, fingerprint)
    elif resume and not (cfg.latent.enabled and folder.autoencoder.is_file()):
        check_resume(run, cfg, fingerprint)  # refuses: there is nothing to resume
    if stage in ("diffusion", "controlnet"):
        load_autoencoder_stage(run, cfg, fingerprint, torch.device("cpu"))  # refuses a run without a matching stage 1
        if stage == "diffusion" and state is None and folder.checkpoint.is_file():
            raise MedsynthError(f"{run} already holds a diffusion checkpoint; continue it with --resume.")
        if stage == "controlnet" and not (state or {}).get("finished"):
            if folder.checkpoint.is_file():
                state = check_resume(run, cfg, fingerprint)
            if not (state or {}).get("finished"):
                raise MedsynthError(f"the latent model in {run} has not finished training; run --stage diffusion first.")
    return state


def load_autoencoder_stage(run: Path, cfg: Config, fingerprint: str, device: torch.device) -> tuple[LatentCodec, dict]:
    """The stage-1 checkpoint of `run`, provided it was trained with this config's autoencoder on the same data."""
    folder = RunFolder(run)
    if not folder.autoencoder.is_file():
        raise MedsynthError(f"{run} holds no trained autoencoder ({folder.relative(folder.autoencoder)}); train stage 1 "
                            "first (--stage autoencoder or --stage all).")
    state = load_checkpoint(folder.autoencoder)
    if stage1_keys(state["config"]) != stage1_keys(cfg.to_dict()) or state["catalog_fingerprint"] != fingerprint:
        raise MedsynthError(f"the autoencoder in {run} was trained with another latent config or other data; "
                            "use the run's own config.yaml or retrain stage 1 (--stage autoencoder --overwrite).")
    return load_codec(state, cfg.latent, cfg.spatial_dims, device), state
