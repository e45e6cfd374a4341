"""Generation: a finished run + a label spec -> synthetic studies in physical units, QC'd, with provenance."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medsynth import provenance
from medsynth.config import GenerateConfig, with_keys
from medsynth.data.study import Study
from medsynth.data.writers import write_study_nifti
from medsynth.errors import MedsynthError
from medsynth.outputs import atomic_output_dir
from medsynth.progress import progress_iter
from medsynth.runs import SetFolder
from medsynth.runs.loaded import LoadedRun, load_run
from medsynth.runtime import resolve_device, seeded_generator
from medsynth.synthesis.masks import MaskBank, MaskChoice, load_user_masks
from medsynth.synthesis.plan import (StudyPlan, parse_fixed, parse_guidance_per, parse_prompt, parse_shard,
                                     plan_studies,
                                     read_condition_table, shard_of, with_conditions)
from medsynth.synthesis.qc import quality_check
from medsynth.viz import save_grid, spread_by_class


@dataclass
class GenerateResult:
    out: Path
    studies: int
    resampled: int          # studies that failed QC at least once and were drawn again
    failed: int             # studies still failing QC after every attempt (flagged in samples.csv)
    seconds: float


def noise_generator(seed: int, index: int, attempt: int) -> torch.Generator:
    """The noise stream of study `index`, attempt `attempt`: depends on nothing else (batch size, device, shard)."""
    return seeded_generator(seed, index, attempt)


def draw_masks(plans: list[StudyPlan], seed: int, bank: MaskBank | None,
               user: list[MaskChoice] | None) -> list[MaskChoice | None]:
    if user is not None:
        return [user[p.index] for p in plans]
    if bank is None:
        return [None] * len(plans)
    return [bank.draw(np.random.default_rng([seed, p.index, 7]), p.class_name) for p in plans]


def denoise(loaded: LoadedRun, plans: list[StudyPlan], masks: list[MaskChoice | None], attempts: list[int],
            s: GenerateConfig, device: torch.device) -> np.ndarray:
    """(B, C, *spatial) samples in model units for one batch; study k uses its own generator."""
    spec = loaded.spec
    classes = spec.class_ids([p.class_name for p in plans]) if spec.num_classes else None
    labels = torch.from_numpy(np.stack([m.labels for m in masks])).long() if spec.num_labels else None
    extra = spec.extra_values([p.conditions for p in plans], extrapolate=True)   # checked when planned
    generators = [noise_generator(s.seed, p.index, a) for p, a in zip(plans, attempts)]
    per = parse_guidance_per(list(s.guidance_per), spec, loaded.cfg.conditioning.class_column)
    return loaded.sample(generators, spec.conditions(classes, labels, extra), s.steps, s.guidance, device, per,
                         s.guidance_interval).numpy()


def generate_batch(loaded: LoadedRun, plans, masks, s: GenerateConfig, device) -> list[tuple[np.ndarray, int, list[str]]]:
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
                attempts: int, problems: list[str], s: GenerateConfig) -> dict:
    """Write one study's image (+ label map) in physical units and its provenance JSON; return its samples.csv row."""
    study_id, files = f"syn_{plan.index:05d}", SetFolder(folder)
    affine = mask.affine if mask is not None and mask.affine is not None else loaded.default_affine()
    study = Study(loaded.intensity.to_physical(unit), affine, loaded.meta["modality"],   # label maps in dataset ids
                  loaded.spec.expand(mask.labels) if mask is not None else None, study_id=study_id)
    image, label = files.image_name(study_id), files.label_name(study_id) if mask else ""
    write_study_nifti(study, folder / image, folder / label if mask else None,
                      descrip=f"medsynth SYNTHETIC {provenance.versions()['medsynth']}")
    record = {
        "study_id": study_id, "index": plan.index, "seed": s.seed, "class": plan.class_name,
        "run": str(loaded.path), "run_hash": loaded.run_hash, "catalog_fingerprint": loaded.meta["catalog_fingerprint"],
        "sampler": loaded.process.sampler, "steps": s.steps,
        "guidance": s.guidance, "mask_source": mask.source if mask else None,
        **({"conditions": plan.conditions} if plan.conditions else {}),
        "qc": {"attempts": attempts, "passed": not problems, "problems": problems},
        "modality": study.modality, "spacing_mm": list(study.spacing), "versions": provenance.versions(),
        **loaded.lineage(),
    }
    files.study_record(study_id).write_text(json.dumps(record, indent=2) + "\n")
    return {"study_id": study_id, "index": plan.index, "class": plan.class_name or "", **plan.conditions, "seed": s.seed,
            "image": image, "label": label,
            "mask_source": (mask.source.get("study_id") or mask.source.get("file")) if mask else "",
            "qc_attempts": attempts, "qc_passed": not problems}


def resolve(s: GenerateConfig, loaded: LoadedRun) -> GenerateConfig:
    """The settings with the run's defaults filled in (sampler steps, guidance, decoding), once, here."""
    given = {k: getattr(s, k) for k in ("tile", "tile_overlap", "tile_cache") if getattr(s, k) is not None}
    if given and loaded.codec is None:
        raise MedsynthError(f"--{next(iter(given)).replace('_', '-')} applies to latent runs only; this run's model "
                            "works on images directly.")
    if any(given.get(k, 0) < 0 for k in ("tile", "tile_overlap")):
        raise MedsynthError("--tile must be 0 (whole volumes) or a positive number of latent voxels, and the tile "
                            "overlap 0 (the decoder's receptive radius) or positive.")
    diffusion = loaded.cfg.diffusion
    s = dataclasses.replace(s, steps=s.steps or diffusion.sample_steps,
                            guidance=diffusion.guidance if s.guidance is None else s.guidance)
    if loaded.codec is None:
        return s
    decoding = {"tile": 0, "tile_overlap": 0, "tile_cache": False, **loaded.decoding, **given}
    return dataclasses.replace(s, **decoding)


def condition_plans(loaded: LoadedRun, s: GenerateConfig, n: int | None) -> list[StudyPlan]:
    """Studies with their class and extra conditions, from --class / --n, --condition, --prompt and --conditions."""
    spec, classes = loaded.spec, list(s.classes)
    fixed = parse_fixed(list(s.conditions), spec, s.extrapolate)
    parse_guidance_per(list(s.guidance_per), spec, loaded.cfg.conditioning.class_column)   # refused before sampling
    prompted, prompt_fixed, ranges = parse_prompt(s.prompt, spec, s.extrapolate) if s.prompt else (None, {}, {})
    if prompted is not None:
        if classes:
            raise MedsynthError("--prompt names a class and --class was given too; choose the class in one place.")
        classes = [f"{prompted}={n or 16}"]
    table = read_condition_table(s.condition_table, spec, s.extrapolate) if s.condition_table else None
    if table is not None:
        if n is not None and n != len(table) or classes:
            raise MedsynthError(f"--conditions gives {len(table)} studies, one per row; leave out --n and --class "
                                "(a 'class' column chooses each study's class).")
        n = len(table)
    plans = plan_studies(n, classes, loaded.class_names, list(loaded.meta["class_counts"]))
    if table is not None:
        plans = [dataclasses.replace(p, class_name=table[p.index].get("class", p.class_name)) for p in plans]
    return with_conditions(plans, spec, loaded.meta.get("condition_rows", []), {**prompt_fixed, **fixed}, s.seed,
                           ranges, table)


def plan(loaded: LoadedRun, s: GenerateConfig) -> tuple[list[StudyPlan], MaskBank | None, list[MaskChoice] | None]:
    """The studies this call makes (its shard), and where their masks come from."""
    user, n = None, s.n
    if s.masks is not None:
        if not loaded.num_labels:
            raise MedsynthError("--masks was given but this model is not mask-conditioned.")
        user = load_user_masks(s.masks, tuple(loaded.meta["shape"]), loaded.spec)
        n = n if n is not None or s.classes else len(user)
    plans = condition_plans(loaded, s, n)
    if user is not None and len(plans) != len(user):
        raise MedsynthError(f"{len(plans)} studies were asked for but --masks holds {len(user)} masks; "
                            "with --masks, generate one study per mask.")
    plans = shard_of(plans, *parse_shard(s.shard))
    bank = MaskBank(loaded.folder, s.mask_augment, s.mask_flip) if loaded.num_labels and user is None else None
    return plans, bank, user


def generate(run: str | Path, out: str | Path, config: GenerateConfig | None = None, *, device: str = "auto",
             overwrite: bool = False, show_progress: bool = True, **keys) -> GenerateResult:
    """Generate synthetic studies from a finished run into `out` (written atomically).

    `config` is the generate section (medsynth.config.GenerateConfig); keyword arguments override its keys
    (n=, classes=, masks=, steps=, guidance=, seed=, batch_size=, shard=, mask_augment=, mask_flip=, max_attempts=,
    tile=, tile_overlap=, tile_cache=: a latent run's decoding, tiles of that many latent voxels, 0 decoding whole
    volumes)."""
    start = time.monotonic()
    s = with_keys(config or GenerateConfig(), keys)     # the section checks its own ranges
    dev = resolve_device(device)
    loaded = load_run(run, dev)
    s = resolve(s, loaded)
    if loaded.codec is not None:
        loaded.codec.tile, loaded.codec.overlap, loaded.codec.cache = s.tile, s.tile_overlap, s.tile_cache
    plans, bank, user = plan(loaded, s)
    with atomic_output_dir(out, overwrite) as tmp:
        table = write_set(tmp, loaded, plans, bank, user, s, dev, show_progress)
    resampled = int((table["qc_attempts"] > 1).sum()) if len(table) else 0
    failed = int((~table["qc_passed"]).sum()) if len(table) else 0
    return GenerateResult(Path(out).expanduser().resolve(), len(table), resampled, failed, time.monotonic() - start)


def write_set(folder: Path, loaded: LoadedRun, plans: list[StudyPlan], bank, user, s: GenerateConfig, dev,
              show_progress: bool) -> pd.DataFrame:
    """Every study of `plans` into `folder`, then samples.csv, overview.png and generate.json."""
    rows, previews, files = [], [], SetFolder(folder)
    shown = {plans[k].index for k in spread_by_class([p.class_name for p in plans])}   # every class asked for
    batches = [plans[i : i + s.batch_size] for i in range(0, len(plans), s.batch_size)]
    for batch in progress_iter(batches, "generating", enabled=show_progress):
        chosen = draw_masks(batch, s.seed, bank, user)
        for p, mask, (unit, attempts, problems) in zip(batch, chosen, generate_batch(loaded, batch, chosen, s, dev)):
            rows.append(write_study(folder, loaded, p, mask, unit, attempts, problems, s))
            if p.index in shown:
                previews.append((unit, mask.labels if mask else None, p.class_name or rows[-1]["study_id"]))
    table = pd.DataFrame(rows)
    table.to_csv(files.table, index=False)
    if previews:
        save_grid(files.overview, np.stack([p[0] for p in previews]), [str(p[2]) for p in previews],
                  np.stack([p[1] for p in previews]) if previews[0][1] is not None else None)
    provenance.write_json(files.record, provenance.record(
        "synthetic set", {"steps": s.steps, "guidance": s.guidance, "guidance_interval": list(s.guidance_interval),
                          "batch_size": s.batch_size, "shard": s.shard,
                          "n": len(plans), "classes": list(s.classes), "masks": s.masks, "mask_augment": s.mask_augment,
                          "mask_flip": s.mask_flip, "max_attempts": s.max_attempts, "tile": s.tile,
                          **({"conditions": list(s.conditions), "condition_table": s.condition_table,
                              "guidance_per": list(s.guidance_per),
                              "prompt": s.prompt, "extrapolate": s.extrapolate} if loaded.extras else {}),
                          **({"tile_overlap": s.tile_overlap, "tile_cache": s.tile_cache} if loaded.codec else {})},
        {"run": str(loaded.path), "run_hash": loaded.run_hash, "catalog_fingerprint": loaded.meta["catalog_fingerprint"]},
        timestamp=False, seeds={"generate": s.seed}, training_config=loaded.meta["config"],
        modality=loaded.meta["modality"], class_names=loaded.class_names,
        label_names=loaded.meta.get("label_names", {}), num_labels=loaded.num_labels, **loaded.lineage(),
        **({"label_ids": loaded.meta["label_ids"]} if loaded.meta.get("label_ids") else {}),
        **({"condition_columns": [c.as_dict() for c in loaded.extras]} if loaded.extras else {})))
    return table
