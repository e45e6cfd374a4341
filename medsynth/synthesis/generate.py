"""Generation: a finished run + a label spec -> synthetic studies in physical units, QC'd, with provenance."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medsynth import provenance
from medsynth.data.study import Study
from medsynth.data.writers import write_study_nifti
from medsynth.errors import MedsynthError
from medsynth.outputs import atomic_output_dir
from medsynth.progress import progress_iter
from medsynth.synthesis.masks import MaskBank, MaskChoice, load_user_masks
from medsynth.synthesis.plan import StudyPlan, parse_shard, plan_studies, shard_of
from medsynth.synthesis.qc import quality_check
from medsynth.synthesis.run import LoadedRun, load_run
from medsynth.training.trainer import resolve_device
from medsynth.viz import save_grid


@dataclass
class GenerateResult:
    out: Path
    studies: int
    resampled: int          # studies that failed QC at least once and were drawn again
    failed: int             # studies still failing QC after every attempt (flagged in samples.csv)
    seconds: float


@dataclass(frozen=True)
class Settings:
    steps: int
    guidance: float
    seed: int
    batch_size: int
    max_attempts: int


def noise_generator(seed: int, index: int, attempt: int) -> torch.Generator:
    """The noise stream of study `index`, attempt `attempt`: depends on nothing else (batch size, device, shard)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index, attempt]).generate_state(1)[0]))


def draw_masks(loaded: LoadedRun, plans: list[StudyPlan], seed: int, bank: MaskBank | None,
               user: list[MaskChoice] | None) -> list[MaskChoice | None]:
    if user is not None:
        return [user[p.index] for p in plans]
    if bank is None:
        return [None] * len(plans)
    return [bank.draw(np.random.default_rng([seed, p.index, 7]), p.class_name) for p in plans]


def denoise(loaded: LoadedRun, plans: list[StudyPlan], masks: list[MaskChoice | None], attempts: list[int],
            s: Settings, device: torch.device) -> np.ndarray:
    """(B, C, *spatial) samples in model units for one batch; study k uses its own generator."""
    classes = torch.tensor([loaded.class_names.index(p.class_name) for p in plans]) if loaded.class_names else None
    one_hot = None
    if loaded.num_labels:
        labels = torch.from_numpy(np.stack([m.labels for m in masks])).long()
        one_hot = torch.nn.functional.one_hot(labels, loaded.num_labels).movedim(-1, 1).float()
    generators = [noise_generator(s.seed, p.index, a) for p, a in zip(plans, attempts)]
    return loaded.sample(generators, classes, one_hot, s.steps, s.guidance, device).numpy()


def generate_batch(loaded: LoadedRun, plans, masks, s: Settings, device) -> list[tuple[np.ndarray, int, list[str]]]:
    """Sample a batch, then re-sample (new noise, same mask) each study that fails QC, up to max_attempts."""
    stats = loaded.meta["intensity_stats"]
    images = denoise(loaded, plans, masks, [0] * len(plans), s, device)
    results = []
    for k, (plan, mask) in enumerate(zip(plans, masks)):
        image, attempt = images[k], 0
        problems = quality_check(image, mask.labels if mask else None, stats)
        while problems and attempt + 1 < s.max_attempts:
            attempt += 1
            image = denoise(loaded, [plan], [mask], [attempt], s, device)[0]
            problems = quality_check(image, mask.labels if mask else None, stats)
        results.append((image, attempt + 1, problems))
    return results


def write_study(folder: Path, loaded: LoadedRun, plan: StudyPlan, mask: MaskChoice | None, unit: np.ndarray,
                attempts: int, problems: list[str], s: Settings) -> dict:
    """Write one study's image (+ label map) in physical units and its provenance JSON; return its samples.csv row."""
    study_id = f"syn_{plan.index:05d}"
    affine = mask.affine if mask is not None and mask.affine is not None else loaded.default_affine()
    study = Study(loaded.intensity.to_physical(unit), affine, loaded.meta["modality"],
                  mask.labels if mask is not None else None, study_id=study_id)
    write_study_nifti(study, folder / f"{study_id}_image.nii.gz", folder / f"{study_id}_label.nii.gz" if mask else None,
                      descrip=f"medsynth SYNTHETIC {provenance.versions()['medsynth']}")
    record = {
        "study_id": study_id, "index": plan.index, "seed": s.seed, "class": plan.class_name,
        "run": str(loaded.path), "run_hash": loaded.run_hash, "catalog_fingerprint": loaded.meta["catalog_fingerprint"],
        "sampler": "rflow-euler" if loaded.cfg.diffusion.process == "rflow" else "ddim", "steps": s.steps,
        "guidance": s.guidance, "mask_source": mask.source if mask else None,
        "qc": {"attempts": attempts, "passed": not problems, "problems": problems},
        "modality": study.modality, "spacing_mm": list(study.spacing), "versions": provenance.versions(),
    }
    (folder / f"{study_id}.json").write_text(json.dumps(record, indent=2) + "\n")
    return {"study_id": study_id, "index": plan.index, "class": plan.class_name or "", "seed": s.seed,
            "image": f"{study_id}_image.nii.gz", "label": f"{study_id}_label.nii.gz" if mask else "",
            "mask_source": (mask.source.get("study_id") or mask.source.get("file")) if mask else "",
            "qc_attempts": attempts, "qc_passed": not problems}


def generate(run: str | Path, out: str | Path, *, n: int | None = None, classes: list[str] | None = None,
             masks: str | Path | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
             batch_size: int = 4, shard: str | None = None, device: str = "auto", overwrite: bool = False,
             mask_augment: bool = True, mask_flip: bool = False, max_attempts: int = 3,
             show_progress: bool = True, tile: int | None = None) -> GenerateResult:
    """Generate synthetic studies from a finished run into `out` (written atomically). `tile` overrides a latent run's
    decoding tile size (latent voxels; 0 decodes whole volumes)."""
    start = time.monotonic()
    if batch_size < 1 or max_attempts < 1:
        raise MedsynthError("--batch-size and --qc-attempts must be positive integers.")
    dev = resolve_device(device)
    loaded = load_run(run, dev)
    if tile is not None:
        if loaded.codec is None:
            raise MedsynthError("--tile applies to latent runs only; this run's model works on images directly.")
        if tile < 0:
            raise MedsynthError("--tile must be 0 (whole volumes) or a positive number of latent voxels.")
        loaded.codec.tile = tile
    user = None
    if masks is not None:
        if not loaded.num_labels:
            raise MedsynthError("--masks was given but this model is not mask-conditioned.")
        user = load_user_masks(masks, tuple(loaded.meta["shape"]), loaded.num_labels)
        n = n if n is not None or classes else len(user)
    plans = plan_studies(n, list(classes or []), loaded.class_names, list(loaded.meta["class_counts"]))
    if user is not None and len(plans) != len(user):
        raise MedsynthError(f"{len(plans)} studies were asked for but --masks holds {len(user)} masks; "
                            "with --masks, generate one study per mask.")
    plans = shard_of(plans, *parse_shard(shard))
    bank = MaskBank(loaded.path / "mask_bank.npz", mask_augment, mask_flip) if loaded.num_labels and user is None else None
    s = Settings(steps or loaded.cfg.diffusion.sample_steps, loaded.cfg.diffusion.guidance if guidance is None else guidance,
                 seed, batch_size, max_attempts)
    rows, previews = [], []
    with atomic_output_dir(out, overwrite) as tmp:
        batches = [plans[i : i + batch_size] for i in range(0, len(plans), batch_size)]
        for batch in progress_iter(batches, "generating", enabled=show_progress):
            chosen = draw_masks(loaded, batch, seed, bank, user)
            for plan, mask, (unit, attempts, problems) in zip(batch, chosen, generate_batch(loaded, batch, chosen, s, dev)):
                rows.append(write_study(tmp, loaded, plan, mask, unit, attempts, problems, s))
                if len(previews) < 16:
                    previews.append((unit, mask.labels if mask else None, plan.class_name or rows[-1]["study_id"]))
        table = pd.DataFrame(rows)
        table.to_csv(tmp / "samples.csv", index=False)
        if previews:
            save_grid(tmp / "overview.png", np.stack([p[0] for p in previews]), [str(p[2]) for p in previews],
                      np.stack([p[1] for p in previews]) if previews[0][1] is not None else None)
        provenance.write_json(tmp / "generate.json", provenance.record(
            "synthetic set", {"steps": s.steps, "guidance": s.guidance, "batch_size": batch_size, "shard": shard,
                              "n": len(plans), "classes": list(classes or []), "masks": str(masks) if masks else None,
                              "mask_augment": mask_augment, "mask_flip": mask_flip, "max_attempts": max_attempts,
                              "tile": loaded.codec.tile if loaded.codec is not None else None},
            {"run": str(loaded.path), "run_hash": loaded.run_hash, "catalog_fingerprint": loaded.meta["catalog_fingerprint"]},
            timestamp=False, seeds={"generate": seed}, training_config=loaded.meta["config"],
            modality=loaded.meta["modality"], class_names=loaded.class_names,
            label_names=loaded.meta.get("label_names", {}), num_labels=loaded.num_labels))
    resampled = int((table["qc_attempts"] > 1).sum()) if len(table) else 0
    failed = int((~table["qc_passed"]).sum()) if len(table) else 0
    return GenerateResult(Path(out).expanduser().resolve(), len(rows), resampled, failed, time.monotonic() - start)
