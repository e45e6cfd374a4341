"""Export throughput: DICOM and NIfTI export of N studies of S^3 voxels, next to numpy.save of the same bytes.

Target (docs/benchmarks.md): DICOM export >= 0.5x the raw numpy.save write speed, using all cores.

    python scripts/bench_export.py [--n 100] [--size 128] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medsynth.data.study import Study
from medsynth.data.writers import write_study_nifti
from medsynth.exporter.export import export
from medsynth.runs import SetFolder


def make_set(folder: Path, n: int, size: int) -> int:
    """n CT studies of size^3 (int16 HU) with label maps, in the synthetic-set layout; returns image bytes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.integers(-1000, 1000, (size,) * 3).astype(np.float32)
    labels = (base > 500).astype(np.uint8)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    rows, files = [], SetFolder(folder)
    for k in range(n):
        sid = f"syn_{k:05d}"
        image, label = files.image_name(sid), files.label_name(sid)
        write_study_nifti(Study(np.roll(base, k, 0)[None], affine, "CT", labels, study_id=sid),
                          folder / image, folder / label)
        files.study_record(sid).write_text("{}")
        rows.append({"study_id": sid, "index": k, "class": "", "seed": 0, "image": image,
                     "label": label, "mask_source": "", "qc_attempts": 1, "qc_passed": True})
    pd.DataFrame(rows).to_csv(files.table, index=False)
    files.record.write_text(json.dumps({
        "inputs": {"run": "bench", "run_hash": "0" * 64, "catalog_fingerprint": "0" * 64},
        "config": {"steps": 0, "guidance": 1}, "seeds": {"generate": 0}, "modality": "CT",
        "label_names": {"0": "background", "1": "dense"},
        "training_config": {"model": {"name": "unet", "channels": []}, "diffusion": {"process": "rflow"},
                            "conditioning": {}, "data": {"shape": [size] * 3}}}))
    return n * size**3 * 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="DICOM processes (0: all cores)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nbytes = make_set(tmp / "synth", args.n, args.size)
        volume = np.zeros((args.size,) * 3, np.int16)
        start = time.perf_counter()
        for k in range(args.n):
            np.save(tmp / f"raw_{k}.npy", volume + k)
        raw_s = time.perf_counter() - start
        results = {}
        for fmt in ("dicom", "nifti"):
            start = time.perf_counter()
            export(tmp / "synth", tmp / f"out_{fmt}", [fmt], force=True, workers=args.workers or None, show_progress=False)
            results[fmt] = time.perf_counter() - start
    mb = nbytes / 1e6
    print(f"{args.n} CT studies of {args.size}^3 int16 ({mb:.0f} MB of image data), {os.cpu_count()} cores, "
          f"workers {args.workers or os.cpu_count()}")
    print(f"numpy.save          : {mb / raw_s:8.1f} MB/s")
    for fmt, seconds in results.items():
        print(f"export {fmt:12s} : {mb / seconds:8.1f} MB/s  ({seconds:.1f} s incl. labels/SEG, manifest hashes; "
              f"{(mb / seconds) / (mb / raw_s):.2f}x numpy.save)")


if __name__ == "__main__":
    main()
