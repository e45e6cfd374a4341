"""Membership inference against the model: do training studies get a lower denoising loss than held-out ones?

The attack of Carlini et al. (2023) and Matsumoto et al. (2023): the model's loss on a study at a few intermediate
noise levels, averaged over fixed noise draws; a lower loss says "member". Reported as ROC AUC (0.5: no leak) and
the true-positive rate at 1% false positives, each with a bootstrap interval. For a run trained with differential
privacy, next to them: the highest TPR at 1% FPR and the highest AUC that its (epsilon, delta) allow any attack.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsynth.conditioning import Conditions
from medsynth.diffusion import NoiseProcess
from medsynth.runs.lineage import spend_summary, tpr_bound
from medsynth.stats import roc_auc

LEVELS = (0.1, 0.25, 0.4)  # noise levels as fractions of the training timesteps


@torch.no_grad()
def study_losses(model: nn.Module, process: NoiseProcess, images: torch.Tensor, cond: Conditions, repeats: int = 4,
                 seed: int = 0, batch_size: int = 8) -> np.ndarray:
    """(N,) mean denoising loss of each study under its conditions over LEVELS x `repeats` noise draws (the same draws
    for every study)."""
    device = next(model.parameters()).device
    levels = [process.timestep_at(lvl) for lvl in LEVELS]
    losses = np.zeros(len(images))
    for start in range(0, len(images), batch_size):
        x0 = images[start : start + batch_size].to(device)
        part = cond.select(slice(start, start + batch_size)).to(device)
        total = torch.zeros(len(x0), device=device)
        for r in range(repeats):
            g = torch.Generator().manual_seed(seed * 1000 + r)
            noise = torch.randn(x0.shape[1:], generator=g).expand_as(x0).to(device)
            for level in levels:
                t = torch.full((len(x0),), level, device=device, dtype=process.timestep_dtype)
                pred = model(process.noisy(x0, noise, t), t, part)
                total += F.mse_loss(pred, process.target(x0, noise, t), reduction="none").flatten(1).mean(1)
        losses[start : start + len(x0)] = (total / (repeats * len(levels))).cpu().numpy()
    return losses


def tpr_at_fpr(positive, negative, fpr: float = 0.01) -> float:
    """Share of positives above the threshold that lets through at most `fpr` of the negatives."""
    neg = np.sort(np.asarray(negative, np.float64))
    allowed = int(np.floor(fpr * len(neg)))
    threshold = neg[len(neg) - 1 - allowed] if allowed < len(neg) else -np.inf
    return float((np.asarray(positive) > threshold).mean())


def bootstrap(positive, negative, statistic, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of `statistic(positive, negative)` over resamples of both groups."""
    rng = np.random.default_rng(seed)
    pos, neg = np.asarray(positive), np.asarray(negative)
    values = [statistic(pos[rng.integers(len(pos), size=len(pos))], neg[rng.integers(len(neg), size=len(neg))])
              for _ in range(n)]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def attack(member_losses, holdout_losses, seed: int = 0) -> dict:
    """AUC and TPR at 1% FPR (score = -loss) with bootstrap intervals."""
    pos, neg = -np.asarray(member_losses), -np.asarray(holdout_losses)
    return {"members": len(pos), "holdout": len(neg),
            "auc": roc_auc(pos, neg), "auc_interval": bootstrap(pos, neg, roc_auc, seed=seed),
            "tpr_at_1pct_fpr": tpr_at_fpr(pos, neg), "tpr_interval": bootstrap(pos, neg, tpr_at_fpr, seed=seed),
            "member_loss_median": float(np.median(member_losses)), "holdout_loss_median": float(np.median(holdout_losses))}


def dp_bounds(privacy: dict) -> dict:
    """What the weights' privacy allows any membership attack: the TPR at 1% FPR and the AUC (the area under the
    bound's ROC curve), next to the summary line; just the line for a run trained without DP."""
    if privacy.get("mechanism", "none") == "none":
        return {"privacy": spend_summary(privacy)}
    eps, delta = float(privacy["epsilon"]), float(privacy["delta"])
    fpr = np.linspace(0.0, 1.0, 2001)
    roc = np.array([tpr_bound(eps, delta, f) for f in fpr])
    return {"privacy": spend_summary(privacy), "epsilon": eps, "delta": delta, "accountant": privacy["accountant"],
            "tpr_bound_at_1pct_fpr": tpr_bound(eps, delta, 0.01),
            "auc_bound": float(np.sum((roc[1:] + roc[:-1]) / 2 * np.diff(fpr)))}
