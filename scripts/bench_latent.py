"""Latent path cost: AutoencoderKL encode / decode throughput and peak memory per volume size, whole and tiled
decoding, and the time to sample one volume with rectified flow in latent space and decode it.

Networks are built from a config's `latent` and `model` sections (default configs/ct_latent_3d.yaml) with random
weights: speed and memory do not depend on the weights. Each measurement runs in a fresh process so its peak memory
is its own (CPU: peak resident set size of that process; CUDA: torch's peak allocated memory). Target on an H200:
one 256x256x128 volume with 30 steps in <= 1.5 s (MAISI v2: 3 s on an A100), peak memory growing no faster than the
volume. On a CPU, 64^3 and 128^3 show the cost curve.

    python scripts/bench_latent.py [--sizes 64x64x64 128x128x128] [--sample-size 64x64x64] [--tile 8] [--device auto]
    python scripts/bench_latent.py --device cuda --sizes 64x64x64 128x128x128 256x256x128 --sample-size 256x256x128
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch

from medsynth.config import load_config
from medsynth.conditioning import Conditions
from medsynth.diffusion import noise_process, sample
from medsynth.models import build_denoiser
from medsynth.models.autoencoder import build_autoencoder
from medsynth.models.latent import LatentCodec, autoencoder_spec, receptive_radius
from medsynth.runtime import resolve_device


def shape_of(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.lower().split("x"))


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: kilobytes


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(args: argparse.Namespace) -> dict:
    """One measurement in this process: encode, decode, tiled or sample at args.one."""
    device = resolve_device(args.device)
    cfg = load_config(args.config)
    size = shape_of(args.one)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    torch.manual_seed(0)
    autoencoder = build_autoencoder(autoencoder_spec(cfg.latent), len(size)).to(device).eval()
    codec = LatentCodec(autoencoder, 1.0, cfg.latent.factor, args.tile, 0, "concat")
    latent = (cfg.latent.latent_channels, *[s // cfg.latent.factor for s in size])
    z = torch.randn(1, *latent)
    x = torch.rand(1, 1, *size) * 2 - 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {"what": args.what, "size": args.one, "device": device.type}
    with torch.no_grad(), autocast:
        if args.what == "encode":
            seconds = timed(lambda: codec.encode(x), device, args.repeats)
        elif args.what == "decode":
            codec.tile = 0
            seconds = timed(lambda: codec.decode(z), device, args.repeats)
        elif args.what in ("tiled", "uncached"):
            codec.cache = args.what == "tiled"
            seconds = timed(lambda: codec.decode(z), device, args.repeats)
        elif args.what == "agreement":
            codec.tile = 0
            whole = codec.decode(z)
            codec.tile = args.tile
            result["max_abs_difference"] = float((codec.decode(z) - whole).abs().max())
            seconds = float("nan")
        else:  # sample: rectified flow in latent space, then decoding (whole unless --sample-tile)
            codec.tile = args.sample_tile
            denoiser = build_denoiser(cfg.model, len(size), cfg.latent.latent_channels, 0, 0).to(device).eval()
            gens = [torch.Generator().manual_seed(0)]

            def one() -> None:
                latents = sample(denoiser, noise_process(cfg.diffusion), latent, gens, Conditions(), args.steps, 1.0,
                                 device=device, clip=False)
                codec.decode(latents)
            seconds = timed(one, device, args.repeats)
            result["steps"] = args.steps
    voxels = int(torch.tensor(size).prod())
    result.update(seconds=seconds, peak_mb=peak_mb(device), megavoxels_per_s=voxels / 1e6 / seconds,
                  output_mb=voxels * 4 / 2**20, tile=args.tile)
    return result


def run_one(args: argparse.Namespace, what: str, size: str) -> dict:
    command = [sys.executable, __file__, "--one", size, "--what", what, "--config", args.config, "--device", args.device,
               "--tile", str(args.tile), "--steps", str(args.steps), "--repeats", str(args.repeats),
               "--sample-tile", str(args.sample_tile)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"what": what, "size": size, "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="ct_latent_3d.yaml")
    parser.add_argument("--sizes", nargs="+", default=["64x64x64", "128x128x128"])
    parser.add_argument("--sample-size", default="64x64x64", help="volume size of the sampling measurement "
                        "('none' skips it)")
    parser.add_argument("--tile", type=int, default=8, help="tile size in latent voxels for tiled decoding")
    parser.add_argument("--uncached-sizes", nargs="*", default=None, help="sizes at which tiled decoding also runs "
                        "without its activation cache (memory of one tile; slow); default: the first size")
    parser.add_argument("--sample-tile", type=int, default=0, help="decoding tile of the sampling measurement (0: whole)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--what", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args)))
        return

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}"
    cfg = load_config(args.config)
    radius = receptive_radius(build_autoencoder(autoencoder_spec(cfg.latent), len(shape_of(args.sizes[0]))))
    print(f"device: {device.type} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"config {args.config}; tile {args.tile} latent voxels, context {cfg.latent.tile_overlap or radius} "
          f"(decoder receptive radius {radius})")
    uncached = args.sizes[:1] if args.uncached_sizes is None else args.uncached_sizes
    rows = [run_one(args, what, size) for size in args.sizes for what in ("encode", "decode", "tiled")]
    rows += [run_one(args, "uncached", size) for size in uncached]
    rows.append(run_one(args, "agreement", args.sizes[0]))
    if args.sample_size != "none":
        rows.append(run_one(args, "sample", args.sample_size))
    print(f"{'measure':<10} {'size':<12} {'seconds':>9} {'Mvox/s':>8} {'peak MB':>9} {'output MB':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['what']:<10} {r['size']:<12} failed: {r['error']}")
        elif r["what"] == "agreement":
            print(f"tiled vs whole decoding at {r['size']}: max |difference| {r['max_abs_difference']:.2e}")
        else:
            print(f"{r['what']:<10} {r['size']:<12} {r['seconds']:>9.2f} {r['megavoxels_per_s']:>8.2f} "
                  f"{r['peak_mb']:>9.0f} {r['output_mb']:>9.1f}" + (f"  ({r['steps']} steps + decode)" if "steps" in r else ""))
    print("tiled: whole-volume GroupNorm statistics, activations cached between passes; uncached: one tile's memory")
    print("tiles only save memory when tile + 2 x context is well below the latent side")


if __name__ == "__main__":
    main()
