"""Differentially private training (train.dp): the accountant's figures, resume, refusals, what a private run keeps,
and the privacy spent on every artefact downstream."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from opacus.accountants import RDPAccountant

from conftest import assert_user_error, run_cli
from medsynth.config import load_config
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.errors import MedsynthError
from medsynth.runs import RunFolder
from medsynth.runs.checkpoint import load_checkpoint
from medsynth.runs.lineage import tpr_bound
from medsynth.training.private import PrivacyPlan, PrivateStep, check_private_model
from medsynth.training.trainer import train

DP = ["train.dp.enabled=true", "train.dp.epsilon=8", "train.batch_size=8", "train.max_steps=12"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("dp") / "data", PhantomSpec(dims=2, size=16, cases=40, seed=2),
                                 show_progress=False)


def _accountant_epsilon(privacy: dict, steps: int) -> float:
    """The epsilon Opacus's RDP accountant gives for the run's own figures, computed here independently."""
    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=privacy["noise_multiplier"], sample_rate=privacy["sample_rate"])
    return accountant.get_epsilon(privacy["delta"])


def test_a_private_run_records_the_accountants_epsilon_and_resumes_with_the_same_accounting(phantoms, tmp_path):
    cfg = load_config("tiny_2d.yaml", DP)
    run = tmp_path / "run"
    paused = train(cfg, phantoms, run, show_progress=False, stop_at=5)
    first = load_checkpoint(RunFolder(run).checkpoint)["privacy"]
    assert not paused.finished and first["steps_taken"] == 5
    assert first["epsilon"] == pytest.approx(_accountant_epsilon(first, 5), abs=1e-3)
    assert first["delta"] == pytest.approx(0.1 / 30) and first["sample_rate"] == pytest.approx(8 / 30)

    done = train(cfg, phantoms, run, show_progress=False, resume=True)
    final = load_checkpoint(RunFolder(run).checkpoint)["privacy"]
    assert done.finished and final["steps_taken"] == 12
    assert final["noise_multiplier"] == first["noise_multiplier"]        # the same plan after the resume
    assert final["epsilon"] == pytest.approx(_accountant_epsilon(final, 12), abs=1e-3)
    assert first["epsilon"] < final["epsilon"] <= 8.0 * 1.01           # the whole budget, spent over max_steps
    assert final["private"] and final["non_private_statistics"] == []
    assert json.loads((run / "run.json").read_text())["privacy"]["noise_multiplier"] == final["noise_multiplier"]
    assert any("privacy: differentially private: epsilon" in note for note in done.notes)
    shown = load_checkpoint(RunFolder(run).checkpoint)["catalog_fingerprint"]
    plain = json.loads((run / "run.json").read_text())["inputs"]["catalog_fingerprint"]
    assert shown != plain   # keyed: a plain hash of the catalog would let a guess of it be tested


def test_a_private_resume_refuses_a_new_step_budget(phantoms, tmp_path):
    cfg = load_config("tiny_2d.yaml", DP)
    train(cfg, phantoms, tmp_path / "run", show_progress=False, stop_at=3)
    with pytest.raises(MedsynthError, match="spent over its max_steps"):
        train(load_config("tiny_2d.yaml", DP + ["train.max_steps=40"]), phantoms, tmp_path / "run", show_progress=False,
              resume=True)


def test_an_empty_poisson_batch_still_takes_the_noise_step(phantoms, tmp_path):
    """At one study expected per batch, about a third of the steps draw nobody (none in 30: odds 1 in 700,000): they
    add the noise alone, as the accountant counts."""
    cfg = load_config("tiny_2d.yaml", ["train.dp.enabled=true", "train.dp.epsilon=50", "train.batch_size=1",
                                       "train.max_steps=30", "train.ema_decay=0.5"])
    result = train(cfg, phantoms, tmp_path / "run", show_progress=False)
    losses = pd.read_csv(tmp_path / "run" / "metrics.csv")["loss"]
    assert result.finished and losses.isna().any() and losses.notna().any()
    state = load_checkpoint(RunFolder(tmp_path / "run").checkpoint)
    assert state["privacy"]["steps_taken"] == 30 and np.isfinite(result.loss)


def test_an_infeasible_budget_is_refused_with_its_figures_before_anything_is_written(phantoms, tmp_path):
    result = run_cli("train", phantoms, "--config", "tiny_2d.yaml", "--out", tmp_path / "run", "--set",
                     "train.dp.enabled=true", "--set", "train.dp.epsilon=0.05", "--max-steps", "300")
    assert_user_error(result, "noise multiplier", "epsilon 0.05", "300 steps", "batch 4 of 30 studies")
    assert not (tmp_path / "run").exists()


def test_a_private_mask_run_keeps_no_training_statistics_and_generation_asks_for_masks(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(dims=2, size=16, cases=24, seed=3), show_progress=False)
    cfg = load_config("tiny_2d.yaml", DP + ["conditioning.mask=true", "train.max_steps=4"])
    train(cfg, data, tmp_path / "run", show_progress=False)
    state = load_checkpoint(RunFolder(tmp_path / "run").checkpoint)
    assert state["privacy"]["private"]
    assert not RunFolder(tmp_path / "run").mask_bank.exists()
    assert state["class_counts"] == [] and state["intensity_stats"]["global"] is None
    assert state["intensity_lo"] == [-1000.0] and state["intensity_hi"] == [1000.0]   # the CT window, not the data's
    result = run_cli("generate", tmp_path / "run", "--out", tmp_path / "syn", "--n", "2")
    assert_user_error(result, "differential privacy", "--masks")
    assert not (tmp_path / "syn").exists()


def test_a_run_that_stores_a_data_statistic_does_not_call_itself_private(tmp_path):
    data = write_phantom_dataset(tmp_path / "mr", PhantomSpec(dims=2, size=16, cases=24, seed=4, modality="MR"),
                                 show_progress=False)
    train(load_config("tiny_2d.yaml", DP + ["train.max_steps=2"]), data, tmp_path / "plain", show_progress=False)
    stored = load_checkpoint(RunFolder(tmp_path / "plain").checkpoint)["privacy"]
    assert not stored["private"] and "intensity range" in stored["non_private_statistics"][0]

    train(load_config("tiny_2d.yaml", DP + ["train.max_steps=2", "train.dp.intensity_range=[0, 2000]"]), data,
          tmp_path / "ranged", show_progress=False)
    state = load_checkpoint(RunFolder(tmp_path / "ranged").checkpoint)
    assert state["privacy"]["private"] and (state["intensity_lo"], state["intensity_hi"]) == ([0.0], [2000.0])


def test_multiplicity_averages_each_studys_gradients_before_clipping():
    """Two draws of one study: their mean gradient is clipped once, as DPDM does (no noise here, to see it)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, bias=False)
    plan = PrivacyPlan(1.0, 1e-5, 0.0, 1.0, 1, 1, 1.0, "rdp", 2, 1)
    step = PrivateStep(model, torch.optim.SGD(model.parameters(), lr=1.0), plan)
    x = torch.tensor([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])         # the study's two draws
    before = model.weight.detach().clone()
    step.zero_grad()
    step.net(x).sum().div(2).backward()                           # a mean loss over the two rows
    step.step()
    mean = x.mean(0)                                              # gradient of the averaged loss: (1.5, 2, 0), norm 2.5
    assert torch.allclose(before - model.weight.detach(), (mean / mean.norm()).view(1, 3), atol=1e-6)


def test_a_layer_opacus_cannot_handle_is_named():
    with pytest.raises(MedsynthError, match="BatchNorm"):
        check_private_model(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)))


def test_the_privacy_spent_reaches_the_studies_the_card_the_manifest_and_the_audit(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(dims=2, size=16, cases=90, seed=5), show_progress=False)
    for args in (["ingest", data, "--out", tmp_path / "cat", "--holdout", "0.3"],
                 ["train", tmp_path / "cat", "--config", "tiny_2d.yaml", "--out", tmp_path / "run", "--set",
                  "train.dp.enabled=true", "--set", "train.dp.epsilon=6", "--set", "train.batch_size=8",
                  "--max-steps", "6"],
                 ["generate", tmp_path / "run", "--out", tmp_path / "syn", "--n", "6"],
                 ["audit", tmp_path / "run", tmp_path / "syn", "--out", tmp_path / "audit", "--no-embedding",
                  "--set", "audit.copies_per_kind=2"],
                 ["export", tmp_path / "syn", "--out", tmp_path / "export", "--format", "nifti", "--audit",
                  tmp_path / "audit", "--force"]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
    privacy = load_checkpoint(RunFolder(tmp_path / "run").checkpoint)["privacy"]
    study = json.loads((tmp_path / "syn" / "syn_00000.json").read_text())
    assert study["privacy"]["epsilon"] == privacy["epsilon"] and study["privacy"]["accountant"] == "rdp"
    assert json.loads((tmp_path / "syn" / "generate.json").read_text())["privacy"]["delta"] == privacy["delta"]
    card = (tmp_path / "export" / "dataset_card.md").read_text()
    assert f"differentially private: epsilon {privacy['epsilon']:.3g}" in card
    manifest = pd.read_csv(tmp_path / "export" / "manifest.csv")
    assert np.allclose(manifest["dp_epsilon"], privacy["epsilon"]) and set(manifest["dp_accountant"]) == {"rdp"}
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    mia = report["membership"]
    assert mia["tpr_bound_at_1pct_fpr"] == pytest.approx(tpr_bound(privacy["epsilon"], privacy["delta"], 0.01))
    assert 0.5 < mia["auc_bound"] <= 1.0 and "differentially private" in report["summary"]["model_privacy"]
    assert "highest ROC AUC any attack can reach" in (tmp_path / "audit" / "report.html").read_text()


def test_the_tpr_bound_follows_epsilon():
    assert tpr_bound(0.0, 0.0, 0.01) == pytest.approx(0.01)                # no leak: no better than chance
    assert tpr_bound(1.0, 1e-5, 0.01) == pytest.approx(np.e * 0.01 + 1e-5)
    assert tpr_bound(10.0, 1e-5, 0.01) == pytest.approx(1.0, abs=1e-4) and tpr_bound(float("inf"), 0.0, 0.01) == 1.0
