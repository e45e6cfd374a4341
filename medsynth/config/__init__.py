"""One config system for every stage (schema.py): the training config (training.py: what a run is trained with) and
the settings of generate, audit, evaluate and export (stages.py), all typed, frozen, strict and loadable from YAML."""

from medsynth.config.schema import BUNDLED, ConfigError, apply_overrides, as_dict
from medsynth.config.stages import (SECTIONS, AuditConfig, EditConfig, EvaluateConfig, ExportConfig, GenerateConfig,
                                    StageConfig, load_stage_config, with_keys)
from medsynth.config.training import (LEGACY_DECODING, Config, ConditioningConfig, DataConfig, DiffusionConfig,
                                      DPConfig,
                                      LatentConfig, ModelConfig, TrainConfig, config_from_dict, legacy_decoding,
                                      load_config, without_legacy_decoding)

__all__ = ["BUNDLED", "LEGACY_DECODING", "SECTIONS", "AuditConfig", "Config", "ConditioningConfig", "ConfigError", "DataConfig",
           "DiffusionConfig", "DPConfig", "EditConfig", "EvaluateConfig", "ExportConfig", "GenerateConfig", "LatentConfig", "ModelConfig",
           "StageConfig", "TrainConfig", "apply_overrides", "as_dict", "config_from_dict", "load_config",
           "legacy_decoding", "load_stage_config", "with_keys",
           "without_legacy_decoding"]
