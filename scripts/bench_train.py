"""Training throughput: medsynth's trainer vs a plain hand-written MONAI loop on the same network and data.

Prints samples/s for each, their ratio, and achieved model FLOP/s (MFU on CUDA, against --peak-tflops).
Targets (docs/benchmarks.md): ratio >= 0.95 on CPU; >= 1.3 on a GPU (bf16 autocast and channels-last).

    python scripts/bench_train.py                      # 3D phantoms, configs/phantom_3d.yaml network, CPU
    python scripts/bench_train.py --device cuda --batch-size 16 --steps 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from medsynth.conditioning import Conditions
from medsynth.config import load_config
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.diffusion import noise_process
from medsynth.models import build_denoiser
from medsynth.runs import RunFolder
from medsynth.runtime import resolve_device
from medsynth.training.data import load_training_set, open_catalog
from medsynth.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def plain_loop(cfg, images, classes, masks, steps, warmup, device):
    """What a user writes by hand from MONAI's tutorial: fp32, default memory format, no EMA."""
    torch.manual_seed(0)
    model = build_denoiser(cfg.model, cfg.spatial_dims, images.shape[1], masks.shape[1] if masks is not None else 0,
                           int(classes.max()) + 1 if classes is not None else 0).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    process = noise_process(cfg.diffusion)
    b = cfg.train.batch_size
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        index = torch.randint(0, len(images), (b,))
        x0 = images[index].to(device)
        noise = torch.randn_like(x0)
        t = process.sample_timesteps(b, torch.Generator().manual_seed(step)).to(device)
        cond = Conditions(classes[index] if classes is not None else None, masks[index] if masks is not None else None)
        prediction = model(process.noisy(x0, noise, t), t, cond.to(device))
        loss = F.mse_loss(prediction, process.target(x0, noise, t))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * b / (time.perf_counter() - start), model


def medsynth_rate(cfg, data, run, steps, warmup, device):
    train(cfg, data, run, device=str(device), show_progress=False, overwrite=True)
    metrics = pd.read_csv(RunFolder(run).metrics())
    window = metrics[metrics["step"] > warmup]
    first = metrics[metrics["step"] == warmup]["elapsed_s"].iloc[0]
    return (len(window) * cfg.train.batch_size) / (window["elapsed_s"].iloc[-1] - first)


def flops_per_sample(model, cfg, channels, mask_channels, device):
    """Forward + backward FLOPs of one training sample, counted by torch."""
    x = torch.randn(1, channels, *cfg.data.shape, device=device)
    mask = torch.zeros(1, mask_channels, *cfg.data.shape, device=device) if mask_channels else None
    classes = torch.zeros(1, dtype=torch.long, device=device) if model.num_classes else None
    with FlopCounterMode(display=False) as counter:
        model(x, torch.tensor([10.0], device=device), Conditions(classes, mask)).sum().backward()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "phantom_3d.yaml"))
    parser.add_argument("--data", help="dataset (default: fresh 3D CT phantoms matching the config's grid)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100/H200 SXM: 989)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    overrides = [f"train.max_steps={args.warmup + args.steps}", "train.sample_every=0", "train.checkpoint_every=1000000",
                 "train.max_minutes=0", "train.log_every=1"]
    if args.batch_size:
        overrides.append(f"train.batch_size={args.batch_size}")
    cfg = load_config(args.config, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or write_phantom_dataset(Path(tmp) / "data", PhantomSpec(dims=cfg.spatial_dims,
                                                  size=max(cfg.data.shape), cases=24), show_progress=False)
        ts = load_training_set(open_catalog(data, cfg), cfg, show_progress=False)
        masks = ts.one_hot(torch.arange(len(ts))) if ts.labels is not None else None
        plain, model = plain_loop(cfg, ts.images, ts.classes, masks, args.steps, args.warmup, device)
        ours = medsynth_rate(cfg, data, Path(tmp) / "run", args.steps, args.warmup, device)
    flops = flops_per_sample(model, cfg, ts.images.shape[1], ts.num_labels, device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), "
          f"torch {torch.__version__}, config {Path(args.config).name}, grid {cfg.data.shape}, batch {cfg.train.batch_size}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    print(f"plain MONAI loop : {plain:8.2f} samples/s  ({plain * flops / 1e12:.3f} TFLOP/s)")
    print(f"medsynth trainer : {ours:8.2f} samples/s  ({ours * flops / 1e12:.3f} TFLOP/s)")
    print(f"ratio medsynth / plain: {ours / plain:.2f}x  (model FLOPs per sample, fwd+bwd: {flops / 1e9:.2f} GFLOP)")
    if device.type == "cuda":
        print(f"MFU: plain {100 * plain * flops / 1e12 / args.peak_tflops:.1f}%, "
              f"medsynth {100 * ours * flops / 1e12 / args.peak_tflops:.1f}% of {args.peak_tflops:g} TFLOP/s")


if __name__ == "__main__":
    main()
