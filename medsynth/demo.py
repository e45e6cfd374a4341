"""The main job on the built-in data, stage by stage: phantoms, ingest, train, generate, audit, export, index.html."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from medsynth.privacy.audit import Settings, audit
from medsynth.config import BUNDLED, load_config
from medsynth.console import out as console, print_ingest
from medsynth.data.ingest import ingest
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.exporter.export import export
from medsynth.outputs import check_output_dir
from medsynth.synthesis.generate import generate
from medsynth.training.trainer import train


def write_index(out: Path, rows: list[tuple[str, str]], verdict: str) -> Path:
    """One self-contained page: the summary table, the sample grid embedded, links to the reports and the card."""
    grid = out / "synthetic" / "overview.png"
    image = base64.b64encode(grid.read_bytes()).decode() if grid.is_file() else ""
    card = out / "export" / "dataset_card.md"
    table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    links = [("privacy audit report", "audit/report.html"), ("audit report without training images", "audit/report_redacted.html"),
             ("dataset card", "export/dataset_card.md"), ("export manifest", "export/manifest.csv"),
             ("training metrics", "run/metrics.csv")]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>medsynth demo</title><style>
body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}} table{{border-collapse:collapse}}
td{{border:1px solid #ccc;padding:.25em .6em}} img{{max-width:100%}} pre{{background:#f6f6f6;padding:1em;overflow:auto}}
</style></head><body><h1>medsynth demo</h1>
<section><h2>Summary</h2><table>{table}</table></section>
<section><h2>Synthetic samples</h2><p>Middle slices of generated studies, their label maps as contours, titled by class.</p>
<img alt="synthetic sample grid" src="data:image/png;base64,{image}"></section>
<section><h2>Reports</h2><ul>{''.join(f'<li><a href="{h}">{html.escape(t)}</a></li>' for t, h in links)}</ul>
<p>Audit verdict: <b>{verdict}</b>. Evaluation (fidelity, diversity, utility) is not built yet.</p></section>
<section><h2>Dataset card</h2><pre>{html.escape(card.read_text()) if card.is_file() else "(not written)"}</pre></section>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path


def run_demo(out: str | Path = "demo_out", quick: bool = False, device: str = "auto", overwrite: bool = False) -> Path:
    """Run every built stage into `out`; `quick` uses tiny data and the tiny 3D config."""
    out = check_output_dir(out, overwrite)
    out.mkdir(exist_ok=True)
    config = BUNDLED / ("tiny_3d.yaml" if quick else "phantom_3d.yaml")
    cfg = load_config(config)
    # The audit calibrates on the holdout and needs at least 20 held-out studies.
    spec = PhantomSpec(dims=3, size=max(cfg.data.shape), cases=64 if quick else 100, modality="CT")
    holdout = 0.4 if quick else 0.25
    console.rule("1/6 phantom: built-in 3D CT dataset with a rare lesion class")
    data = write_phantom_dataset(out / "data", spec, overwrite=True)
    console.print(f"wrote {spec.cases} phantoms to {data}")
    console.rule("2/6 ingest: validate, catalog, subject-level split")
    print_ingest(ingest(data, out / "catalog", holdout=holdout, overwrite=True))
    console.rule(f"3/6 train: {config.name} (class + mask conditioned rectified flow)")
    trained = train(cfg, out / "catalog", out / "run", overwrite=True, device=device, config_source=str(config))
    console.print(f"trained {trained.step} steps: loss {trained.loss:.4f}, {trained.samples_per_s:.1f} samples/s")
    console.rule("4/6 generate: the rare lesion class boosted to half of the set")
    per_class = 4 if quick else 8
    made = generate(out / "run", out / "synthetic", classes=[f"lesion={per_class}", f"normal={per_class}"],
                    device=device, overwrite=True)
    console.print(f"generated {made.studies} studies in {made.seconds:.0f} s ({made.failed} flagged by QC)")
    console.rule("5/6 audit: copies of training studies? (planted copies measure the audit's power)")
    audited = audit(out / "run", out / "synthetic", out / "audit", Settings(copies_per_kind=5 if quick else 10,
                    encoder_steps=50 if quick else 150), redact=True, device=device, overwrite=True)
    console.print(f"audit {audited.verdict} in {audited.seconds:.0f} s: {audited.flagged} of {audited.studies} flagged; "
                  f"lowest planted-copy recall {audited.min_recall:.0%}")
    for reason in audited.reasons:
        console.print(f"  - {reason}")
    console.rule("6/6 export: NIfTI, DICOM with SEG, nnU-Net")
    exported = export(out / "synthetic", out / "export", ["nifti", "dicom", "nnunet"], audit=out / "audit",
                      force=audited.verdict != "PASS", overwrite=True)
    console.print(f"exported {exported.files} files ({exported.megabytes:.1f} MB); audit: {exported.audit_verdict}"
                  + ("" if audited.verdict == "PASS" else " (exported with --force, marked as such)"))
    rows = [("phantoms", f"{spec.cases} 3D CT, {spec.size}^3"), ("training", f"{trained.step} steps, loss {trained.loss:.4f}"),
            ("synthetic studies", f"{made.studies} ({per_class} lesion, {per_class} normal)"),
            ("audit", f"{audited.verdict}: {audited.flagged} flagged, planted recall >= {audited.min_recall:.0%}"
             + (f", membership AUC {audited.membership_auc:.2f}" if audited.membership_auc is not None else "")),
            ("export", f"{exported.files} files, {exported.megabytes:.1f} MB: NIfTI, DICOM + SEG, nnU-Net")]
    index = write_index(out, rows, audited.verdict)
    console.rule("done")
    for key, value in rows:
        console.print(f"{key:18s} {value}")
    console.print(f"open {index} for the sample grid, the audit report and the dataset card.")
    return out
