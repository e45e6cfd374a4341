"""medsynth: synthetic medical imaging data with conditional diffusion, a privacy audit and DICOM/NIfTI export.

The stages as functions (imported on first use, so `import medsynth` stays light); the CLI calls these and nothing else:

    medsynth.ingest(data, out)                              -> IngestResult (catalog, split, label names)
    medsynth.train(medsynth.load_config(cfg), data, run)    -> TrainResult (run folder, steps, loss)
    medsynth.generate(run, synth, classes=["lesion=20"])    -> GenerateResult (studies, QC flags)
    medsynth.generate(run, synth, medsynth.load_stage_config("generate", "gen.yaml"))   (the same settings from YAML)
    medsynth.edit(run, data, edited, inside="liver")        -> EditResult (edited count, skipped and why)
    medsynth.audit(run, synth, report)                      -> AuditResult (verdict, reasons, planted recall, membership AUC)
    medsynth.audit_data(synth, train, report, holdout=h)    -> AuditResult (any generator's set, no run; or split=CSV)
    medsynth.evaluate(run, synth, out)                      -> EvaluateResult (fidelity, diversity, conditioning, utility)
    medsynth.export(synth, out, ["nifti", "dicom"], audit=report) -> ExportResult
    medsynth.run_demo(out, quick=True)                      -> DemoResult
"""

from importlib import import_module

from medsynth.errors import MedsynthError

__version__ = "0.1.0"

# public name -> (module, attribute)
_API = {
    "ingest": ("medsynth.data.ingest", "ingest"),
    "load_config": ("medsynth.config", "load_config"),
    "train": ("medsynth.training.trainer", "train"),
    "generate": ("medsynth.synthesis.generate", "generate"),
    "edit": ("medsynth.synthesis.edit", "edit"),
    "EditConfig": ("medsynth.config", "EditConfig"),
    "load_stage_config": ("medsynth.config", "load_stage_config"),
    "GenerateConfig": ("medsynth.config", "GenerateConfig"),
    "AuditConfig": ("medsynth.config", "AuditConfig"),
    "EvaluateConfig": ("medsynth.config", "EvaluateConfig"),
    "ExportConfig": ("medsynth.config", "ExportConfig"),
    "AuditSettings": ("medsynth.config", "AuditConfig"),         # the names of earlier releases
    "EvaluateSettings": ("medsynth.config", "EvaluateConfig"),
    "audit": ("medsynth.privacy.audit", "audit"),
    "audit_data": ("medsynth.privacy.audit", "audit_data"),
    "evaluate": ("medsynth.evaluation.evaluate", "evaluate"),
    "curate": ("medsynth.evaluation.curate", "curate"),
    "export": ("medsynth.exporter.export", "export"),
    "write_phantom_dataset": ("medsynth.data.phantom", "write_phantom_dataset"),
    "PhantomSpec": ("medsynth.data.phantom", "PhantomSpec"),
    "run_demo": ("medsynth.demo", "run_demo"),
}


def __getattr__(name: str):
    if name in _API:
        module, attribute = _API[name]
        return getattr(import_module(module), attribute)
    raise AttributeError(f"module 'medsynth' has no attribute {name!r}")


__all__ = ["MedsynthError", "__version__", *_API]
