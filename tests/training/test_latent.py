"""Latent diffusion: tiled decoding equals whole decoding, a latent run goes through train, generate, audit and export
on the CLI, its ControlNet follows the mask, stages refuse to run out of order, resume keeps stage 1."""

import dataclasses
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import assert_user_error, run_cli
from medsynth.config import ConfigError, load_config
from medsynth.data.phantom import PhantomSpec, make_phantom, write_phantom_dataset
from medsynth import provenance
from medsynth.models import build_denoiser
from medsynth.models.autoencoder import AutoencoderSpec, build_autoencoder, train_autoencoder
from medsynth.models.latent import receptive_radius, tiled_decode
from medsynth.synthesis.generate import generate
from medsynth.conditioning import Conditions
from medsynth.runs.loaded import load_run
from medsynth.training.trainer import train


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """tiny_latent_3d (autoencoder, class-conditioned latent flow, ControlNet) on 60 phantoms, 24 held out."""
    root = tmp_path_factory.mktemp("latent")
    for args in (["phantom", root / "data", "--cases", "60", "--size", "16"],
                 ["ingest", root / "data", "--out", root / "cat", "--holdout", "0.4"],
                 ["train", root / "cat", "--config", "tiny_latent_3d.yaml", "--out", root / "run"]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
    return root, result


def test_tiled_decode_equals_whole_decode():
    """2D, so the tiles (8 latent pixels plus the receptive radius) are much smaller than the 32^2 latent grid."""
    torch.manual_seed(0)
    spec = AutoencoderSpec(channels=(8, 16, 16), latent_channels=2, norm_num_groups=4)
    model = build_autoencoder(spec, spatial_dims=2)
    images = torch.from_numpy(np.stack([np.clip(make_phantom(PhantomSpec(dims=2, size=128, seed=2), k, True).image / 1000,
                                                -1, 1) for k in range(2)]).astype(np.float32))
    train_autoencoder(model, images, steps=5, batch_size=2, lr=2e-3, show_progress=False)
    z = model.encode(images[:1])[0].detach()                      # 32^2 latents, decoded in 16 tiles of 8^2
    assert receptive_radius(model) == 7
    with torch.no_grad():
        whole = model.decode(z)
        tiled = tiled_decode(model, z, tile=8)
        cached = tiled_decode(model, z, tile=8, cache=True)
        short_context = tiled_decode(model, z, tile=8, overlap=2)
    assert tiled.shape == whole.shape == (1, 1, 128, 128)
    assert (tiled - whole).abs().max().item() < 1e-5
    assert torch.allclose(tiled, cached, atol=1e-6)
    assert (short_context - whole).abs().max().item() > 1e-3   # context matters: the tolerance is not vacuous
    assert all(type(m).__name__ == "GroupNorm" for m in model.decoder.modules() if "Norm" in type(m).__name__)


def test_tiled_decode_in_3d():
    torch.manual_seed(0)
    model = build_autoencoder(AutoencoderSpec(channels=(8, 16), latent_channels=2, norm_num_groups=4), spatial_dims=3)
    z = torch.randn(1, 2, 24, 24, 24)
    with torch.no_grad():
        assert (tiled_decode(model, z, tile=6) - model.decode(z)).abs().max().item() < 1e-5


def test_latent_run_trains_generates_audits_and_exports_on_the_cli(latent_run, tmp_path):
    root, trained = latent_run
    run = root / "run"
    assert "autoencoder:" in trained.stdout and "PSNR" in trained.stdout and "controlnet:" in trained.stdout
    for name in ("checkpoints/autoencoder.pt", "checkpoints/controlnet.pt", "checkpoints/last.pt", "samples/autoencoder.png", "samples/controlnet.png",
                 "autoencoder_metrics.csv", "controlnet_metrics.csv", "split.csv", "mask_bank.npz"):
        assert (run / name).is_file(), name
    l1 = pd.read_csv(run / "autoencoder_metrics.csv")["l1"]
    assert l1.tail(5).mean() < l1.head(5).mean()
    state = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert state["latent"]["shape"] == [4, 4, 4] and state["latent"]["mask_mode"] == "controlnet"
    assert state["latent"]["autoencoder_sha256"] == provenance.sha256_file(run / "checkpoints/autoencoder.pt")

    for args in (["generate", run, "--out", tmp_path / "syn", "--n", "4", "--steps", "3", "--tile", "2"],
                 ["audit", run, tmp_path / "syn", "--out", tmp_path / "audit", "--copies-per-kind", "2",
                  "--no-embedding"],
                 ["export", tmp_path / "syn", "--out", tmp_path / "export", "--format", "nnunet", "--force"]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
    image = nib.load(tmp_path / "syn" / "syn_00000_image.nii.gz")
    label = nib.load(tmp_path / "syn" / "syn_00000_label.nii.gz")
    assert image.shape == label.shape == (16, 16, 16)                 # decoded to the image grid, mask paired
    assert json.loads((tmp_path / "syn" / "generate.json").read_text())["config"]["tile"] == 2
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert report["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE") and report["membership"]["auc"] == report["membership"]["auc"]
    record = json.loads((tmp_path / "syn" / "syn_00000.json").read_text())
    assert record["run_hash"] == load_run(run, torch.device("cpu")).run_hash != provenance.sha256_file(
        run / "checkpoints/last.pt")                                  # the hash covers all three stages
    assert len(list((tmp_path / "export").rglob("*_0000.nii.gz"))) == 4


def test_controlnet_follows_the_mask_and_the_zero_mask_is_the_frozen_model(latent_run):
    loaded = load_run(latent_run[0] / "run", torch.device("cpu"))
    bank = np.load(latent_run[0] / "run" / "mask_bank.npz")["labels"]
    masks = torch.nn.functional.one_hot(torch.from_numpy(bank[:2]).long(), loaded.num_labels).movedim(-1, 1).float()
    x = torch.randn(1, *loaded.model_shape, generator=torch.Generator().manual_seed(0)).expand(2, -1, -1, -1, -1)
    t = torch.full((2,), 500.0)
    classes = torch.tensor([0, 0])
    with torch.no_grad():
        two_masks = loaded.model(x, t, Conditions(classes, masks))                  # same noise, two masks
        one_mask = loaded.model(x, t, Conditions(classes, masks[[0, 0]]))
        unmasked = loaded.model(x, t, Conditions(classes, torch.zeros_like(masks)))
        base = loaded.model.base(x, t, Conditions(classes))
    assert (two_masks[0] - one_mask[1]).abs().max() < 1e-5              # same mask, same output
    assert (two_masks[0] - two_masks[1]).abs().mean() > 5e-4            # another mask changes the prediction (untrained: 5e-8)
    assert torch.allclose(unmasked, base)


def test_stages_refuse_to_run_out_of_order(tmp_path, latent_run):
    cat = latent_run[0] / "cat"
    assert_user_error(run_cli("train", cat, "--config", "tiny_latent_3d.yaml", "--out", tmp_path / "none",
                              "--stage", "controlnet"), "autoencoder")
    assert_user_error(run_cli("train", cat, "--config", "tiny_3d.yaml", "--out", tmp_path / "pixel",
                              "--stage", "diffusion"), "latent runs only")
    assert_user_error(run_cli("train", cat, "--config", "tiny_latent_3d.yaml", "--out", tmp_path / "x",
                              "--set", "latent.mask_mode=controlnet", "--set", "conditioning.mask=false"),
                      "conditioning.mask")
    assert not (tmp_path / "none").exists() and not (tmp_path / "x").exists()


def test_concat_mask_mode_resumes_without_retraining_the_autoencoder(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(dims=3, size=16, cases=10, seed=5), show_progress=False)
    cfg = load_config("tiny_latent_3d.yaml", ["latent.mask_mode=concat", "train.max_steps=12"])
    paused = train(cfg, data, tmp_path / "run", stop_at=6, show_progress=False)
    assert paused.step == 6 and not paused.finished
    stage1 = provenance.sha256_file(tmp_path / "run" / "checkpoints/autoencoder.pt")
    with pytest.raises(ConfigError, match="latent.tile is a decoding setting, which belongs to generation"):
        load_config("tiny_latent_3d.yaml", ["latent.mask_mode=concat", "latent.tile=3"])
    done = train(cfg, data, tmp_path / "run", resume=True, show_progress=False)
    assert done.finished and done.step == 12 and done.notes == []       # stage 1 loaded, not trained again
    assert provenance.sha256_file(tmp_path / "run" / "checkpoints/autoencoder.pt") == stage1
    loaded = load_run(tmp_path / "run", torch.device("cpu"))
    assert loaded.model.mask_channels == loaded.num_labels and not (tmp_path / "run" / "checkpoints/controlnet.pt").exists()
    out = generate(tmp_path / "run", tmp_path / "syn", n=2, steps=2, max_attempts=1, tile=3, show_progress=False)
    assert out.studies == 2 and nib.load(tmp_path / "syn" / "syn_00001_image.nii.gz").shape == (16, 16, 16)
    recorded = json.loads((tmp_path / "syn" / "generate.json").read_text())["config"]
    assert (recorded["tile"], recorded["tile_overlap"], recorded["tile_cache"]) == (3, 0, False)


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    cfg = load_config("tiny_latent_3d.yaml")
    plain = build_denoiser(cfg.model, 3, 2, 0, 2)
    checkpointed = build_denoiser(dataclasses.replace(cfg.model, checkpointing=True), 3, 2, 0, 2)
    checkpointed.load_state_dict(plain.state_dict())                 # same keys: checkpoints stay interchangeable
    x, t = torch.randn(2, 2, 4, 4, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([100.0, 700.0])
    grads = []
    for model in (plain, checkpointed):
        loss = (model(x, t, Conditions(torch.tensor([0, 1]))) - 1.0).pow(2).mean()   # MONAI zero-initialises the output layer
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and grads[0].abs().sum() > 0


def test_the_adversarial_loss_takes_part_in_autoencoder_training():
    images = torch.from_numpy(np.stack([np.clip(make_phantom(PhantomSpec(size=16, seed=1), k, False).image / 1000, -1, 1)
                                        for k in range(4)]).astype(np.float32))
    spec = AutoencoderSpec(channels=(8, 16), latent_channels=2, norm_num_groups=4)
    histories = []
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        model = build_autoencoder(spec, spatial_dims=3)
        histories.append(train_autoencoder(model, images, steps=6, batch_size=2, lr=2e-3, show_progress=False,
                                           adversarial_weight=weight, adversarial_start=2))
    assert histories[0][:3] == histories[1][:3]                       # identical until the discriminator joins
    assert histories[0][3:] != histories[1][3:]


def test_a_2d_latent_run_generates_images_on_the_image_grid(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(dims=2, size=32, cases=12, seed=6), show_progress=False)
    cfg = load_config("tiny_2d.yaml", ["latent.enabled=true", "latent.channels=[8,16]", "latent.norm_num_groups=4",
                                       "latent.latent_channels=2", "latent.steps=20",
                                       "train.max_steps=10"])
    result = train(cfg, data, tmp_path / "run", show_progress=False)
    assert result.finished and "latents 2x8x8" in result.notes[0]
    out = generate(tmp_path / "run", tmp_path / "syn", classes=["lesion=2"], steps=2, max_attempts=1, tile=4,
                   show_progress=False)
    image = nib.load(out.out / "syn_00000_image.nii.gz")
    assert out.studies == 2 and image.shape[:2] == (16, 16)
