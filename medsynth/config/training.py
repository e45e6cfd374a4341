"""The training config: what a run is trained with (data, conditioning, model, diffusion, train, latent sections).

Saved in the run folder and in every checkpoint; a resumed run or a later stage is compared against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsynth.config.schema import ConfigError, apply_overrides, as_dict, build, located, read_yaml


@dataclass(frozen=True)
class DataConfig:
    spacing: tuple[float, ...] | None = None     # target voxel size (mm); None keeps each study's own
    shape: tuple[int, ...] = (32, 32, 32)        # model grid (centre crop / pad)
    ct_window: tuple[float, float] = (-1000.0, 1000.0)  # HU mapped to [-1, 1]
    percentiles: tuple[float, float] = (0.5, 99.5)      # MR / other: per-volume range mapped to [-1, 1]
    holdout: float = 0.25                        # share of subjects held out when DATA is not an ingest folder
    split_seed: int = 0


@dataclass(frozen=True)
class ConditioningConfig:
    class_column: str | None = None   # study-level label to condition on (catalog column), e.g. 'pathology'
    mask: bool = False                # paint images onto label maps (one-hot mask channels)
    class_dropout: float = 0.15       # probability of the null class in training (classifier-free guidance); every
                                      # condition is left out together with this probability (the unconditional branch)
    mask_dropout: float = 0.15        # probability of an all-zero mask in training
    classes: tuple[str, ...] = ()     # categorical columns: the first is the class (class_column), the rest extra
    covariates: tuple[str, ...] = ()  # continuous columns (age, bmi), standardised with the training set's mean and SD
    condition_dropout: float = 0.15   # each extra condition is also left out on its own with this probability

    def __post_init__(self) -> None:
        if self.classes and self.class_column is None:
            object.__setattr__(self, "class_column", self.classes[0])
        if self.classes and self.classes[0] != self.class_column:
            raise ConfigError(f"conditioning.classes starts with {self.classes[0]!r} but conditioning.class_column is "
                              f"{self.class_column!r}; the class column comes first in classes (or leave one out).")
        names = [*self.classes, *self.covariates]
        if len(set(names)) < len(names):
            raise ConfigError(f"conditioning.classes and conditioning.covariates name a column twice ({names}); "
                              "a column is either categorical or continuous, once.")

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """The conditions beyond the class: further categorical columns, then covariates (Conditions.extra order)."""
        return (*self.classes[1:], *self.covariates)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "unet"                                   # key in medsynth.models.MODELS
    channels: tuple[int, ...] = (32, 64, 64)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 1
    norm_num_groups: int = 8
    num_head_channels: int = 16
    checkpointing: bool = False                          # recompute block activations in the backward pass (memory)
    condition_path: str = "embedding"                    # extra conditions: 'embedding' (summed with the class's) or
                                                         # 'cross_attention' (one token per condition, at attention levels)
    cross_attention_dim: int = 64                        # width of the condition tokens (cross_attention only)
    covariate_embedding: str = "linear"                  # covariates: 'linear' (a map of the value) or 'fourier'
                                                         # (sinusoids at octave frequencies and an MLP)
    embedding_mode: str = "add"                          # how each residual block takes the timestep and condition
                                                         # embedding: 'add' (MONAI's) or 'scale_shift' (adaptive norm)


@dataclass(frozen=True)
class DiffusionConfig:
    process: str = "rflow"                 # 'rflow' (rectified flow) or 'ddpm'
    prediction: str = "v_prediction"       # ddpm: 'epsilon' or 'v_prediction'; rflow predicts velocity
    train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear_beta"   # ddpm: linear_beta, scaled_linear_beta, sigmoid_beta, cosine
    timestep_sampling: str = "logit-normal"     # rflow: 'uniform' or 'logit-normal'
    sample_steps: int = 30
    guidance: float = 1.5                  # classifier-free guidance scale for preview samples


@dataclass(frozen=True)
class DPConfig:
    """Differentially private training (DP-SGD through Opacus): a guarantee on the trained weights for every training
    study, spent over the run's max_steps; see medsynth/training/private.py for what a private run keeps."""
    enabled: bool = False
    epsilon: float = 10.0               # target privacy budget for the whole run
    delta: float = 0.0                  # 0: 0.1 / (training studies), below 1/N as DP needs
    max_grad_norm: float = 1.0          # per-example clipping norm
    accountant: str = "rdp"             # 'rdp' or 'prv' (Opacus accountants)
    multiplicity: int = 1               # noise levels and noises each example's loss is averaged over before clipping
    intensity_range: tuple[float, ...] = ()   # physical (lo, hi) mapped to [-1, 1] instead of the data's median range


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    max_steps: int = 2000
    max_minutes: float = 0.0     # wall-clock budget; 0 means none
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    log_every: int = 10
    sample_every: int = 500      # PNG grid of EMA samples; 0 turns it off
    checkpoint_every: int = 200
    seed: int = 0
    num_threads: int = 0         # torch CPU threads; 0 keeps torch's default
    flip_axes: tuple[int, ...] = ()  # spatial axes each training image (and mask) is mirrored along, at random
    init_from: str | None = None     # a finished run folder whose weights this run starts from (fine-tuning)
    init_weights: str = "ema"        # which of the parent's weights: 'ema' (what it generates with) or 'raw'
    init_fresh_layers: bool = False  # parent layers that do not fit (other classes, mask labels) start fresh
    trainable: tuple[str, ...] = ()  # fine-tuning: glob patterns of the layers trained (e.g. '*attention*'); () all
    dp: DPConfig = field(default_factory=DPConfig)


@dataclass(frozen=True)
class LatentConfig:
    """Latent diffusion: stage 1 an AutoencoderKL, stage 2 the diffusion model on its scaled latent means."""
    enabled: bool = False
    channels: tuple[int, ...] = (32, 64, 64)   # autoencoder levels: 2^(levels-1) downsampling per side
    latent_channels: int = 4
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    steps: int = 2000                 # autoencoder training steps
    batch_size: int = 4
    lr: float = 1e-4
    kl_weight: float = 1e-6
    adversarial_weight: float = 0.0   # > 0 adds a PatchDiscriminator (least squares) loss from adversarial_start on
    adversarial_start: int = 0
    mask_mode: str = "concat"         # 'concat': one-hot pooled to the latent grid as input channels;
                                      # 'controlnet': a ControlNet trained afterwards on the frozen latent model
    controlnet_steps: int = 500
    controlnet_lr: float = 1e-4
    checkpointing: bool = False       # autoencoder training recomputes activations in the backward pass (memory)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channels) - 1)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)

    def __post_init__(self) -> None:
        d, m = self.diffusion, self.model
        if d.process not in ("rflow", "ddpm"):
            raise ConfigError(f"diffusion.process must be 'rflow' or 'ddpm', got {d.process!r}.")
        if d.prediction not in ("epsilon", "v_prediction"):
            raise ConfigError(f"diffusion.prediction must be 'epsilon' or 'v_prediction', got {d.prediction!r}.")
        if d.timestep_sampling not in ("uniform", "logit-normal"):
            raise ConfigError(f"diffusion.timestep_sampling must be 'uniform' or 'logit-normal', got {d.timestep_sampling!r}.")
        if len(m.channels) != len(m.attention_levels):
            raise ConfigError(f"model.channels has {len(m.channels)} levels but model.attention_levels has "
                              f"{len(m.attention_levels)}; give one attention flag per level.")
        if any(c % m.norm_num_groups for c in m.channels):
            raise ConfigError(f"every entry of model.channels {m.channels} must be divisible by model.norm_num_groups "
                              f"({m.norm_num_groups}).")
        if len(self.data.shape) not in (2, 3) or min(self.data.shape) < 4:
            raise ConfigError(f"data.shape must have 2 or 3 sizes of at least 4, got {self.data.shape}.")
        lat = self.latent
        if lat.enabled:
            if lat.mask_mode not in ("concat", "controlnet"):
                raise ConfigError(f"latent.mask_mode must be 'concat' or 'controlnet', got {lat.mask_mode!r}.")
            if lat.mask_mode == "controlnet" and not self.conditioning.mask:
                raise ConfigError("latent.mask_mode is 'controlnet' but conditioning.mask is false; "
                                  "turn mask conditioning on or use mask_mode: concat.")
            if any(c % lat.norm_num_groups for c in lat.channels):
                raise ConfigError(f"every entry of latent.channels {lat.channels} must be divisible by "
                                  f"latent.norm_num_groups ({lat.norm_num_groups}).")
            if any(s % lat.factor for s in self.data.shape):
                raise ConfigError(f"data.shape {self.data.shape} must be divisible by {lat.factor} "
                                  "(the autoencoder's downsampling: 2 to the number of latent.channels minus one).")
        factor = 2 ** (len(m.channels) - 1)
        if any(s % factor for s in self.model_shape):
            where = f"the latent grid {self.model_shape}" if lat.enabled else f"data.shape {self.data.shape}"
            raise ConfigError(f"{where} must be divisible by {factor} (2 to the number of model levels minus one).")
        if self.data.spacing is not None and len(self.data.spacing) != len(self.data.shape):
            raise ConfigError("data.spacing and data.shape must have one entry per spatial axis.")
        axes = self.train.flip_axes
        if len(set(axes)) < len(axes) or any(not 0 <= a < len(self.data.shape) for a in axes):
            raise ConfigError(f"train.flip_axes {axes} must name distinct spatial axes, 0 to {len(self.data.shape) - 1}.")
        if axes and lat.enabled:
            raise ConfigError("train.flip_axes mirrors images, which a latent run does not train on; leave it empty.")
        if self.conditioning.extra_columns and self.train.dp.enabled:
            raise ConfigError("conditioning.classes beyond the class column and conditioning.covariates are not yet "
                              "available for private runs; train without train.dp, or condition on the class column "
                              "alone.")
        self.check_condition_path()
        for name in ("batch_size", "max_steps", "log_every", "checkpoint_every"):
            if getattr(self.train, name) < 1:
                raise ConfigError(f"train.{name} must be a positive integer.")
        self.check_ranges()
        self.check_private()

    def check_condition_path(self) -> None:
        """Cross-attention needs conditions to attend to and a level with attention to attend from."""
        m = self.model
        if m.condition_path not in ("embedding", "cross_attention"):
            raise ConfigError(f"model.condition_path must be 'embedding' or 'cross_attention', got {m.condition_path!r}.")
        if m.covariate_embedding not in ("linear", "fourier"):
            raise ConfigError(f"model.covariate_embedding must be 'linear' or 'fourier', got {m.covariate_embedding!r}.")
        if m.embedding_mode not in ("add", "scale_shift"):
            raise ConfigError(f"model.embedding_mode must be 'add' or 'scale_shift', got {m.embedding_mode!r}.")
        if m.condition_path == "embedding":
            return
        if not self.conditioning.extra_columns:
            raise ConfigError("model.condition_path cross_attention attends to the conditions beyond the class: name them "
                              "in conditioning.classes (after the class column) or conditioning.covariates, or use "
                              "'embedding'.")
        if not any(m.attention_levels):
            raise ConfigError("model.condition_path cross_attention needs at least one level with attention "
                              "(model.attention_levels); set one to true, or use 'embedding'.")

    def check_ranges(self) -> None:
        """Numbers that parse but cannot be meant: a negative budget, learning rate or dropout above 1."""
        t, c = self.train, self.conditioning
        rules = [("train.max_minutes (--max-minutes)", t.max_minutes, t.max_minutes >= 0, "0 (no limit) or more"),
                 ("train.lr", t.lr, t.lr > 0, "positive"), ("train.grad_clip", t.grad_clip, t.grad_clip > 0, "positive"),
                 ("train.ema_decay", t.ema_decay, 0 <= t.ema_decay < 1, "at least 0 and below 1"),
                 ("train.warmup_steps", t.warmup_steps, t.warmup_steps >= 0, "0 or more"),
                 ("train.sample_every", t.sample_every, t.sample_every >= 0, "0 (off) or more"),
                 ("train.num_threads", t.num_threads, t.num_threads >= 0, "0 (torch's default) or more"),
                 ("conditioning.class_dropout", c.class_dropout, 0 <= c.class_dropout <= 1, "between 0 and 1"),
                 ("conditioning.mask_dropout", c.mask_dropout, 0 <= c.mask_dropout <= 1, "between 0 and 1"),
                 ("conditioning.condition_dropout", c.condition_dropout, 0 <= c.condition_dropout <= 1, "between 0 and 1"),
                 ("model.cross_attention_dim", self.model.cross_attention_dim, self.model.cross_attention_dim >= 1,
                  "a positive integer"),
                 ("data.holdout", self.data.holdout, 0 <= self.data.holdout < 1, "at least 0 and below 1")]
        for key, value, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{key} must be {rule}, got {value!r}.")

    def check_private(self) -> None:
        """DP and fine-tuning settings that cannot be meant, or that this version cannot train."""
        t, dp = self.train, self.train.dp
        if t.init_weights not in ("ema", "raw"):
            raise ConfigError(f"train.init_weights must be 'ema' or 'raw', got {t.init_weights!r}.")
        if t.trainable and not t.init_from:
            raise ConfigError("train.trainable keeps the other layers at their starting weights, which without "
                              "train.init_from are random: set train.init_from (--init-from) or leave train.trainable "
                              "empty.")
        if not dp.enabled:
            return
        rules = [("train.dp.epsilon", dp.epsilon, dp.epsilon > 0, "positive"),
                 ("train.dp.delta", dp.delta, 0 <= dp.delta < 1, "0 (automatic) or between 0 and 1"),
                 ("train.dp.max_grad_norm", dp.max_grad_norm, dp.max_grad_norm > 0, "positive"),
                 ("train.dp.accountant", dp.accountant, dp.accountant in ("rdp", "prv"), "'rdp' or 'prv'"),
                 ("train.dp.multiplicity", dp.multiplicity, dp.multiplicity >= 1, "1 or more"),
                 ("train.dp.intensity_range", dp.intensity_range,
                  len(dp.intensity_range) in (0, 2) and (not dp.intensity_range or dp.intensity_range[0] < dp.intensity_range[1]),
                  "empty or [lo, hi] with lo < hi")]
        for key, value, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{key} must be {rule}, got {value!r}.")
        if self.latent.enabled:
            raise ConfigError("train.dp is not available for latent runs (their autoencoder would see the data without "
                              "privacy); train a pixel model (latent.enabled: false) or turn train.dp off.")
        if self.model.checkpointing:
            raise ConfigError("train.dp needs per-example gradients, which model.checkpointing does not give; "
                              "set model.checkpointing: false.")

    @property
    def spatial_dims(self) -> int:
        return len(self.data.shape)

    @property
    def model_shape(self) -> tuple[int, ...]:
        """The grid the diffusion model works on: data.shape, or the latent grid of a latent run."""
        return tuple(s // self.latent.factor for s in self.data.shape) if self.latent.enabled else self.data.shape

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)


# Decoding settings (tiles) belong to generation (the generate section); runs trained before that kept them in
# the latent section. A stored config (a checkpoint's) may still hold them; a config file given to train may not.
LEGACY_DECODING = ("tile", "tile_overlap", "tile_cache")


def legacy_decoding(values: dict[str, Any]) -> dict[str, Any]:
    """The decoding settings an older stored config kept in its latent section ({} for current configs)."""
    latent = values.get("latent") or {}
    return {k: latent[k] for k in LEGACY_DECODING if isinstance(latent, dict) and k in latent}


def without_legacy_decoding(values: dict[str, Any]) -> dict[str, Any]:
    if not legacy_decoding(values):
        return values
    return {**values, "latent": {k: v for k, v in values["latent"].items() if k not in LEGACY_DECODING}}


def config_from_dict(values: dict[str, Any], where: str = "", stored: bool = False) -> Config:
    """A training config from a mapping; `where` names it in errors. `stored` (a checkpoint's config) accepts the
    decoding settings older runs kept in the latent section; elsewhere they are refused with where they went."""
    found = legacy_decoding(values)
    if found and not stored:
        raise located(where, ConfigError(
            f"latent.{next(iter(found))} is a decoding setting, which belongs to generation: drop it from the training "
            "config and give it to `medsynth generate` (--tile, or tile / tile_overlap / tile_cache in the generate "
            "section of a --config file)."))
    try:
        return build(Config, without_legacy_decoding(values), "")
    except ConfigError as err:
        raise located(where, err) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML training config (a path, or the name of one in configs/), apply overrides, and validate it."""
    path, values = read_yaml(path)
    return config_from_dict(apply_overrides(values, overrides or []), str(path))
