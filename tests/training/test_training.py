"""Training on tiny configs (CPU, 2D and 3D): learning, checkpoints, resume, conditioning, bad input."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import assert_user_error, run_cli
from medsynth.config import ConfigError, load_config
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.conditioning import Conditions
from medsynth.diffusion import noise_process, sample
from medsynth.errors import MedsynthError
from medsynth.models import build_denoiser
from medsynth.runs import RunFolder
from medsynth.runs.checkpoint import load_checkpoint
from medsynth.training.trainer import train

CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def phantoms_3d(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("p3") / "data", PhantomSpec(dims=3, size=16, cases=12, seed=1),
                                 show_progress=False)


@pytest.fixture(scope="module")
def phantoms_2d(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("p2") / "data", PhantomSpec(dims=2, size=16, cases=16, seed=1),
                                 show_progress=False)


def _config(name, *overrides):
    return load_config(CONFIGS / name, list(overrides))


def _losses(run):
    return pd.read_csv(run / "metrics.csv")["loss"].to_numpy()


def _model(run, weights="ema"):
    state = load_checkpoint(RunFolder(run).checkpoint)
    cfg = load_config(run / "config.yaml")
    model = build_denoiser(cfg.model, cfg.spatial_dims, state["image_channels"], state["num_labels"], len(state["class_names"]))
    model.load_state_dict(state[weights])
    return model.eval(), cfg, state


@pytest.mark.parametrize("config, data", [("tiny_2d.yaml", "phantoms_2d"), ("tiny_3d.yaml", "phantoms_3d")])
def test_loss_goes_down(config, data, request, tmp_path):
    result = train(_config(config, "train.max_steps=60"), request.getfixturevalue(data), tmp_path / "run", show_progress=False)
    losses = _losses(tmp_path / "run")
    assert result.finished and result.step == 60 and len(losses) == 60
    assert losses[-15:].mean() < 0.7 * losses[:10].mean()


def test_run_folder_holds_checkpoint_split_and_provenance(phantoms_3d, tmp_path):
    train(_config("tiny_3d.yaml", "train.max_steps=4"), phantoms_3d, tmp_path / "run", show_progress=False)
    run = tmp_path / "run"
    split = pd.read_csv(run / "split.csv")
    assert list(split.columns) == ["study_id", "split"] and set(split["split"]) == {"train", "holdout"}
    state = load_checkpoint(RunFolder(run).checkpoint)
    assert state["finished"] and state["step"] == 4 and state["class_names"] == ["lesion", "normal"]
    assert len(state["catalog_fingerprint"]) == 64 and state["versions"]["monai"] and state["num_labels"] == 6
    assert state["config"]["train"]["max_steps"] == 4 and (run / "samples" / "final.png").stat().st_size > 1000


def test_save_load_gives_identical_output(phantoms_3d, tmp_path):
    train(_config("tiny_3d.yaml", "train.max_steps=6"), phantoms_3d, tmp_path / "run", show_progress=False)
    a, cfg, _ = _model(tmp_path / "run")
    b, _, _ = _model(tmp_path / "run")
    gens = lambda: [torch.Generator().manual_seed(k) for k in range(2)]  # noqa: E731
    mask = torch.zeros(2, 6, 16, 16, 16)
    mask[:, 1] = 1
    cond = Conditions(torch.tensor([0, 1]), mask)
    out_a = sample(a, noise_process(cfg.diffusion), (1, 16, 16, 16), gens(), cond, 3, cfg.diffusion.guidance)
    out_b = sample(b, noise_process(cfg.diffusion), (1, 16, 16, 16), gens(), cond, 3, cfg.diffusion.guidance)
    assert torch.equal(out_a, out_b)


def test_resume_continues_and_matches_an_uninterrupted_run(phantoms_2d, tmp_path):
    train(_config("tiny_2d.yaml", "train.max_steps=20"), phantoms_2d, tmp_path / "straight", show_progress=False)
    paused = train(_config("tiny_2d.yaml", "train.max_steps=20"), phantoms_2d, tmp_path / "split", show_progress=False,
                   stop_at=10)
    assert paused.step == 10 and not paused.finished
    assert not load_checkpoint(RunFolder(tmp_path / "split").checkpoint)["finished"]
    result = train(_config("tiny_2d.yaml", "train.max_steps=20"), phantoms_2d, tmp_path / "split", resume=True,
                   show_progress=False)
    assert result.step == 20
    metrics = pd.read_csv(tmp_path / "split" / "metrics.csv")
    assert metrics["step"].tolist() == list(range(1, 21))
    np.testing.assert_allclose(metrics["loss"], _losses(tmp_path / "straight"), rtol=1e-4)
    for weights in ("model", "ema"):
        a, b = _model(tmp_path / "straight", weights)[0], _model(tmp_path / "split", weights)[0]
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


def test_class_and_mask_conditioning_change_the_output(phantoms_3d, tmp_path):
    train(_config("tiny_3d.yaml", "train.max_steps=8"), phantoms_3d, tmp_path / "run", show_progress=False)
    model, cfg, _ = _model(tmp_path / "run")
    x, t = torch.randn(1, 1, 16, 16, 16), torch.tensor([500.0])
    body = torch.zeros(1, 6, 16, 16, 16)
    body[:, 1] = 1
    with torch.no_grad():
        base = model(x, t, Conditions(torch.tensor([0]), body))
        other_class = model(x, t, Conditions(torch.tensor([1]), body))
        no_mask = model(x, t, Conditions(torch.tensor([0]), torch.zeros_like(body)))
    assert (base - other_class).abs().mean() > 1e-4
    assert (base - no_mask).abs().mean() > 1e-4


def test_ddpm_with_epsilon_and_v_prediction_train(phantoms_2d, tmp_path):
    for prediction in ("epsilon", "v_prediction"):
        result = train(_config("tiny_2d.yaml", "train.max_steps=3", "diffusion.process=ddpm",
                               f"diffusion.prediction={prediction}"), phantoms_2d, tmp_path / prediction, show_progress=False)
        assert result.finished and np.isfinite(result.loss)


def test_unknown_key_and_wrong_type_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  learning_rate: 1.0\n")
    with pytest.raises(ConfigError, match="unknown config key train.learning_rate"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="train.batch_size must be int"):
        load_config(CONFIGS / "tiny_2d.yaml", ["train.batch_size=four"])


def test_bad_training_input_writes_nothing(phantoms_2d, phantoms_3d, tmp_path):
    cases = [
        (_config("tiny_2d.yaml", "train.batch_size=64"), phantoms_2d, "batch size"),
        (_config("tiny_2d.yaml", "conditioning.class_column=grade"), phantoms_2d, "no such class labels"),
        (_config("tiny_3d.yaml"), phantoms_2d, "3D but the studies are 2D"),
    ]
    for n, (cfg, data, message) in enumerate(cases):
        with pytest.raises(MedsynthError, match=message):
            train(cfg, data, tmp_path / f"run{n}", show_progress=False)
        assert not (tmp_path / f"run{n}").exists()


def test_mask_config_on_data_without_label_maps_is_refused(tmp_path):
    from conftest import save_nifti

    for k in range(4):
        save_nifti(tmp_path / f"c{k}.nii.gz", np.zeros((16, 16, 16), np.float32), np.eye(4))
    with pytest.raises(MedsynthError, match="no label map"):
        train(_config("tiny_3d.yaml", "conditioning.class_column=null"), tmp_path, tmp_path / "run", show_progress=False)


def test_resume_with_another_config_is_refused(phantoms_2d, tmp_path):
    train(_config("tiny_2d.yaml", "train.max_steps=2"), phantoms_2d, tmp_path / "run", show_progress=False)
    with pytest.raises(MedsynthError, match="model.channels differs"):
        train(_config("tiny_2d.yaml", "model.channels=[16, 16]", "model.norm_num_groups=8"), phantoms_2d, tmp_path / "run",
              resume=True, show_progress=False)


def test_cli_train_and_its_errors(phantoms_2d, tmp_path):
    ok = run_cli("train", phantoms_2d, "--config", CONFIGS / "tiny_2d.yaml", "--out", tmp_path / "run", "--max-steps", 3)
    assert ok.returncode == 0 and "trained 3 steps (finished)" in ok.stdout, ok.stderr
    assert_user_error(run_cli("train", phantoms_2d, "--config", CONFIGS / "tiny_2d.yaml", "--out", tmp_path / "run"),
                      "already exists")
    assert_user_error(run_cli("train", phantoms_2d, "--config", CONFIGS / "tiny_2d.yaml", "--out", tmp_path / "r2",
                              "--set", "train.lrr=1"), "unknown config key train.lrr")


def test_killed_run_leaves_a_loadable_checkpoint(phantoms_3d, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "medsynth", "train", str(phantoms_3d), "--config",
                             str(CONFIGS / "tiny_3d.yaml"), "--out", str(run), "--max-steps", "100000",
                             "--set", "train.checkpoint_every=100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.csv").exists():
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "--resume" in err, err
    state = load_checkpoint(RunFolder(run).checkpoint)
    assert not state["finished"] and state["step"] >= 5


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_its_denoiser_runs(path):
    cfg = load_config(path)  # checks the config's own grid against the model's and autoencoder's downsampling
    dims = len(cfg.data.shape)
    model = build_denoiser(cfg.model, dims, 1, 0, 2)
    grid = (8,) * dims  # small enough for the largest config on a CPU, divisible by every config's downsampling
    with torch.no_grad():
        out = model(torch.zeros(1, 1, *grid), torch.zeros(1), Conditions(torch.zeros(1, dtype=torch.long)))
    assert out.shape == (1, 1, *grid)


def test_flip_axes_mirror_image_and_mask_together_and_leave_the_rest_of_the_batch_alone():
    from medsynth.training.loop import draw_batch, step_generator

    class Set:  # the parts of a TrainingSet that draw_batch reads: 8 distinct images with 3-label maps
        images = torch.arange(8 * 5 * 6, dtype=torch.float32).reshape(8, 1, 5, 6)
        labels = (images[:, 0] % 3).long()
        classes = torch.zeros(8, dtype=torch.long)
        extra = None      # no conditions beyond the class

        def __len__(self):
            return 8

        def one_hot(self, index):
            return torch.nn.functional.one_hot(self.labels[index], 3).movedim(-1, 1).float()

    ts = Set()
    plain = load_config(CONFIGS / "tiny_2d.yaml", ["train.batch_size=16", "conditioning.mask_dropout=0"])
    flipped = load_config(CONFIGS / "tiny_2d.yaml", ["train.batch_size=16", "conditioning.mask_dropout=0",
                                                     "train.flip_axes=[1]"])
    process = noise_process(plain.diffusion)
    a = draw_batch(ts, plain, process, step_generator(0, 3), 2)
    b = draw_batch(ts, flipped, process, step_generator(0, 3), 2)
    for x, y in ((a.noise, b.noise), (a.t, b.t), (a.cond.classes, b.cond.classes)):  # the same draw
        assert torch.equal(x, y)
    mirrored = [not torch.equal(x, y) for x, y in zip(a.x0, b.x0)]
    assert 0 < sum(mirrored) < 16
    for k, m in enumerate(mirrored):
        assert torch.equal(b.x0[k], a.x0[k].flip(-1) if m else a.x0[k])
        assert torch.equal(b.cond.mask[k], a.cond.mask[k].flip(-1) if m else a.cond.mask[k])
    for bad in ("[2]", "[0, 0]"):
        with pytest.raises(ConfigError, match="flip_axes"):
            load_config(CONFIGS / "tiny_2d.yaml", [f"train.flip_axes={bad}"])
