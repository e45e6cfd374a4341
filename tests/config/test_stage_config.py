"""One config system: generate, audit, evaluate and export read YAML sections, refuse unknown keys, and record what
they resolved; the CLI flags are shortcuts that win over the file."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import assert_user_error, run_cli
from medsynth.config import ConfigError, GenerateConfig, config_from_dict, legacy_decoding, load_config, load_stage_config
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.errors import MedsynthError
from medsynth.synthesis.generate import generate, resolve
from medsynth.training.trainer import train

COMMANDS = {  # command -> its positional arguments besides --out (the run and set need not exist: settings come first)
    "generate": ["run"], "audit": ["run", "syn"], "evaluate": ["run", "syn"], "export": ["syn"]}


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory):
    """A tiny class-conditioned 2D run with 24 held-out studies (enough to calibrate the audit)."""
    root = tmp_path_factory.mktemp("stages")
    data = write_phantom_dataset(root / "data", PhantomSpec(dims=2, size=16, cases=60), show_progress=False)
    train(load_config("tiny_2d.yaml", ["data.holdout=0.4", "train.max_steps=8"]), data, root / "run",
          show_progress=False)
    return root


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_stage_refuses_an_unknown_key_in_one_sentence_naming_the_known_ones(command, tmp_path):
    args = [tmp_path / name for name in COMMANDS[command]] + ["--out", tmp_path / "out"]
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"{command}:\n  colour: blue\n")
    assert_user_error(run_cli(command, *args, "--config", settings), f"unknown config key {command}.colour",
                      f"known keys in {command}:", "seed" if command != "export" else "formats")
    assert_user_error(run_cli(command, *args, "--set", f"{command}.colour=blue"), f"{command}.colour", "known keys")
    assert_user_error(run_cli(command, *args, "--set", "train.lr=1"), "names the 'train' section", command)
    settings.write_text("generate: [1, 2\n")
    assert_user_error(run_cli(command, *args, "--config", settings), "not valid YAML")
    assert not (tmp_path / "out").exists()


def test_a_file_sets_keys_the_flags_win_and_a_wrong_type_is_refused(tmp_path):
    settings = tmp_path / "gen.yaml"
    settings.write_text("generate:\n  n: 3\n  steps: 2\n  seed: 1\naudit:\n  alpha: 0.01\n")
    resolved = load_stage_config("generate", settings, ["generate.guidance=2"], {"seed": 6, "n": None})
    assert resolved == GenerateConfig(n=3, steps=2, seed=6, guidance=2.0)
    assert load_stage_config("audit", settings).alpha == 0.01          # one file serves every stage
    with pytest.raises(ConfigError, match="generate.steps must be int"):
        load_stage_config("generate", None, ["generate.steps=many"])


def test_generate_from_a_settings_file_equals_the_same_keys_given_in_python(run_2d, tmp_path):
    settings = tmp_path / "gen.yaml"
    settings.write_text("generate:\n  classes: [lesion=2, normal=1]\n  steps: 2\n  seed: 1\n  max_attempts: 1\n")
    result = run_cli("generate", run_2d / "run", "--out", tmp_path / "cli", "--config", settings, "--seed", "6")
    assert result.returncode == 0, result.stderr
    generate(run_2d / "run", tmp_path / "api", classes=["lesion=2", "normal=1"], steps=2, seed=6, max_attempts=1,
             show_progress=False)
    for name in ("syn_00000_image.nii.gz", "syn_00002_image.nii.gz", "samples.csv"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes(), name
    record, api = (json.loads((tmp_path / k / "generate.json").read_text()) for k in ("cli", "api"))
    assert record["seeds"]["generate"] == 6 and record["config"]["steps"] == 2 and record["config"]["n"] == 3
    assert record["command"].startswith("medsynth generate") and api["command"] == "(Python API)"
    assert {**record, "command": ""} == {**api, "command": ""}         # the same settings, however they were given


def test_audit_evaluate_and_export_take_their_sections_from_one_file_and_record_them(run_2d, tmp_path):
    generate(run_2d / "run", tmp_path / "syn", n=6, steps=2, max_attempts=1, show_progress=False)
    settings = tmp_path / "stages.yaml"
    settings.write_text("audit:\n  copies_per_kind: 2\n  embedding: false\n  membership: false\n  seed: 1\n"
                        "evaluate:\n  steps: 5\n  encoder_steps: 5\n  utility: false\n  pairs: 5\n"
                        "export:\n  formats: [nifti, monai]\n  force: true\n")
    result = run_cli("audit", run_2d / "run", tmp_path / "syn", "--out", tmp_path / "audit", "--config", settings,
                     "--seed", "3")
    assert result.returncode == 0, result.stderr
    recorded = json.loads((tmp_path / "audit" / "report.json").read_text())["provenance"]["config"]
    assert recorded["copies_per_kind"] == 2 and recorded["embedding"] is False and recorded["seed"] == 3
    result = run_cli("evaluate", run_2d / "run", tmp_path / "syn", "--out", tmp_path / "eval", "--config", settings)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["provenance"]["config"]["encoder_steps"] == 5 and report["utility"] == {}
    result = run_cli("export", tmp_path / "syn", "--out", tmp_path / "exp", "--config", settings)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "exp" / "monai" / "datalist.json").is_file()
    assert json.loads((tmp_path / "exp" / "export.json").read_text())["config"]["formats"] == ["nifti", "monai"]


def test_decoding_belongs_to_generation_and_an_older_runs_recorded_tiles_become_its_defaults():
    stored = load_config("tiny_latent_3d.yaml").to_dict()
    stored["latent"].update(tile=2, tile_cache=True)                 # how runs before the move recorded decoding
    with pytest.raises(ConfigError, match="latent.tile is a decoding setting"):
        config_from_dict(stored)
    assert config_from_dict(stored, stored=True) == load_config("tiny_latent_3d.yaml")
    assert legacy_decoding(stored) == {"tile": 2, "tile_cache": True}
    cfg = load_config("tiny_latent_3d.yaml")
    old_run = SimpleNamespace(codec=object(), decoding=legacy_decoding(stored), cfg=cfg)
    assert (resolve(GenerateConfig(), old_run).tile, resolve(GenerateConfig(), old_run).tile_cache) == (2, True)
    assert resolve(GenerateConfig(tile=5, tile_cache=False), old_run).tile == 5
    new_run = SimpleNamespace(codec=object(), decoding={}, cfg=cfg)
    resolved = resolve(GenerateConfig(), new_run)
    assert (resolved.tile, resolved.tile_overlap, resolved.tile_cache, resolved.steps) == (0, 0, False, 4)
    pixel_run = SimpleNamespace(codec=None, decoding={}, cfg=load_config("tiny_2d.yaml"))
    with pytest.raises(MedsynthError, match="--tile applies to latent runs only"):
        resolve(GenerateConfig(tile=2), pixel_run)
