"""The main job on the built-in data, stage by stage: phantoms, ingest, train, generate, audit, evaluate, export,
index.html."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import time
from dataclasses import dataclass

import pandas as pd

from medsynth.config import BUNDLED, AuditConfig, EvaluateConfig, load_config
from medsynth.console import out as console, print_ingest
from medsynth.data.catalog import CATALOG_FILE
from medsynth.data.ingest import ingest
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.errors import Interrupted, MedsynthError
from medsynth.evaluation.evaluate import evaluate
from medsynth.exporter.export import export
from medsynth.outputs import check_output_dir
from medsynth.privacy.audit import audit
from medsynth.runs import RunFolder
from medsynth.runs.checkpoint import load_checkpoint
from medsynth.synthesis.generate import generate
from medsynth.training.trainer import train


def write_index(out: Path, rows: list[tuple[str, str]], verdict: str) -> Path:
    """One self-contained page: the summary table, the sample grid embedded, links to the reports and the card."""
    grid = out / "synthetic" / "overview.png"
    image = base64.b64encode(grid.read_bytes()).decode() if grid.is_file() else ""
    card = out / "export" / "dataset_card.md"
    table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    links = [("privacy audit report", "audit/report.html"), ("audit report without training images", "audit/report_redacted.html"),
             ("evaluation report (fidelity, diversity, conditioning, utility)", "evaluation/report.html"),
             ("dataset card", "export/dataset_card.md"), ("export manifest", "export/manifest.csv"),
             ("training metrics", RunFolder(Path("run")).metrics().as_posix())]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>medsynth demo</title><style>
body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}} table{{border-collapse:collapse}}
td{{border:1px solid #ccc;padding:.25em .6em}} img{{max-width:100%}} pre{{background:#f6f6f6;padding:1em;overflow:auto}}
</style></head><body><h1>medsynth demo</h1>
<section><h2>Summary</h2><table>{table}</table></section>
<section><h2>Synthetic samples</h2><p>Middle slices of generated studies, their label maps as contours, titled by class.</p>
<img alt="synthetic sample grid" src="data:image/png;base64,{image}"></section>
<section><h2>Reports</h2><ul>{''.join(f'<li><a href="{h}">{html.escape(t)}</a></li>' for t, h in links)}</ul>
<p>Audit verdict: <b>{verdict}</b>.</p></section>
<section><h2>Dataset card</h2><pre>{html.escape(card.read_text()) if card.is_file() else "(not written)"}</pre></section>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path


# the stages in order, with what each does
STAGES = {
    "phantom": "built-in 3D CT dataset with a rare lesion class",
    "ingest": "validate, catalog, subject-level split",
    "train": "class + mask conditioned rectified flow",
    "generate": "the rare lesion class boosted to half of the set",
    "audit": "copies of training studies? (planted copies measure the audit's power)",
    "evaluate": "fidelity, diversity, conditioning and utility next to real data",
    "export": "NIfTI, DICOM with SEG, nnU-Net",
}


@dataclass
class DemoResult:
    out: Path
    index: Path
    summary: list[tuple[str, str]]      # the table on index.html
    verdict: str                        # the audit's
    seconds: float


def finished_run(run: Path) -> dict | None:
    """The checkpoint metadata of a finished run in `run`, or None."""
    try:
        meta = load_checkpoint(RunFolder(run).checkpoint)
    except MedsynthError:
        return None
    return meta if meta.get("finished") else None


def run_demo(out: str | Path = "demo_out", quick: bool = False, device: str = "auto", overwrite: bool = False,
             resume: bool = False) -> DemoResult:
    """Run every stage into `out`; `quick` uses tiny data and the tiny 3D config. `resume` keeps the stages an
    interrupted demo finished (data, catalog, a finished or resumable run) and redoes the rest."""
    start = time.monotonic()
    out = Path(out).expanduser().resolve()
    if not resume:
        check_output_dir(out, overwrite)
    elif not (out / "catalog" / CATALOG_FILE).is_file():
        raise MedsynthError(f"{out} holds no interrupted demo to resume (no catalog); run `medsynth demo --out {out}`.")
    out.mkdir(exist_ok=True)
    try:
        return _stages(out, quick, device, resume, start)
    except (KeyboardInterrupt, Interrupted):
        raise Interrupted(f"demo interrupted; the finished stages are kept in {out} (an interrupted training run keeps "
                          f"its last checkpoint). Continue with `medsynth demo --out {out}{' --quick' if quick else ''} "
                          "--resume`.") from None


def begin(stage: str) -> None:
    """The rule that opens a stage: its number, name and what it does."""
    console.rule(f"{list(STAGES).index(stage) + 1}/{len(STAGES)} {stage}: {STAGES[stage]}")


def _stages(out: Path, quick: bool, device: str, resume: bool, start: float) -> DemoResult:
    config = BUNDLED / ("tiny_3d.yaml" if quick else "phantom_3d.yaml")
    cfg = load_config(config)
    spec = _data(out, cfg, quick, resume)
    step, loss = _train(out, cfg, config, device, resume)
    begin("generate")
    per_class = 4 if quick else 8
    made = generate(out / "run", out / "synthetic", classes=[f"lesion={per_class}", f"normal={per_class}"],
                    device=device, overwrite=True)
    console.print(f"generated {made.studies} studies in {made.seconds:.0f} s ({made.failed} flagged by QC)")
    begin("audit")
    audited = audit(out / "run", out / "synthetic", out / "audit", AuditConfig(copies_per_kind=5 if quick else 10,
                    encoder_steps=50 if quick else 150), redact=True, device=device, overwrite=True)
    console.print(f"audit {audited.verdict} in {audited.seconds:.0f} s: {audited.flagged} of {audited.studies} flagged; "
                  f"lowest planted-copy recall {audited.min_recall:.0%}")
    for reason in audited.reasons:
        console.print(f"  - {reason}")
    begin("evaluate")
    evaluated = evaluate(out / "run", out / "synthetic", out / "evaluation",
                         EvaluateConfig(seeds=2, steps=30 if quick else 150,
                                          encoder_steps=30 if quick else 150, slices=4 if quick else 8),
                         device=device, overwrite=True)
    e = evaluated.summary
    console.print(f"evaluated in {evaluated.seconds:.0f} s: Frechet distance {e['frechet_synthetic']:.2f} (real "
                  f"{e['frechet_real']:.2f}), Dice against the mask {e['dice_synthetic']:.2f} (real {e['dice_holdout']:.2f})")
    begin("export")
    exported = export(out / "synthetic", out / "export", ["nifti", "dicom", "nnunet"], audit=out / "audit",
                      force=audited.verdict != "PASS", overwrite=True)
    console.print(f"exported {exported.files} files ({exported.megabytes:.1f} MB); audit: {exported.audit_verdict}"
                  + ("" if audited.verdict == "PASS" else " (exported with --force, marked as such)"))
    rows = _summary_rows(spec, step, loss, made, per_class, audited, e, exported)
    index = write_index(out, rows, audited.verdict)
    console.rule(f"done in {(time.monotonic() - start) / 60:.1f} min")
    for key, value in rows:
        console.print(f"{key:18s} {value}")
    console.print(f"open {index} for the sample grid, the audit and evaluation reports and the dataset card.")
    return DemoResult(out, index, rows, audited.verdict, time.monotonic() - start)


def _data(out: Path, cfg, quick: bool, resume: bool) -> PhantomSpec:
    """The phantom and ingest stages (kept as they are on a resume, which run_demo refused without a catalog)."""
    # The audit calibrates on the holdout and needs at least 20 held-out studies.
    spec = PhantomSpec(dims=3, size=max(cfg.data.shape), cases=64 if quick else 100, modality="CT")
    begin("phantom")
    if resume:
        console.print(f"kept {out / 'data'} (resume)")
    else:
        data = write_phantom_dataset(out / "data", spec, overwrite=True)
        console.print(f"wrote {spec.cases} phantoms to {data}")
    begin("ingest")
    if resume:
        console.print(f"kept {out / 'catalog'} (resume)")
    else:
        print_ingest(ingest(out / "data", out / "catalog", holdout=0.4 if quick else 0.25, overwrite=True))
    return spec


def _train(out: Path, cfg, config: Path, device: str, resume: bool) -> tuple[int, float]:
    """The train stage: a finished run is kept on a resume, an unfinished one continued; (steps, recent loss)."""
    begin("train")
    meta = finished_run(out / "run") if resume else None
    if meta is not None:
        step = int(meta["step"])
        loss = float(pd.read_csv(RunFolder(out / "run").metrics())["loss"].iloc[-10:].mean())
        console.print(f"kept the finished run in {out / 'run'} (resume): {step} steps")
        return step, loss
    again = resume and RunFolder(out / "run").checkpoint.is_file()
    trained = train(cfg, out / "catalog", out / "run", overwrite=not again, resume=again, device=device,
                    config_source=str(config))
    console.print(f"trained {trained.step} steps: loss {trained.loss:.4f}, {trained.samples_per_s:.1f} samples/s")
    return trained.step, trained.loss


def _summary_rows(spec: PhantomSpec, step: int, loss: float, made, per_class: int, audited, e: dict,
                  exported) -> list[tuple[str, str]]:
    """The demo's closing table (printed and on index.html)."""
    utility = e.get("utility_mean_dice", {})
    return [("phantoms", f"{spec.cases} 3D CT, {spec.size}^3"), ("training", f"{step} steps, loss {loss:.4f}"),
            ("synthetic studies", f"{made.studies} ({per_class} lesion, {per_class} normal)"),
            ("audit", f"{audited.verdict}: {audited.flagged} flagged, planted recall >= {audited.min_recall:.0%}"
             + (f", membership AUC {audited.membership_auc:.2f}" if audited.membership_auc is not None else "")),
            ("fidelity", f"Frechet distance {e['frechet_synthetic']:.2f} (real train vs holdout {e['frechet_real']:.2f})"),
            ("conditioning", f"Dice against the mask {e['dice_synthetic']:.2f} (real {e['dice_holdout']:.2f}); classified as "
             f"requested {e['class_accuracy_synthetic']:.2f} (real {e['class_accuracy_holdout']:.2f})"),
            ("utility (Dice on real holdout)", "; ".join(f"{k} {v:.2f}" for k, v in utility.items())),
            ("export", f"{exported.files} files, {exported.megabytes:.1f} MB: NIfTI, DICOM + SEG, nnU-Net")]
