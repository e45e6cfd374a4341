"""Noise processes and the sampler: shapes in 2D and 3D, a seeded sampling loop against stored numbers, guidance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medsynth.conditioning import Conditions
from medsynth.config import DiffusionConfig
from medsynth.diffusion import PROCESSES, noise_process, sample
from medsynth.diffusion.sampling import guided

CONFIGS = {"rflow": DiffusionConfig(process="rflow"),
           "ddpm": DiffusionConfig(process="ddpm", prediction="epsilon", beta_schedule="linear_beta")}


class Toy(nn.Module):
    """A parameter-free stand-in for a denoiser, conditioned like one: 0.5 x + 0.1 (class id + 1) + 0.2 mask[0]; the
    null class and an absent or all-zero mask add nothing. Its outputs are exact, so sampling can be pinned."""

    num_classes, null_class = 2, 2

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditions | None = None) -> torch.Tensor:
        cond = cond or Conditions()
        out = 0.5 * x
        if cond.classes is not None:
            shift = torch.where(cond.classes == self.null_class, 0, cond.classes + 1).to(x.dtype)
            out = out + 0.1 * shift.view(-1, *([1] * (x.ndim - 1)))
        if cond.mask is not None:
            out = out + 0.2 * cond.mask[:, :1]
        return out


@pytest.mark.parametrize("name", sorted(PROCESSES))
@pytest.mark.parametrize("spatial", [(8, 6), (4, 6, 5)])
def test_processes_noise_and_target_in_2d_and_3d(name, spatial):
    process = noise_process(CONFIGS[name])
    assert process.name == name and process.sampler
    x0 = torch.rand(3, 2, *spatial) * 2 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    t = process.sample_timesteps(3, torch.Generator().manual_seed(0))
    assert t.shape == (3,) and t.dtype == process.timestep_dtype and (0 <= t).all() and (t < 1000).all()
    noisy, target = process.noisy(x0, noise, t), process.target(x0, noise, t)
    assert noisy.shape == target.shape == x0.shape
    start = torch.full((3,), process.timestep_at(0.0), dtype=process.timestep_dtype)
    assert torch.allclose(process.noisy(x0, noise, start), x0, atol=0.05)     # (almost) no noise at t = 0
    assert torch.allclose(target, x0 - noise if name == "rflow" else noise)
    trajectory = process.trajectory(5, x0.shape[1:], True, torch.device("cpu"))
    assert len(trajectory.pairs) == 5
    assert trajectory.model_time(trajectory.pairs[0][0], 3, torch.device("cpu")).dtype == process.timestep_dtype


# the sums of two seeded 2D samples (4 steps, guidance 1.5, classes 0 and 1), measured with MONAI 1.6's schedulers
EXPECTED = {"rflow": (1.2080456, -4.0669341), "ddpm": (-1.3183575, -6.6439705)}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_seeded_sampling_loop_matches_its_stored_result_and_sample_k_depends_only_on_seed_k(name):
    process = noise_process(CONFIGS[name])
    generators = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    cond = Conditions(torch.tensor([0, 1]))
    out = sample(Toy(), process, (1, 4, 4), generators([0, 1]), cond, steps=4, guidance=1.5)
    assert out.shape == (2, 1, 4, 4) and out.abs().max() <= 1.0
    assert [out[k].sum().item() for k in range(2)] == pytest.approx(EXPECTED[name], abs=1e-4)
    alone = sample(Toy(), process, (1, 4, 4), generators([1]), Conditions(torch.tensor([1])), steps=4, guidance=1.5)
    assert torch.allclose(alone[0], out[1], atol=1e-6)


def test_guidance_one_is_the_conditional_prediction_and_other_scales_extrapolate():
    toy, x, t = Toy(), torch.randn(2, 1, 4, 4, 4), torch.full((2,), 300.0)
    mask = torch.zeros(2, 3, 4, 4, 4)
    mask[:, 0] = 1
    cond = Conditions(torch.tensor([0, 1]), mask)
    assert torch.equal(guided(toy, x, t, cond, 1.0), toy(x, t, cond))
    conditional, unconditional = toy(x, t, cond), toy(x, t, cond.null(toy.null_class))
    assert not torch.allclose(conditional, unconditional)
    assert torch.allclose(guided(toy, x, t, cond, 3.0), unconditional + 3.0 * (conditional - unconditional), atol=1e-6)
    assert torch.equal(guided(toy, x, t, Conditions(), 3.0), toy(x, t))   # nothing to guide on


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_guidance_applies_only_at_the_steps_inside_its_noise_interval(name):
    """Guidance in a limited interval: a guided step runs the conditional and null rows together (a batch of 2n), a
    step outside the interval takes the plain conditional prediction (n rows); the default interval guides every
    step."""

    class Counting(Toy):
        def __init__(self):
            super().__init__()
            self.rows: list[int] = []

        def forward(self, x, t, cond=None):
            self.rows.append(x.shape[0])
            return super().forward(x, t, cond)

    process, cond = noise_process(CONFIGS[name]), Conditions(torch.tensor([0, 1]))
    trajectory = process.trajectory(10, (1, 4, 4), True, torch.device("cpu"))
    fractions = [trajectory.noise_fraction(t) for t, _ in trajectory.pairs]
    draws = {}
    for interval in ((0.0, 1.0), (0.3, 0.7)):
        toy = Counting()
        draws[interval] = sample(toy, process, (1, 4, 4), [torch.Generator().manual_seed(s) for s in (0, 1)], cond,
                                 steps=10, guidance=3.0, interval=interval)
        inside = [(interval[0] < f or interval[0] == 0) and f <= interval[1] for f in fractions]
        assert toy.rows == [4 if on else 2 for on in inside]
    assert 0 < sum(0.3 < f <= 0.7 for f in fractions) < 10
    if name == "rflow":   # steps at 1.0, 0.9, ..., 0.1: guided at 0.7, 0.6, 0.5 and 0.4 (the start is left out)
        assert sum(0.3 < f <= 0.7 for f in fractions) == 4
    assert not torch.allclose(draws[(0.0, 1.0)], draws[(0.3, 0.7)])


def test_a_monai_denoiser_takes_left_out_conditions_as_their_null_form():
    from medsynth.config import ModelConfig
    from medsynth.models import build_denoiser

    torch.manual_seed(0)
    model = build_denoiser(ModelConfig(channels=(8, 16), attention_levels=(False, False), num_head_channels=8),
                           2, 1, 3, 2).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.full((2,), 10.0)
    explicit_null = Conditions(torch.full((2,), model.null_class), torch.zeros(2, 3, 8, 8))
    with torch.no_grad():
        assert torch.equal(model(x, t), model(x, t, explicit_null))
        assert torch.equal(guided(model, x, t, Conditions(torch.tensor([0, 1])), 1.0),
                           model(x, t, Conditions(torch.tensor([0, 1]))))


def test_a_lone_3d_row_is_run_as_a_pair_and_gets_its_own_prediction_back():
    """PyTorch sends a batch of one to its slow reference 3D convolution (scripts/bench_lone_row.py): the sampler runs
    a lone row as two, and what comes back is that row's own prediction, with its own conditions."""

    class Recording(Toy):
        seen: list = []

        def forward(self, x, t, cond=None):
            self.seen.append((x.shape[0], None if cond is None or cond.classes is None else cond.classes.tolist()))
            return super().forward(x, t, cond)

    toy, x, t = Recording(), torch.randn(1, 1, 4, 4, 4), torch.full((1,), 300.0)
    cond = Conditions(torch.tensor([1]))
    out = guided(toy, x, t, cond, 1.0)
    assert toy.seen == [(2, [1, 1])] and out.shape == (1, 1, 4, 4, 4)
    assert torch.equal(out, Toy()(x, t, cond))
    toy.seen.clear()
    guided(toy, torch.randn(1, 1, 4, 4), torch.full((1,), 300.0), cond, 1.0)   # 2D: no such detour
    assert toy.seen == [(1, [1])]
