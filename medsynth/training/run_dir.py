"""The run folder: config, split and provenance written at the start; resuming checks it is the same run."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml

from medsynth import provenance
from medsynth.config import Config
from medsynth.errors import MedsynthError
from medsynth.outputs import check_output_dir
from medsynth.training.checkpoint import load_checkpoint, run_checkpoint
from medsynth.training.data import Catalogued

BUDGET_KEYS = ("max_steps", "max_minutes")  # may change when resuming; everything else must match


DECODE_KEYS = ("tile", "tile_overlap", "tile_cache")  # latent decoding settings, free to change too


def comparable(config: dict) -> dict:
    """The config minus what may change between a run's sessions (budgets, decoding); runs from before latent
    configs existed count as latent.enabled: false."""
    latent = {k: v for k, v in config.get("latent", Config().to_dict()["latent"]).items() if k not in DECODE_KEYS}
    return {**config, "train": {k: v for k, v in config["train"].items() if k not in BUDGET_KEYS}, "latent": latent}


def check_resume(run: Path, cfg: Config, fingerprint: str) -> dict:
    """The last checkpoint of `run`, provided it was made with the same config (budgets aside) and data."""
    if not run_checkpoint(run).is_file():
        raise MedsynthError(f"--resume given but {run} holds no checkpoint; start a new run without --resume.")
    state = load_checkpoint(run_checkpoint(run))
    if comparable(state["config"]) != comparable(cfg.to_dict()):
        old, new = comparable(state["config"]), comparable(cfg.to_dict())
        diff = next(f"{s}.{k}" for s in new for k in new[s] if old.get(s, {}).get(k) != new[s][k])
        raise MedsynthError(f"cannot resume {run}: its checkpoint was trained with another config ({diff} differs); "
                            "use the run's own config.yaml or start a new run.")
    if state["catalog_fingerprint"] != fingerprint:
        raise MedsynthError(f"cannot resume {run}: its checkpoint was trained on other data (catalog fingerprint differs).")
    return state


def resume_state(run: Path, cfg: Config, fingerprint: str, stage: str, resume: bool) -> dict | None:
    """The checkpoint training continues from (None: a fresh diffusion model), refusing what cannot continue: a
    resume with nothing to resume, a later latent stage without its earlier ones, a config or data that differ."""
    from medsynth.training.latent import AUTOENCODER, load_autoencoder_stage

    state = None
    if resume and run_checkpoint(run).is_file():
        state = check_resume(run, cfg, fingerprint)
    elif resume and not (cfg.latent.enabled and (run / AUTOENCODER).is_file()):
        check_resume(run, cfg, fingerprint)  # refuses: there is nothing to resume
    if stage in ("diffusion", "controlnet"):
        load_autoencoder_stage(run, cfg, fingerprint, torch.device("cpu"))  # refuses a run without a matching stage 1
        if stage == "diffusion" and state is None and run_checkpoint(run).is_file():
            raise MedsynthError(f"{run} already holds a diffusion checkpoint; continue it with --resume.")
        if stage == "controlnet" and not (state or {}).get("finished"):
            if run_checkpoint(run).is_file():
                state = check_resume(run, cfg, fingerprint)
            if not (state or {}).get("finished"):
                raise MedsynthError(f"the latent model in {run} has not finished training; run --stage diffusion first.")
    return state


def write_config(run: Path, cfg: Config) -> None:
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def start_run(run: Path, cfg: Config, cat: Catalogued, fingerprint: str, overwrite: bool, config_source: str | None) -> None:
    """Create the run folder with config.yaml, split.csv, catalog.csv and run.json."""
    run = check_output_dir(run, overwrite)
    if run.exists():
        shutil.rmtree(run)
    (run / "samples").mkdir(parents=True)
    write_config(run, cfg)
    cat.catalog[["study_id", "split"]].to_csv(run / "split.csv", index=False)
    cat.catalog.to_csv(run / "catalog.csv", index=False)
    provenance.write_json(run / "run.json", provenance.record(
        "training run", cfg.to_dict(), {"data": cat.source, "catalog_fingerprint": fingerprint, "config_file": config_source},
        seeds={"train": cfg.train.seed, "split": cfg.data.split_seed}))
