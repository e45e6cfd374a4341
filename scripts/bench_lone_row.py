"""A batch of one on the CPU: PyTorch's reference 3D convolution against oneDNN, for a trained run's denoiser.

For a batch of one PyTorch runs a 3 x 3 x 3 convolution through its reference kernel (aten::slow_conv3d_forward)
whenever N * C * D * H <= 20,480, which holds at the deeper levels of a 32^3 model; two rows go through oneDNN.
medsynth.diffusion.sampling.call runs a lone row as a pair and drops the copy. This prints, for the run's model
at its own grid: ms per call for one row as it is, one row through `call`, and two rows; and how many convolutions
each dispatched to which kernel (torch.profiler).

    python scripts/bench_lone_row.py RUN [--repeats 10]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from medsynth.conditioning import Conditions
from medsynth.diffusion.sampling import call
from medsynth.runs.loaded import load_run


def inputs(loaded, n: int):
    shape = tuple(loaded.model_shape)
    mask_channels = int(loaded.meta.get("model_mask_channels", loaded.meta["num_labels"]))
    classes = torch.zeros(n, dtype=torch.long) if loaded.meta["class_names"] else None
    mask = torch.zeros(n, mask_channels, *shape[1:]) if mask_channels else None
    return torch.randn(n, *shape), torch.full((n,), 0.5), Conditions(classes, mask, None)


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


KERNELS = ("aten::slow_conv3d_forward", "aten::mkldnn_convolution")


def kernels(fn) -> str:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return ", ".join(f"{e.key} x{e.count}" for e in prof.key_averages() if e.key in KERNELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    loaded = load_run(args.run, torch.device("cpu"))
    one, two = inputs(loaded, 1), inputs(loaded, 2)
    cases = {"one row as it is": lambda: loaded.model(*one), "one row through call (run as a pair)":
             lambda: call(loaded.model, *one), "two rows": lambda: loaded.model(*two)}
    print(f"model grid {tuple(loaded.model_shape)}, {torch.get_num_threads()} threads")
    with torch.no_grad():
        for name, fn in cases.items():
            print(f"  {name}: {timed(fn, args.repeats):.0f} ms per call ({kernels(fn)})", flush=True)


if __name__ == "__main__":
    main()
