"""The main job on the built-in data, stage by stage: phantoms, ingest, train, generate, export."""

from __future__ import annotations

from pathlib import Path

from medsynth.config import BUNDLED, load_config
from medsynth.console import out as console, print_ingest
from medsynth.data.ingest import ingest
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.export.export import export
from medsynth.outputs import check_output_dir
from medsynth.synthesis.generate import generate
from medsynth.training.trainer import train


def run_demo(out: str | Path = "demo_out", quick: bool = False, device: str = "auto", overwrite: bool = False) -> Path:
    """Run every built stage into `out`; `quick` uses tiny data and the tiny 3D config."""
    out = check_output_dir(out, overwrite)
    out.mkdir(exist_ok=True)
    config = BUNDLED / ("tiny_3d.yaml" if quick else "phantom_3d.yaml")
    cfg = load_config(config)
    spec = PhantomSpec(dims=3, size=max(cfg.data.shape), cases=16 if quick else 60, modality="CT")
    console.rule("1/5 phantom: built-in 3D CT dataset with a rare lesion class")
    data = write_phantom_dataset(out / "data", spec, overwrite=True)
    console.print(f"wrote {spec.cases} phantoms to {data}")
    console.rule("2/5 ingest: validate, catalog, subject-level split")
    print_ingest(ingest(data, out / "catalog", overwrite=True))
    console.rule(f"3/5 train: {config.name} (class + mask conditioned rectified flow)")
    trained = train(cfg, out / "catalog", out / "run", overwrite=True, device=device, config_source=str(config))
    console.print(f"trained {trained.step} steps: loss {trained.loss:.4f}, {trained.samples_per_s:.1f} samples/s")
    console.rule("4/5 generate: the rare lesion class boosted to half of the set")
    per_class = 4 if quick else 8
    made = generate(out / "run", out / "synthetic", classes=[f"lesion={per_class}", f"normal={per_class}"],
                    device=device, overwrite=True)
    console.print(f"generated {made.studies} studies in {made.seconds:.0f} s ({made.failed} flagged by QC)")
    console.rule("5/5 export: NIfTI, DICOM with SEG, nnU-Net")
    exported = export(out / "synthetic", out / "export", ["nifti", "dicom", "nnunet"], force=True, overwrite=True)
    console.print(f"exported {exported.files} files ({exported.megabytes:.1f} MB); audit: {exported.audit_verdict}")
    console.rule("done")
    console.print(f"outputs in {out}: samples {out / 'synthetic' / 'overview.png'}, card {out / 'export' / 'dataset_card.md'}."
                  " The privacy audit and evaluation are not built yet, so the export is marked NOT AUDITED.")
    return out
