"""Settings of the stages after training: generate, edit, audit, evaluate and export, one section each of one schema.

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


FLAGS = {("generate", "max_attempts"): "--qc-attempts", ("generate", "classes"): "--class",
         ("edit", "lesion_class"): "--class", ("edit", "margin_mm"): "--margin", ("edit", "cases"): "--case",
         ("export", "formats"): "--format"}   # where a key's CLI flag is not --key-with-dashes


def require(ok: bool, section: str, key: str, rule: str, value: Any) -> None:
    """Refuse a value out of its range, naming the key and its flag: 'generate.steps (--steps) must be ...'."""
    if not ok:
        flag = FLAGS.get((section, key), "--" + key.replace("_", "-"))
        raise ConfigError(f"{section}.{key} ({flag}) must be {rule}, got {value!r}.")


def require_each(section: str, obj: Any, rules: dict[str, tuple[Any, str]]) -> None:
    """`rules`: key -> (test of the value, the rule in words); a None value (the run's own default) always passes."""
    for key, (test, rule) in rules.items():
        value = getattr(obj, key)
        require(value is None or test(value), section, key, rule, value)


POSITIVE = (lambda v: v >= 1, "a positive integer")
NOT_NEGATIVE = (lambda v: v >= 0, "0 or more")


@dataclass(frozen=True)
class GenerateConfig:
    """`medsynth generate`: how many of what, sampler settings (None: the run's own), masks, QC and decoding."""

    n: int | None = None                 # studies, classes in training proportions (default 16)
    classes: tuple[str, ...] = ()        # NAME=COUNT per class, e.g. lesion=200
    masks: str | None = None             # folder of label maps to paint onto (mask runs); default the mask bank
    steps: int | None = None             # sampler steps; None: the run's diffusion.sample_steps
    guidance: float | None = None        # classifier-free guidance scale; None: the run's diffusion.guidance
    guidance_interval: tuple[float, float] = (0.0, 1.0)   # noise fractions (0 clean, 1 pure noise) guidance applies
                                         # at; elsewhere the plain conditional prediction. Default: the whole trajectory
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
    conditions: tuple[str, ...] = ()     # NAME=VALUE extra conditions fixed for every study (the rest drawn jointly)
    extrapolate: bool = False            # allow covariates outside the training range
    condition_table: str | None = None   # CSV, one row per study: its class and extra conditions (blank: drawn)
    prompt: str | None = None            # structured prompt, e.g. "lesion, F, age 70-80"
    guidance_per: tuple[str, ...] = ()   # NAME=W: one condition's own guidance scale (the class column or an extra)

    def __post_init__(self) -> None:
        require_each("generate", self, {"n": POSITIVE, "steps": POSITIVE, "batch_size": POSITIVE,
                                        "max_attempts": POSITIVE, "guidance": (lambda v: v >= 0, "0 or more (1 turns "
                                                                              "guidance off)"),
                                        "tile": NOT_NEGATIVE, "tile_overlap": NOT_NEGATIVE,
                                        "guidance_interval": (lambda v: len(v) == 2 and 0 <= v[0] < v[1] <= 1,
                                                              "two noise fractions, 0 <= start < end <= 1 (e.g. "
                                                              "0.2,0.85)")})


@dataclass(frozen=True)
class EditConfig:
    """`medsynth edit`: which real studies, where the lesion goes, and the inpainting sampler (None: the run's own)."""

    cases: tuple[str, ...] = ()          # study ids to edit (default: every study, after `where`)
    where: tuple[str, ...] = ()          # COLUMN=VALUE filters on the studies' labels, e.g. pathology=normal
    per_study: int = 1                   # edits of each study
    lesions: str | None = None           # folder of the user's lesion masks, <study_id>.nii.gz on each study's grid
    inside: str | None = None            # host label (name or id) the whole lesion lies in; None: the structure
                                         # at its centre
    size_mm: tuple[float, float] | None = None   # range of the lesion's equivalent diameter; None: the bank's sizes
    margin_mm: float | None = None       # edit region = lesion dilated by this; None: 1.5 model voxels
    lesion_label: str | None = None      # the run's lesion label (name or id); None: the label named lesion/tumour
    lesion_class: str | None = None      # class the edit is conditioned on; None: the class named like the label
    steps: int | None = None             # sampler steps; None: the run's diffusion.sample_steps
    guidance: float | None = None
    resample: int = 3                    # RePaint passes per step (1: no jumps back)
    seed: int = 0
    batch_size: int = 4

    def __post_init__(self) -> None:
        require_each("edit", self, {"per_study": POSITIVE, "steps": POSITIVE, "resample": POSITIVE,
                                    "batch_size": POSITIVE, "margin_mm": NOT_NEGATIVE,
                                    "guidance": (lambda v: v >= 0, "0 or more (1 turns guidance off)"),
                                    "size_mm": (lambda v: 0 < v[0] <= v[1], "two sizes in mm, smallest first "
                                                                            "(e.g. 10,25)")})


# The planted-copy rungs an audit must find for its verdict to vouch for the set (medsynth.privacy.plant names them):
# the mild copies. 3-voxel shifts, 10-degree rotations and 3-voxel warps are planted and reported, not required.
REQUIRED_RUNGS = ("exact", "flip", "shift1", "shift2", "rotation5", "noise", "intensity", "elastic1.5",
                  "blur1_noise2.5", "blur1_noise5", "blur2_noise2.5", "blur2_noise5", "mismatched")


@dataclass(frozen=True)
class AuditConfig:
    """`medsynth audit`: the flagging rule, detection power, channels, membership attack."""

    alpha: float = 0.05             # set level: a set without copies fails at most this often
    study_rate: float = 0.02        # study level: a real study never trained on is flagged at most this often
    copies_per_kind: int = 10       # planted copies per rung of the ladder
    min_recall: float = 0.9         # planted-copy recall below this on a required rung -> INCONCLUSIVE
    required: tuple[str, ...] = REQUIRED_RUNGS   # the rungs the verdict vouches for (privacy.plant.RUNGS)
    k: int = 10                     # plain-search candidates per descriptor
    embedding: bool = True
    encoder_steps: int = 150
    membership: bool = True
    membership_studies: int = 200   # members and holdout studies scored at most
    max_membership_auc: float = 0.6  # FAIL when the AUC's 95% interval lies above this
    seed: int = 0
    redact: bool = False            # also write report_redacted.html (no training images)

    def __post_init__(self) -> None:
        require_each("audit", self, {
            "alpha": (lambda v: 0 < v < 1, "between 0 and 1"), "study_rate": (lambda v: 0 < v < 0.5, "between 0 and 0.5"),
            "min_recall": (lambda v: 0 <= v <= 1, "between 0 and 1"),
            "copies_per_kind": POSITIVE, "k": POSITIVE, "encoder_steps": POSITIVE,
            "membership_studies": (lambda v: v >= 2, "at least 2"),
            "max_membership_auc": (lambda v: 0.5 <= v <= 1, "between 0.5 and 1")})


@dataclass(frozen=True)
class EvaluateConfig:
    """`medsynth evaluate`: judges, downstream models and the feature encoder."""

    seeds: int = 3             # downstream models per training set (utility)
    steps: int = 300           # training steps of each judge / downstream model
    encoder_steps: int = 200   # contrastive encoder for the fidelity features
    slices: int = 8            # slices per plane per study (3D) for the 2.5D features
    pairs: int = 100           # MS-SSIM pairs per class and set
    resamples: int = 200       # bootstrap resamples of studies for the Frechet ratio's 95% interval (0: none)
    utility: bool = True
    boost: int = 0             # synthetic rare-class studies in "real + synthetic": 0 = up to the commonest class's count
    seed: int = 0
    family: bool = False       # utility over the family of downstream recipes (evaluation/recipes.py), with a verdict
    dose: float = 1.0          # family: share of each mix's synthetic count that is added (1: up to balance, boost)

    def __post_init__(self) -> None:
        require_each("evaluate", self, {"seeds": POSITIVE, "steps": POSITIVE, "encoder_steps": POSITIVE,
                                        "slices": POSITIVE, "pairs": POSITIVE,
                                        "resamples": (lambda v: v >= 0, "0 (no interval) or more"),
                                        "boost": (lambda v: v >= 0, "0 (up to the commonest class's count) or more"),
                                        "dose": (lambda v: 0 < v <= 1, "a share above 0 and at most 1")})


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

    def __post_init__(self) -> None:
        require_each("export", self, {"workers": POSITIVE, "dataset_id": (lambda v: 1 <= v <= 999, "1 to 999 "
                                                                          "(nnU-Net's three digits)"),
                                      "image_type": (lambda v: v in ("derived", "original"), "derived or original")})


@dataclass(frozen=True)
class StageConfig:
    """A stage settings file: any of its sections."""

    generate: GenerateConfig = field(default_factory=GenerateConfig)
    edit: EditConfig = field(default_factory=EditConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


SECTIONS = tuple(f.name for f in dataclasses.fields(StageConfig))


def load_stage_config(section: str, path: str | Path | None = None, overrides: list[str] | None = None,
                      flags: dict[str, Any] | None = None) -> Any:
    """The resolved `section` (generate, edit, audit, evaluate or export): defaults, then the file's section, then the
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
