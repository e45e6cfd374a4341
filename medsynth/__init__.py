"""medsynth: synthetic medical imaging data with conditional diffusion, a privacy audit and DICOM/NIfTI export.

The stages as functions (imported on first use, so `import medsynth` stays light):

    medsynth.ingest(data, out)                        -> IngestResult (catalog, split, label names)
    medsynth.train(medsynth.load_config(cfg), data, run)  -> TrainResult (run folder, steps, loss)
    medsynth.generate(run, synth, classes=["lesion=20"])  -> GenerateResult
    from medsynth.audit.audit import audit, Settings   # (medsynth.audit is the subpackage's name)
    audit(run, synth, report, Settings(alpha=0.05))    -> AuditResult (verdict, reasons, recall, membership AUC)
    from medsynth.export.export import export   # (medsynth.export is the subpackage's name)
    export(synth, out, ["nifti", "dicom"], audit=report)  -> ExportResult
"""

from importlib import import_module

from medsynth.errors import MedsynthError

__version__ = "0.1.0"

_API = {
    "ingest": "medsynth.data.ingest",
    "load_config": "medsynth.config",
    "train": "medsynth.training.trainer",
    "generate": "medsynth.synthesis.generate",
    "write_phantom_dataset": "medsynth.data.phantom",
    "PhantomSpec": "medsynth.data.phantom",
    "run_demo": "medsynth.demo",
}


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'medsynth' has no attribute {name!r}")


__all__ = ["MedsynthError", "__version__", *_API]
