"""The `medsynth` command line: thin typer commands, one per stage; each parses, calls one function, prints."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from medsynth.cli.options import (DataArg, DeviceOpt, LabelsOpt, ModalityOpt, OverwriteOpt, SplitOpt, StageConfigOpt,
                                  StageSetOpt, _modality, app)
from medsynth.errors import Interrupted, MedsynthError




@app.command()
def phantom(
    out: Path = typer.Argument(..., help="Folder to write the MSD-layout dataset into (must not exist or be empty)."),
    dims: int = typer.Option(3, "--dims", help="2 for axial slices, 3 for volumes."),
    cases: int = typer.Option(40, "--cases", help="Number of phantom studies."),
    size: int = typer.Option(32, "--size", help="Grid size per side in voxels (the field of view is 320 mm)."),
    modality: str = typer.Option("CT", "--modality", help="CT (Hounsfield units) or MR (T2-like units)."),
    prevalence: float = typer.Option(0.2, "--prevalence", help="Share of cases with a liver lesion (the rare class)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; case k depends only on (seed, k)."),
    overwrite: bool = OverwriteOpt,
) -> None:
    """Write the built-in default data: procedural abdominal phantoms with label maps and a rare lesion class."""
    from medsynth.data.phantom import PhantomSpec, write_phantom_dataset

    spec = PhantomSpec(dims=dims, size=size, modality=modality.upper(), cases=cases, prevalence=prevalence, seed=seed)
    path = write_phantom_dataset(out, spec, overwrite=overwrite)
    typer.echo(f"wrote {cases} {dims}D {spec.modality} phantoms ({size}^{dims} voxels, {spec.spacing_mm:g} mm) to {path}")


@app.command()
def ingest(
    data: Path = DataArg,
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for catalog.csv, split.csv and ingest.json; "
                                       "without it, only validate and print the summary."),
    labels: Optional[Path] = LabelsOpt,
    modality: Optional[str] = ModalityOpt,
    holdout: float = typer.Option(0.25, "--holdout", help="Share of subjects held out (never trained on; the audit's null)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/holdout split."),
    list_all: bool = typer.Option(False, "--list", help="List every study, not only the first ten."),
    class_names: Optional[str] = typer.Option(None, "--class-names", help="Names for a class column whose values are "
                                              "ids, e.g. 0=malignant,1=benign (MedMNIST's `class`), or "
                                              "COLUMN:0=name,1=name; used wherever a class is shown or requested."),
    split: Optional[Path] = SplitOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Read and validate a dataset, print a summary, and (with --out) write its catalog and split."""
    from medsynth.console import print_ingest
    from medsynth.data.ingest import ingest as run_ingest

    result = run_ingest(data, out, labels, _modality(modality), holdout, seed, overwrite, class_names=class_names,
                        split=split)
    print_ingest(result, list_all=list_all)


@app.command()
def train(
    data: Path = typer.Argument(..., help="Dataset (any format ingest reads) or an ingest output folder with catalog.csv."),
    config: Path = typer.Option(..., "--config", help="YAML config, e.g. configs/tiny_3d.yaml."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, metrics.csv, sample grids, split.csv."),
    labels: Optional[Path] = LabelsOpt,
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Override train.max_steps."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Override train.max_minutes (0: no limit)."),
    set_: list[str] = typer.Option([], "--set", help="Override any config key: --set train.lr=1e-4 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT from its last checkpoint."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from the weights of another finished "
                                             "run (fine-tuning; sets train.init_from)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda. Multi-GPU: launch with torchrun."),
    stage: str = typer.Option("all", "--stage", help="Latent runs: all, or one stage of autoencoder, diffusion, "
                              "controlnet (each later stage continues the run in OUT)."),
    overwrite: bool = OverwriteOpt,
) -> None:
    """Train a class- and/or mask-conditioned diffusion model (2D or 3D) on a dataset; latent configs train an
    autoencoder first and the diffusion model in its latent space (then a ControlNet for masks, if configured)."""
    from medsynth.config import load_config
    from medsynth.training.trainer import train as run_train

    overrides = list(set_) + ([f"train.max_steps={max_steps}"] if max_steps is not None else []) \
        + ([f"train.max_minutes={max_minutes}"] if max_minutes is not None else []) \
        + ([f"train.init_from={json.dumps(str(init_from))}"] if init_from is not None else [])
    cfg = load_config(config, overrides)
    result = run_train(cfg, data, out, labels=labels, resume=resume, overwrite=overwrite, device=device,
                       config_source=str(config), stage=stage)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only the first process reports
        return
    for line in result.notes:
        typer.echo(line)
    if stage in ("all", "diffusion") and result.step == 0:
        raise MedsynthError(f"no training step finished within train.max_minutes, so the run in {result.run} is not "
                            "finished and cannot be generated from; raise --max-minutes (0: no limit) and add --resume.")
    if stage in ("all", "diffusion"):
        typer.echo(f"trained {result.step} steps ({'finished' if result.finished else 'stopped'}): loss {result.loss:.4f}, "
                   f"{result.samples_per_s:.1f} samples/s; run in {result.run}")


from medsynth.cli.make import curate, edit, generate  # noqa: E402,F401  (registered on app, in this order)


@app.command()
def audit(
    first: Path = typer.Argument(..., metavar="RUN_OR_SYNTH", help="The training run that made SYNTH (medsynth train "
                                 "--out); or, with --train, the synthetic studies to audit (any generator's: NIfTI, "
                                 "MSD / nnU-Net, DICOM, or a medsynth set)."),
    synth: Optional[Path] = typer.Argument(None, help="The synthetic set the RUN made (medsynth generate --out)."),
    out: Path = typer.Option(..., "--out", help="Report folder: report.html, report.json, pairs.csv."),
    train: Optional[Path] = typer.Option(None, "--train", help="Run-less audit: the studies the generator was trained "
                                         "on (any dataset ingest reads, or an ingest folder with its split.csv)."),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="Run-less audit: real studies of the same kind that "
                                           "were never trained on (the audit calibrates on them)."),
    split: Optional[Path] = typer.Option(None, "--split", help="Run-less audit: CSV of study_id,split saying which "
                                         "--train studies were trained on (train) and which held out (holdout)."),
    modality: Optional[str] = ModalityOpt,
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Set level: a set without copies fails at most this "
                                          "often. Default 0.05."),
    study_rate: Optional[float] = typer.Option(None, "--study-rate", help="Study level: a real study that was never "
                                               "trained on is flagged at most this often. Default 0.02."),
    copies: Optional[int] = typer.Option(None, "--copies-per-kind", help="Planted copies per rung of the ladder (exact, "
                                         "flip, shifts of 1-3 voxels, rotations of 5 and 10 degrees, noise, intensity, "
                                         "warps of 1.5 and 3 voxels, blur of 1-2 voxels with 2.5-5% noise). Default 10."),
    min_recall: Optional[float] = typer.Option(None, "--min-recall", help="Planted-copy recall needed on every required "
                                               "rung (audit.required); below it the verdict is INCONCLUSIVE. Default 0.9."),
    embedding: Optional[bool] = typer.Option(None, "--embedding/--no-embedding", help="Train the contrastive encoder "
                                             "for the embedding channel (default on)."),
    membership: Optional[bool] = typer.Option(None, "--membership/--no-membership", help="Run the loss-based "
                                              "membership attack (default on; needs a RUN)."),
    max_auc: Optional[float] = typer.Option(None, "--max-membership-auc", help="FAIL when the membership AUC's 95% "
                                            "interval lies above this. Default 0.6."),
    redact: Optional[bool] = typer.Option(None, "--redact", help="Also write report_redacted.html, without training "
                                          "images, for sharing."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for planted copies, the encoder and bootstraps. "
                                       "Default 0."),
    config: Optional[Path] = StageConfigOpt("audit"),
    set_: list[str] = StageSetOpt("audit", "encoder_steps=300"),
    device: str = DeviceOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Privacy audit: are any synthetic studies copies of training studies? Verdict PASS / FAIL / INCONCLUSIVE.

    medsynth audit RUN SYNTH --out REPORT (a medsynth run and its set), or medsynth audit SYNTH --train DATA
    --holdout DATA --out REPORT (any generator's studies against its training data)."""
    from medsynth.config import load_stage_config
    from medsynth.errors import MedsynthError
    from medsynth.privacy.audit import audit as run_audit, audit_data

    settings = load_stage_config("audit", config, set_, dict(
        alpha=alpha, study_rate=study_rate, copies_per_kind=copies, min_recall=min_recall, embedding=embedding,
        membership=membership, max_membership_auc=max_auc, seed=seed, redact=redact))
    if train is None:
        if synth is None or holdout is not None or split is not None:
            raise MedsynthError("give RUN and SYNTH (medsynth audit RUN SYNTH --out REPORT), or SYNTH with --train "
                                "(and --holdout or --split) for a set made elsewhere.")
        result = run_audit(first, synth, out, settings, device=device, overwrite=overwrite)
    else:
        if synth is not None:
            raise MedsynthError("with --train, give only the synthetic studies (medsynth audit SYNTH --train DATA "
                                "--holdout DATA --out REPORT); a RUN is audited as medsynth audit RUN SYNTH.")
        result = audit_data(first, train, out, holdout, split, settings, modality=_modality(modality),
                            overwrite=overwrite)
    _say_audit(result)


def _say_audit(result) -> None:
    """The audit's verdict line, its reasons and where the report is."""
    typer.echo(f"audit {result.verdict}: {result.flagged} of {result.studies} synthetic studies flagged; lowest "
               f"planted-copy recall on a required rung {result.min_recall:.0%}"
               + (f"; membership AUC {result.membership_auc:.2f}" if result.membership_auc is not None else "")
               + f" ({result.seconds:.0f} s)")
    for reason in result.reasons:
        typer.echo(f"  - {reason}")
    typer.echo(f"report: {result.out / 'report.html'}")


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="The training run that made SYNTH (medsynth train --out)."),
    synth: Path = typer.Argument(..., help="The synthetic set to evaluate (medsynth generate --out)."),
    out: Path = typer.Option(..., "--out", help="Report folder: report.html, report.json."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Downstream models per training set for the utility "
                                        "figures. Default 3."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps of each judge and downstream model. "
                                        "Default 300."),
    encoder_steps: Optional[int] = typer.Option(None, "--encoder-steps", help="Training steps of the feature encoder "
                                                "(Frechet distance, KID). Default 200."),
    slices: Optional[int] = typer.Option(None, "--slices", help="Slices per plane per 3D study for the per-plane "
                                         "features. Default 8."),
    pairs: Optional[int] = typer.Option(None, "--pairs", help="Random pairs per group for MS-SSIM diversity. Default 100."),
    resamples: Optional[int] = typer.Option(None, "--resamples", help="Resamples of the synthetic studies for the "
                                            "Frechet ratio's 95% interval (0: none). Default 200."),
    utility: Optional[bool] = typer.Option(None, "--utility/--no-utility", help="Train downstream models on real, "
                                           "synthetic and real + synthetic studies (the slow part; default on)."),
    family: Optional[bool] = typer.Option(None, "--family/--no-family", help="Also measure utility over the family "
                                          "of downstream recipes (MONAI Classifier with and without class weights, at "
                                          "fixed steps and fixed epochs, quarter-width resnet18; UNet at fixed steps and epochs, SegResNet) "
                                          "with a verdict "
                                          "helps / neutral / hurts. Several times slower; default off."),
    boost: Optional[int] = typer.Option(None, "--boost", help="Synthetic studies of the rarest class added to real ones "
                                        "for the real + synthetic utility set (0, the default: up to the commonest "
                                        "class's count); mask runs' family: synthetic pairs in its fixed-count mix "
                                        "(0: half the real training count)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for encoders, judges, downstream models and pair "
                                       "sampling. Default 0."),
    config: Optional[Path] = StageConfigOpt("evaluate"),
    set_: list[str] = StageSetOpt("evaluate", "seeds=8"),
    device: str = DeviceOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Evaluate a synthetic set: fidelity, diversity, conditioning fidelity and downstream utility, next to real data."""
    from medsynth.config import load_stage_config
    from medsynth.evaluation.evaluate import evaluate as run_evaluate

    settings = load_stage_config("evaluate", config, set_, dict(
        seeds=seeds, steps=steps, encoder_steps=encoder_steps, slices=slices, pairs=pairs, resamples=resamples,
        utility=utility, boost=boost, seed=seed, family=family))
    result = run_evaluate(run, synth, out, settings, device=device, overwrite=overwrite)
    print_evaluation(result)


def print_evaluation(result) -> None:
    s = result.summary
    typer.echo(f"evaluation ({result.seconds:.0f} s): Frechet distance {s['frechet_synthetic']:.3f} "
               f"(real train vs holdout {s['frechet_real']:.3f}); MS-SSIM among pairs {s['ms_ssim_synthetic']:.3f} "
               f"(real {s['ms_ssim_real']:.3f})")
    if s.get("frechet_ratio") is not None and s.get("frechet_ratio_second") is not None:
        from medsynth.evaluation.report import ratio_text

        typer.echo(f"  Frechet distance as a multiple of the real floor (95% interval): {ratio_text(s, '')} "
                   f"(contrastive encoder), {ratio_text(s, '_second')} (supervised features)")
    if "class_accuracy_synthetic" in s:
        typer.echo(f"  classified as requested: synthetic {s['class_accuracy_synthetic']:.2f}, real holdout "
                   f"{s['class_accuracy_holdout']:.2f}")
    if "dice_synthetic" in s:
        typer.echo(f"  segmenter Dice against the mask: synthetic {s['dice_synthetic']:.2f}, real holdout "
                   f"{s['dice_holdout']:.2f}")
    for key, values in s.items():
        if key.startswith("utility_"):
            typer.echo(f"  utility ({key[8:].replace('_', ' ')} on real holdout): "
                       + "; ".join(f"{n} {v:.3f}" for n, v in values.items()))
        if key.startswith("recipes_verdict_"):
            typer.echo(f"  over every downstream recipe ({key[16:]}): the synthetic set {values}")
        if key.startswith("recipes_auc_verdict_"):
            typer.echo(f"  over every downstream recipe ({key[20:]}), in the rare class's ROC AUC: {values}")
        if key.startswith("recipes_matched_verdict_"):
            typer.echo(f"  over every downstream recipe ({key[24:]}), in recall at real only's specificity: {values}")
    typer.echo(f"report: {result.out / 'report.html'}")


@app.command()
def export(
    synth: Path = typer.Argument(..., help="A synthetic set (medsynth generate --out)."),
    out: Path = typer.Option(..., "--out", help="Export folder (must not exist or be empty)."),
    formats: Optional[list[str]] = typer.Option(None, "--format", help="nifti, dicom, nnunet, msd or monai; repeat for "
                                                "several. Default nifti."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="Audit report folder (medsynth audit --out); export needs "
                                         "its verdict to be PASS unless --force; it must have judged exactly these files."),
    evaluation: Optional[Path] = typer.Option(None, "--evaluation", help="Evaluation report folder (medsynth evaluate "
                                              "--out) whose figures the dataset card cites; it must have judged "
                                              "exactly these files."),
    force: Optional[bool] = typer.Option(None, "--force", help="Export without a PASS audit; the card and manifest say so."),
    with_real: Optional[Path] = typer.Option(None, "--with-real", help="Real dataset to merge into the layouts "
                                             "(cases named real_<id>), for augmentation."),
    labels: Optional[Path] = LabelsOpt,
    image_type: Optional[str] = typer.Option(None, "--image-type", help="DICOM ImageType: derived (DERIVED\\SECONDARY, "
                                             "the default) or original (ORIGINAL\\PRIMARY, to mimic scanner output)."),
    body_part: Optional[str] = typer.Option(None, "--body-part", help="DICOM BodyPartExamined defined term (ABDOMEN, "
                                            "the default, CHEST, HEAD, BRAIN, ...): say what anatomy the model makes."),
    dataset_id: Optional[int] = typer.Option(None, "--dataset-id", help="nnU-Net / MSD dataset number (3 digits). "
                                             "Default 501."),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name for the nnU-Net / MSD folders."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes for DICOM writing (default: all cores)."),
    config: Optional[Path] = StageConfigOpt("export"),
    set_: list[str] = StageSetOpt("export", "body_part=CHEST"),
    overwrite: bool = OverwriteOpt,
) -> None:
    """Export a synthetic set as NIfTI, DICOM (+SEG), nnU-Net, MSD or a MONAI datalist, with manifest and card."""
    from medsynth.config import load_stage_config
    from medsynth.exporter.export import export as run_export

    settings = load_stage_config("export", config, set_, dict(
        formats=formats or None, image_type=image_type, body_part=body_part.upper() if body_part else None,
        dataset_id=dataset_id, name=name, force=force, workers=workers))
    result = run_export(synth, out, config=settings, audit=audit, evaluation=evaluation, with_real=with_real,
                        real_labels=labels, overwrite=overwrite)
    typer.echo(f"exported {', '.join(result.formats)}: {result.files} files, {result.megabytes:.1f} MB in "
               f"{result.seconds:.1f} s (audit: {result.audit_verdict}) to {result.out}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for everything the demo makes."),
    quick: bool = typer.Option(False, "--quick", help="Tiny data and model (about a minute), for smoke tests."),
    device: str = DeviceOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted demo in OUT: keep its data, catalog "
                                "and (finished or resumable) training run, redo the later stages."),
    overwrite: bool = OverwriteOpt,
) -> None:
    """The main job on the built-in data: phantoms, ingest, train, generate (rare class boosted), audit, evaluate,
    export, index.html."""
    from medsynth.demo import run_demo

    run_demo(out, quick=quick, device=device, overwrite=overwrite, resume=resume)


def main() -> None:
    """Entry point: user errors (bad options included) print one sentence and exit 2; Ctrl-C and SIGTERM remove what
    was unfinished, say what was kept, and exit 130."""
    from medsynth import provenance
    from medsynth.console import err, os_sentence, usage_sentence
    from medsynth.runtime import stop_on_signals

    provenance.set_command(sys.argv[1:])
    try:
        with stop_on_signals():
            code = app(standalone_mode=False)
    except MedsynthError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False)
        sys.exit(130 if isinstance(error, Interrupted) else 2)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted: finished outputs are kept, unfinished ones were removed.")
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.TyperException as error:   # bad options and arguments: typer's parser
        err.print(f"[bold red]error:[/] {usage_sentence(error)}", highlight=False)
        sys.exit(getattr(error, "exit_code", 2) or 2)
    except OSError as error:
        err.print(f"[bold red]error:[/] {os_sentence(error)}", highlight=False)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
