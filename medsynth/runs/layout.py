"""Where everything lives in a run folder and in a synthetic set: the only place their file names are written.

A run folder (`medsynth train --out RUN`):

    config.yaml                 the resolved training config
    catalog.csv, split.csv      the studies it saw, and which were trained on (split = train) or held out
    run.json                    provenance: data source, catalog fingerprint, config file, seeds, versions
    metrics.csv                 step, loss, lr, samples/s (also autoencoder_metrics.csv, controlnet_metrics.csv)
    mask_bank.npz               training label maps on the model grid (mask-conditioned runs)
    checkpoints/last.pt         the diffusion model (EMA, raw, optimiser); latent runs add autoencoder.pt, controlnet.pt
    samples/*.png               preview grids

A synthetic set (`medsynth generate --out SYNTH`): samples.csv (one row per study), generate.json (provenance),
and per study <id>_image.nii.gz, <id>_label.nii.gz (mask runs), <id>.json; overview.png.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from medsynth import provenance
from medsynth.data.catalog import CATALOG_FILE, SPLIT_FILE, read_catalog, save_catalog_folder, with_split_file
from medsynth.errors import MedsynthError


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder, by what they are."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def catalog(self) -> Path:
        return self.path / CATALOG_FILE

    @property
    def split(self) -> Path:
        return self.path / SPLIT_FILE

    @property
    def record(self) -> Path:
        return self.path / "run.json"

    @property
    def mask_bank(self) -> Path:
        return self.path / "mask_bank.npz"

    @property
    def checkpoint(self) -> Path:
        """The diffusion model's checkpoint."""
        return self.path / "checkpoints" / "last.pt"

    @property
    def autoencoder(self) -> Path:
        return self.path / "checkpoints" / "autoencoder.pt"

    @property
    def controlnet(self) -> Path:
        return self.path / "checkpoints" / "controlnet.pt"

    def metrics(self, stage: str = "diffusion") -> Path:
        """metrics.csv for the diffusion model; autoencoder_metrics.csv, controlnet_metrics.csv for the others."""
        return self.path / ("metrics.csv" if stage == "diffusion" else f"{stage}_metrics.csv")

    def samples(self, name: str) -> Path:
        return self.path / "samples" / name

    def relative(self, path: Path) -> str:
        """A path inside the run, as the run names it (e.g. checkpoints/autoencoder.pt) in messages."""
        return path.relative_to(self.path).as_posix()

    # writing

    def write_config(self, config: dict) -> None:
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    def write_start(self, config: dict, catalog: pd.DataFrame, record: dict) -> None:
        """A new run: the samples folder, config.yaml, split.csv, catalog.csv and run.json."""
        (self.path / "samples").mkdir(parents=True)
        self.write_config(config)
        save_catalog_folder(self.path, catalog)
        provenance.write_json(self.record, record)

    def save_mask_bank(self, labels: np.ndarray, study_ids: list[str], classes: list[str]) -> None:
        """The training label maps on the model grid, with their study ids and classes ('' without classes)."""
        np.savez_compressed(self.mask_bank, labels=labels, study_ids=np.array(study_ids), classes=np.array(classes))

    # reading

    def read_catalog(self) -> pd.DataFrame:
        """The studies the run saw, split as its split.csv says (the file every stage reads the split from)."""
        return with_split_file(read_catalog(self.catalog), self.path)

    def read_record(self) -> dict:
        return json.loads(self.record.read_text())

    def read_mask_bank(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels (N, *spatial) uint8, study ids (N,), classes (N,))."""
        if not self.mask_bank.is_file():
            if self.record.is_file() and "privacy" in self.read_record():
                raise MedsynthError("this run was trained with differential privacy, which keeps no training label maps "
                                    "(a mask bank would store them without privacy); give label maps with --masks DIR "
                                    "(generate) or --lesions DIR (edit).")
            raise MedsynthError(f"{self.mask_bank} is missing; this run was not trained with mask conditioning, or the "
                                "file was removed.")
        with np.load(self.mask_bank) as bank:
            return bank["labels"], bank["study_ids"], bank["classes"]


@dataclass(frozen=True)
class SetFolder:
    """The files of one synthetic set."""

    path: Path

    @property
    def table(self) -> Path:
        return self.path / "samples.csv"

    @property
    def record(self) -> Path:
        return self.path / "generate.json"

    @property
    def overview(self) -> Path:
        return self.path / "overview.png"

    @staticmethod
    def image_name(study_id: str) -> str:
        return f"{study_id}_image.nii.gz"

    @staticmethod
    def label_name(study_id: str) -> str:
        return f"{study_id}_label.nii.gz"

    def study_record(self, study_id: str) -> Path:
        return self.path / f"{study_id}.json"

    def is_set(self) -> bool:
        return self.table.is_file() and self.record.is_file()

