"""The CLI's app and the options its commands share."""

from __future__ import annotations

from typing import Optional

import typer

from medsynth import __version__
from medsynth.errors import MedsynthError


app = typer.Typer(
    name="medsynth",
    help="Synthetic medical imaging data: make phantoms, ingest real scans, train conditional diffusion models, generate labelled synthetic studies, audit them for copies of training patients, export NIfTI, DICOM (+SEG) and training layouts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataArg = typer.Argument(..., help="Dataset: NIfTI file or folder, MSD / nnU-Net v2 folder, DICOM folder, or MedMNIST .npz.")
LabelsOpt = typer.Option(None, "--labels", help="CSV of study-level labels: case-id column, then one column per label "
                         "or covariate (a 'subject_id' column groups studies per person). Default: DATA/labels.csv if present.")
ModalityOpt = typer.Option(None, "--modality", help="Override the modality the files state: CT, MR or OT (other).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace OUT if it already holds files.")
SplitOpt = typer.Option(None, "--split", help="CSV of study_id,split (train, or holdout / test / val): a split made "
                        "elsewhere, honoured exactly instead of drawing one (--holdout and --seed are then not used).")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medsynth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")) -> None:
    """Synthetic medical imaging data you can train on and share."""


def StageConfigOpt(section: str):
    return typer.Option(None, "--config", help=f"YAML settings file with a `{section}:` section (any key of it; the "
                        "flags here win over the file). Unknown keys are refused.")


def StageSetOpt(section: str, example: str):
    return typer.Option([], "--set", help=f"Override any {section} key: --set {section}.{example} (repeatable).")


def _modality(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    value = value.upper()
    if value not in ("CT", "MR", "OT"):
        raise MedsynthError(f"--modality must be CT, MR or OT, got {value!r}.")
    return value
