"""Settings of the stages after training: generate, audit, evaluate and export, one section each of one schema.

A stage file (`medsynth generate RUN --config gen.yaml`) holds any of the sections; each command reads its own,
after checking every section in the file. `--set section.key=value` overrides a key, and the CLI flags are
shortcuts for the common keys (a flag given wins over the file). The resolved section is recorded with the artefact.

    generate:
      n: 100
      steps: 30
      guidance: 2.0
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsynth.config.schema import ConfigError, apply_overrides, build, located, read_yaml


@dataclass(frozen=True)
class GenerateConfig:
    """`medsynth generate`: how many of what, sampler settings (None: the run's own), masks, QC and decoding."""

    n: int | None = None                 # studies, classes in training proportions (default 16)
    classes: tuple[str, ...] = ()        # NAME=COUNT per class, e.g. lesion=200
    masks: str | None = None             # folder of label maps to paint onto (mask runs); default the mask bank
    steps: int | None = None             # sampler steps; None: the run's diffusion.sample_steps
    guidance: float | None = None        # classifier-free guidance scale; None: the run's diffusion.guidance
    seed: int = 0
    batch_size: int = 4
    shard: str | None = None             # i/n: block i of n
    mask_augment: bool = True
    mask_flip: bool = False
    max_attempts: int = 3                # QC draws per study
    tile: int | None = None              # latent runs: decode in tiles of this many latent voxels; 0 whole volumes
    tile_overlap: int | None = None      # latent voxels of context per tile side; 0: the decoder's receptive radius
    tile_cache: bool | None = None       # keep tiles' activations between passes (faster, more memory than whole)
                                         # (None for any of the three: what the run recorded, else 0 / 0 / off)


@dataclass(frozen=True)
class AuditConfig:
    """`medsynth audit`: the flagging rule, detection power, channels, membership attack."""

    alpha: float = 0.05             # family-wise error over the whole set
    copies_per_kind: int = 10
    min_recall: float = 0.9         # planted-copy recall below this (any kind) -> INCONCLUSIVE
    k: int = 10                     # plain-search candidates per descriptor
    embedding: bool = True
    encoder_steps: int = 150
    membership: bool = True
    membership_studies: int = 200   # members and holdout studies scored at most
    max_membership_auc: float = 0.6  # FAIL when the AUC's 95% interval lies above this
    seed: int = 0
    redact: bool = False            # also write report_redacted.html (no training images)


@dataclass(frozen=True)
class EvaluateConfig:
    """`medsynth evaluate`: judges, downstream models and the feature encoder."""

    seeds: int = 3             # downstream models per training set (utility)
    steps: int = 300           # training steps of each judge / downstream model
    encoder_steps: int = 200   # contrastive encoder for the fidelity features
    slices: int = 8            # slices per plane per study (3D) for the 2.5D features
    pairs: int = 100           # MS-SSIM pairs per class and set
    utility: bool = True
    boost: int = 0             # synthetic rare-class studies in "real + synthetic": 0 = up to the commonest class's count
    seed: int = 0


@dataclass(frozen=True)
class ExportConfig:
    """`medsynth export`: formats and what the files say of themselves."""

    formats: tuple[str, ...] = ("nifti",)
    image_type: str = "derived"          # DICOM ImageType: derived or original
    body_part: str = "ABDOMEN"           # DICOM BodyPartExamined
    dataset_id: int = 501                # nnU-Net / MSD dataset number
    name: str | None = None              # nnU-Net / MSD dataset name
    force: bool = False                  # export without a PASS audit (recorded)
    workers: int | None = None           # DICOM writer processes; None: all cores


@dataclass(frozen=True)
class StageConfig:
    """A stage settings file: any of the four sections."""

    generate: GenerateConfig = field(default_factory=GenerateConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


SECTIONS = tuple(f.name for f in dataclasses.fields(StageConfig))


def load_stage_config(section: str, path: str | Path | None = None, overrides: list[str] | None = None,
                      flags: dict[str, Any] | None = None) -> Any:
    """The resolved `section` (generate, audit, evaluate or export): defaults, then the file's section, then the
    `--set` overrides, then the CLI flags that were given (None: not given). Every section in the file is checked."""
    where, values = "", {}
    if path is not None:
        found, values = read_yaml(path)
        where = str(found)
    for item in overrides or []:
        named = item.partition("=")[0].partition(".")[0]
        if named != section:
            raise ConfigError(f"--set {item!r} names the {named!r} section but this command reads {section!r}; "
                              f"write --set {section}.KEY=VALUE.")
    values = apply_overrides(values, overrides or [])
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    values[section] = {**(values.get(section) or {}), **given}
    try:
        return getattr(build(StageConfig, values, ""), section)
    except ConfigError as err:
        raise located(where, err) from None


def with_keys(config: Any, keys: dict[str, Any]) -> Any:
    """`config` with some keys replaced, type-checked like a file (the Python API's keyword shortcuts)."""
    if not keys:
        return config
    name = next(n for n in SECTIONS if isinstance(config, type(getattr(StageConfig(), n))))
    return build(type(config), {**dataclasses.asdict(config), **keys}, name)
