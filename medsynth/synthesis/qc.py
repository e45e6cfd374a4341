"""Quality check of one synthetic study against training statistics (model units, before conversion)."""

from __future__ import annotations

import numpy as np

Z_LIMIT = 5.0      # how many training standard deviations a mean may stray
MIN_STD = 0.02     # floor on the spread, in model units, for tight training distributions


def quality_check(unit_image: np.ndarray, labels: np.ndarray | None, stats: dict) -> list[str]:
    """Problems with a generated study (empty list: it passes).

    Checks: finite values; the mean intensity overall, and within each label when a label map is given,
    lies within Z_LIMIT standard deviations of the training studies' means (a private run stores no such statistics:
    only the first check applies).
    """
    if not np.all(np.isfinite(unit_image)):
        return ["non-finite values (NaN or inf)"]
    problems = []
    checks = [("whole image", unit_image[0], stats["global"])] if stats["global"] else []   # a private run keeps none
    if labels is not None:
        checks += [(f"label {label}", unit_image[0][labels == int(label)], mean_std)
                   for label, mean_std in stats["labels"].items() if np.any(labels == int(label))]
    for what, values, (mean, std) in checks:
        z = abs(float(values.mean()) - mean) / max(std, MIN_STD)
        if z > Z_LIMIT:
            problems.append(f"{what}: mean {float(values.mean()):.3f} is {z:.1f} SD from training ({mean:.3f})")
    return problems
