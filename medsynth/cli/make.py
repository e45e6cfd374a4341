"""The CLI's making commands: `generate` (and --curate), `curate` and `edit` (registered on medsynth.cli's app)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medsynth.cli.options import DeviceOpt, ModalityOpt, OverwriteOpt, StageConfigOpt, StageSetOpt, _modality, app
from medsynth.errors import MedsynthError


@app.command()
def generate(
    run: Path = typer.Argument(..., help="A finished training run folder (medsynth train --out)."),
    out: Path = typer.Option(..., "--out", help="Folder for the synthetic studies (must not exist or be empty)."),
    n: Optional[int] = typer.Option(None, "--n", help="Number of studies, classes in training proportions (default 16)."),
    class_counts: Optional[list[str]] = typer.Option(None, "--class", help="Explicit count per class, e.g. --class "
                                                     "lesion=200 --class normal=50 (repeatable)."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Folder of NIfTI label maps on the model grid to paint "
                                         "images onto (mask-conditioned runs); default: the run's mask bank."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (rectified flow or DDIM); default from the config."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale; 1 turns it off."),
    guidance_interval: Optional[str] = typer.Option(None, "--guidance-interval", help="Guide only while the noise "
                                                    "fraction (0 clean, 1 pure noise) is above START and at most END, "
                                                    "e.g. 0.2,0.85; default the whole trajectory."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Study k depends only on (run, seed, k). Default 0."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Studies sampled together (does not change "
                                             "the results). Default 4."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: generate only block i of n (no overlap, no gap)."),
    mask_augment: Optional[bool] = typer.Option(None, "--mask-augment/--no-mask-augment", help="Seeded small affine + "
                                                "elastic augmentation of mask-bank masks (default on)."),
    mask_flip: Optional[bool] = typer.Option(None, "--mask-flip", help="Also flip bank masks left-right (only for "
                                             "symmetric anatomy)."),
    qc_attempts: Optional[int] = typer.Option(None, "--qc-attempts", help="Draws per study before a QC failure is kept "
                                              "and flagged. Default 3."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Latent runs: decode in tiles of this many latent voxels "
                                       "per side (bounded memory, same images to ~1e-4); 0 decodes whole volumes."),
    curate: bool = typer.Option(False, "--curate", help="Keep only studies a real-data classifier finds plausible for "
                                "their class and no nearer a training study than real unseen patients (see curate)."),
    condition: Optional[list[str]] = typer.Option(None, "--condition", help="An extra condition fixed for every study, "
                                                  "e.g. --condition sex=F --condition age=72 (repeatable); the run's "
                                                  "other conditions are drawn together from its training studies."),
    extrapolate: Optional[bool] = typer.Option(None, "--extrapolate", help="Allow covariates outside the range the "
                                               "run was trained on."),
    conditions_file: Optional[Path] = typer.Option(None, "--conditions", help="CSV with one row per study: a 'class' "
                                                   "column and any of the run's condition columns (blank: drawn)."),
    guidance_per: Optional[list[str]] = typer.Option(None, "--guidance-per", help="One condition's own guidance "
                                                     "scale, e.g. --guidance-per sex=3 (1: as the joint --guidance "
                                                     "gives it; repeatable)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Structured prompt matched against the run's own "
                                         "vocabulary, e.g. \"lesion, F, age 70-80\"."),
    config: Optional[Path] = StageConfigOpt("generate"),
    set_: list[str] = StageSetOpt("generate", "steps=20"),
    device: str = DeviceOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Generate synthetic studies (image, and label map for mask-conditioned runs) in physical units."""
    from medsynth.config import load_stage_config
    from medsynth.synthesis.generate import generate as run_generate

    settings = load_stage_config("generate", config, set_, dict(
        n=n, classes=class_counts or None, masks=masks, steps=steps, guidance=guidance, seed=seed,
        guidance_interval=_pair(guidance_interval, "--guidance-interval", "two noise fractions, e.g. 0.2,0.85"),
        batch_size=batch_size, shard=shard, mask_augment=mask_augment, mask_flip=mask_flip, max_attempts=qc_attempts,
        tile=tile, conditions=condition or None, extrapolate=extrapolate,
        condition_table=str(conditions_file) if conditions_file else None, prompt=prompt,
        guidance_per=guidance_per or None))
    if curate:
        return generate_curated(run, out, settings, device, overwrite)
    result = run_generate(run, out, settings, device=device, overwrite=overwrite)
    typer.echo(f"generated {result.studies} studies in {result.seconds:.1f} s ({result.resampled} re-sampled after QC, "
               f"{result.failed} still flagged) into {result.out}; see samples.csv and overview.png")


def generate_curated(run: Path, out: Path, settings, device: str, overwrite: bool) -> None:
    """generate --curate: the whole set in a staging folder beside OUT, then its curated studies into OUT."""
    import shutil

    from medsynth.evaluation.curate import curate as run_curate
    from medsynth.outputs import check_output_dir
    from medsynth.synthesis.generate import generate as run_generate

    check_output_dir(out, overwrite)
    staging = out.expanduser().resolve().parent / f".{out.name}.uncurated"
    try:
        made = run_generate(run, staging, settings, device=device, overwrite=True)
        result = run_curate(run, staging, out, device=device, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    typer.echo(f"generated {made.studies} studies, kept {result.kept} after curation ({len(result.dropped)} dropped; "
               f"the rule and each drop are in generate.json) into {result.out}")


@app.command()
def curate(
    run: Path = typer.Argument(..., help="The run that generated SYNTH."),
    synth: Path = typer.Argument(..., help="A synthetic set (medsynth generate --out)."),
    out: Path = typer.Option(..., "--out", help="Folder for the curated set (a new set; SYNTH is left as it is)."),
    quantile: float = typer.Option(0.1, "--quantile", help="Drop a study less plausible for its class than this share "
                                   "of real held-out studies of that class."),
    steps: int = typer.Option(300, "--steps", help="Training steps of the plausibility classifier."),
    device: str = DeviceOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Keep the studies a real-data classifier finds plausible for their class and that are no nearer a training study
    than real unseen patients are (both thresholds calibrated on the run's holdout)."""
    from medsynth.evaluation.curate import curate as run_curate

    result = run_curate(run, synth, out, quantile=quantile, steps=steps, device=device, overwrite=overwrite)
    typer.echo(f"kept {result.kept} studies, dropped {len(result.dropped)} (the rule and each drop are in "
               f"generate.json) into {result.out}")


@app.command()
def edit(
    run: Path = typer.Argument(..., help="A finished run (medsynth train --out): mask-conditioned with a lesion label, "
                                "or class-conditioned given --lesions."),
    data: Path = typer.Argument(..., help="The real studies to edit: any dataset ingest reads (NIfTI, MSD / nnU-Net, "
                                "DICOM) or an ingest folder."),
    out: Path = typer.Option(..., "--out", help="Folder for the edited studies (must not exist or be empty)."),
    cases: Optional[list[str]] = typer.Option(None, "--case", help="Edit only this study (repeatable)."),
    where: Optional[list[str]] = typer.Option(None, "--where", help="Edit only studies whose label COLUMN=VALUE, e.g. "
                                              "--where pathology=normal (repeatable)."),
    per_study: Optional[int] = typer.Option(None, "--per-study", help="Edits of each study, each its own lesion. "
                                            "Default 1."),
    lesions: Optional[Path] = typer.Option(None, "--lesions", help="Folder of your lesion masks, <study_id>.nii.gz on "
                                           "each study's own grid; default: shapes from the run's mask bank (a "
                                           "run without masks needs them: lesion voxels 1)."),
    inside: Optional[str] = typer.Option(None, "--inside", help="Host label (name or id): the whole lesion lies inside "
                                         "it, off other structures. Default: the structure at the lesion's centre."),
    size_mm: Optional[str] = typer.Option(None, "--size-mm", help="Range of the lesion's equivalent diameter, e.g. "
                                          "10,25; default: the sizes of the bank's lesions (x0.8-1.2)."),
    margin: Optional[float] = typer.Option(None, "--margin", help="mm around the lesion the model repaints and blends "
                                           "(default 1.5 model voxels)."),
    lesion_label: Optional[str] = typer.Option(None, "--lesion-label", help="The run's lesion label (name or id); "
                                               "default: the label named lesion or tumour."),
    lesion_class: Optional[str] = typer.Option(None, "--class", help="Class to condition on (class-conditioned runs); "
                                               "default: the class named like the lesion label, else the rarest."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps; default from the run's config."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale; 1 turns it off."),
    resample: Optional[int] = typer.Option(None, "--resample", help="RePaint passes per step (1: none). Default 3."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Edit k of study n depends only on (run, seed, n, k)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Edits sampled together. Default 4."),
    modality: Optional[str] = ModalityOpt,
    config: Optional[Path] = StageConfigOpt("edit"),
    set_: list[str] = StageSetOpt("edit", "resample=5"),
    device: str = DeviceOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Paint a synthetic lesion into real studies (RePaint inpainting); every voxel outside the edit region stays.

    The output holds real patient anatomy: it is marked edited-real everywhere, is not de-identified, exports only
    to NIfTI layouts and gets no sharing verdict from the audit."""
    from medsynth.config import load_stage_config
    from medsynth.synthesis.edit import edit as run_edit

    settings = load_stage_config("edit", config, set_, dict(
        cases=cases or None, where=where or None, per_study=per_study, lesions=lesions, inside=inside,
        size_mm=_pair(size_mm, "--size-mm", "two sizes in mm, smallest first (e.g. 10,25)"), margin_mm=margin,
        lesion_label=lesion_label, lesion_class=lesion_class,
        steps=steps, guidance=guidance, resample=resample, seed=seed, batch_size=batch_size))
    result = run_edit(run, data, out, settings, device=device, modality=_modality(modality), overwrite=overwrite)
    typer.echo(f"edited {result.edited} studies in {result.seconds:.1f} s into {result.out} ({result.changed_outside} "
               "voxels changed outside the edit regions); see samples.csv and overview.png")
    for study_id, why in result.skipped:
        typer.echo(f"  skipped {study_id}: {why}")


def _pair(value: Optional[str], option: str, rule: str) -> Optional[list[float]]:
    """"A,B" as two numbers (None when the option was not given)."""
    if value is None:
        return None
    try:
        parts = [float(v) for v in value.replace(" ", "").split(",")]
    except ValueError:
        parts = []
    if len(parts) != 2:
        raise MedsynthError(f"{option} must be {rule}, got {value!r}.")
    return parts
