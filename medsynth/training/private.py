"""Differentially private training: DP-SGD (Abadi et al. 2016) through Opacus, with DPDM's multiplicity.

Each step takes every training study with probability q (Poisson sampling), computes each study's gradient
(averaged over `multiplicity` noise levels and noises, Dockhorn et al. 2022), clips it to `max_grad_norm`, sums,
adds Gaussian noise of standard deviation noise_multiplier x max_grad_norm and divides by the expected batch size.
Opacus's accountant turns (noise multiplier, q, steps) into the (epsilon, delta) the weights are private for; the
noise multiplier is chosen before training so that the whole run's max_steps spend the target epsilon.

The guarantee holds only while the batch draw and the noise are secret: a seed that anyone can read (a run's
train.seed is in every record) would let an attacker replay them. Both come from a generator seeded by the operating
system's secure source, once per session and never recorded, so a resumed private run continues with the same
accounting but not the same bytes. The diffusion noise, timesteps and condition dropout inside each study's gradient
need no secrecy and keep the run's seeded streams.

What a private checkpoint keeps from the training data besides the DP weights (`stored_statistics`): nothing by
default. The mask bank is not written (generation then needs --masks), the QC intensity statistics and class counts
are left out, and the physical intensity range is the CT window or train.dp.intensity_range. Without that range a
non-CT run stores the training studies' median intensity range, and the run says it is not private. The data's
schema (class names, label names, modality, grid and spacing) is taken as public. The EMA is a post-processing of
the private weights and keeps the guarantee. The run folder's catalog.csv, split.csv and metrics.csv (losses) are
records of the training data for its owner; they are not part of the guarantee and are never exported.
"""

from __future__ import annotations

import secrets
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn

from medsynth.config import Config
from medsynth.errors import MedsynthError, first_line

# Opacus's per-example hooks make torch warn on every step that no input needs a gradient (true, and meant), and its
# RDP accountant that another order could tighten the bound (it reports the bound it found); neither is the user's.
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha")

DELTA_PER_STUDY = 0.1   # default delta = 0.1 / N: well below 1/N, the bound past which DP protects nobody


@dataclass(frozen=True)
class PrivacyPlan:
    """The DP-SGD settings of a run, fixed before training from its target epsilon."""

    epsilon_target: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    expected_batch_size: int
    steps: int                 # the run's max_steps: what the budget is spent over
    max_grad_norm: float
    accountant: str
    multiplicity: int
    training_studies: int

    @classmethod
    def for_run(cls, cfg: Config, studies: int) -> PrivacyPlan:
        """The noise multiplier that spends epsilon over max_steps; refuses a budget no useful noise level meets."""
        from opacus.accountants.utils import get_noise_multiplier   # Opacus is imported only by private runs

        dp, steps = cfg.train.dp, cfg.train.max_steps
        delta = dp.delta or DELTA_PER_STUDY / studies
        rate = min(1.0, cfg.train.batch_size / studies)
        figures = (f"epsilon {dp.epsilon:g}, delta {delta:.2g}, {steps} steps at sample rate {rate:.3g} "
                   f"(batch {cfg.train.batch_size} of {studies} studies)")
        try:
            sigma = float(get_noise_multiplier(target_epsilon=dp.epsilon, target_delta=delta, sample_rate=rate,
                                               steps=steps, accountant=dp.accountant))
        except ValueError as err:
            raise MedsynthError(f"no noise level meets the privacy budget ({figures}: {first_line(err)}); raise "
                                "train.dp.epsilon, lower train.max_steps or add studies.") from None
        if sigma > cfg.train.batch_size:
            raise MedsynthError(f"the privacy budget needs noise multiplier {sigma:.1f} ({figures}), more than the batch "
                                f"size {cfg.train.batch_size}: the noise would outweigh every clipped gradient it hides; "
                                "raise train.dp.epsilon or train.batch_size, lower train.max_steps, or add studies.")
        return cls(dp.epsilon, delta, sigma, rate, cfg.train.batch_size, steps, dp.max_grad_norm, dp.accountant,
                   dp.multiplicity, studies)

    def epsilon(self, steps: int) -> float:
        """The epsilon spent after `steps` steps (at this plan's delta), from the accountant's own figures."""
        from opacus.accountants import create_accountant

        if steps <= 0:
            return 0.0
        accountant = create_accountant(self.accountant)
        accountant.history = [(self.noise_multiplier, self.sample_rate, int(steps))]
        return float(accountant.get_epsilon(self.delta))

    def record(self, steps: int, stored: list[str]) -> dict:
        """What the run, its checkpoint and everything made from it say about the privacy spent."""
        return {"mechanism": "DP-SGD (Opacus: Poisson sampling, per-example clipping, Gaussian noise)",
                "epsilon": round(self.epsilon(steps), 4), "delta": self.delta, "accountant": self.accountant,
                "steps_taken": int(steps), **asdict(self), "private": not stored, "non_private_statistics": stored,
                "covers": "the checkpoint's weights (EMA and raw) and every study generated from them"}


def stored_statistics(cfg: Config, modality: str) -> list[str]:
    """The non-private statistics of the training data a private checkpoint would store (empty: none)."""
    if modality.upper() == "CT" or cfg.train.dp.intensity_range:
        return []
    return ["intensity range (median over training studies; set train.dp.intensity_range to leave it out)"]


def check_private_model(model: nn.Module) -> None:
    """Refuse a network with layers Opacus cannot give per-example gradients for, naming them."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        names = "; ".join(first_line(e, 100) for e in errors[:3])
        raise MedsynthError(f"train.dp cannot train this network: {names}. Use a network built from convolutions, "
                            "linear layers and group norms (model.name: unet) or turn train.dp off.")


class PrivateStep:
    """Per-example gradients (Opacus GradSampleModule), then the DP optimiser's clip, sum, noise and step."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, plan: PrivacyPlan) -> None:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        check_private_model(model)
        self.plan = plan
        self.secret = torch.Generator().manual_seed(secrets.randbits(63))   # batch draws and noise: never recorded
        self.net = GradSampleModule(model, loss_reduction="mean")
        self.optimizer = DPOptimizer(optimizer, noise_multiplier=plan.noise_multiplier,
                                     max_grad_norm=plan.max_grad_norm, expected_batch_size=plan.expected_batch_size,
                                     loss_reduction="mean", generator=self.secret)

    def draw(self, studies: int) -> torch.Tensor:
        """Poisson sampling: each study joins the batch with probability q (the batch may be empty), each once per
        multiplicity draw, side by side."""
        index = torch.nonzero(torch.rand(studies, generator=self.secret) < self.plan.sample_rate).flatten()
        return index.repeat_interleave(self.plan.multiplicity)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears the per-example gradients too (Opacus keeps them on each parameter between steps)."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        """Average each study's gradients over its multiplicity draws, then clip, noise and step the parameters the
        optimiser holds (the trained ones). An empty batch (no gradients) still steps: the noise alone, as the
        accountant counts it."""
        k = self.plan.multiplicity
        for p in self.optimizer.params:
            sample = getattr(p, "grad_sample", None)
            if sample is None:
                p.grad_sample = p.new_zeros((0, *p.shape))
            elif k > 1:
                p.grad_sample = sample.reshape(-1, k, *p.shape).mean(1)
        self.optimizer.step()

