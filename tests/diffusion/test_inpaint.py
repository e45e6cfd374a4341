"""RePaint inpainting on both noise processes: the kept region is the real image, the rest is sampled, and the
jump back (renoise) keeps the forward process's marginal."""

from __future__ import annotations

import pytest
import torch

from medsynth.conditioning import Conditions
from medsynth.diffusion import PROCESSES, inpaint, noise_process
from medsynth.runtime import seeded_generator

from test_diffusion import CONFIGS, Toy


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_kept_region_is_the_real_image_and_the_hole_is_sampled(name):
    process = noise_process(CONFIGS[name])
    known = torch.linspace(-0.8, 0.8, 2 * 6 * 6 * 5).reshape(2, 1, 6, 6, 5)
    keep = torch.ones(2, 1, 6, 6, 5)
    keep[:, :, 2:4, 2:4, 1:3] = 0
    gens = [seeded_generator(1, k) for k in range(2)]
    out = inpaint(Toy(), process, known, keep, gens, Conditions(), steps=4, guidance=1.0, resample=3)
    assert torch.equal(out[keep.bool().expand_as(out)], known[keep.bool().expand_as(known)])
    hole = ~keep.bool().expand_as(out)
    assert not torch.allclose(out[hole], known[hole]) and out.abs().max() <= 1.0


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_an_edit_depends_on_its_own_generator_not_on_the_batch(name):
    process = noise_process(CONFIGS[name])
    known, keep = torch.zeros(3, 1, 5, 5), torch.ones(3, 1, 5, 5)
    keep[..., 1:4, 1:4] = 0
    together = inpaint(Toy(), process, known, keep, [seeded_generator(2, k) for k in range(3)], Conditions(), 3, 1.0, 2)
    alone = inpaint(Toy(), process, known[2:], keep[2:], [seeded_generator(2, 2)], Conditions(), 3, 1.0, 2)
    assert torch.allclose(together[2:], alone, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_jumping_back_keeps_the_forward_marginal(name):
    """x_s = a_s x0 + b_s e taken to the noisier t must look like a_t x0 + b_t e' (its mean and spread)."""
    process = noise_process(CONFIGS[name])
    trajectory = process.trajectory(5, (1, 8, 8), True, torch.device("cpu"))
    t, t_next = trajectory.pairs[2]
    start, arrival = float(t), trajectory.arrival(t, t_next)
    (a_s, b_s), (a_t, b_t) = trajectory.marginal(arrival), trajectory.marginal(start)
    assert a_t < a_s and b_t > b_s    # `start` is the noisier time
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000,), 0.5)
    x_s = a_s * x0 + b_s * torch.randn(x0.shape, generator=g)
    x_t = trajectory.renoise(x_s, arrival, start, torch.randn(x0.shape, generator=g))
    assert abs(float(x_t.mean()) - a_t * 0.5) < 0.01
    assert abs(float(x_t.std()) - b_t) < 0.01
