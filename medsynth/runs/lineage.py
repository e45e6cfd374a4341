"""What every artefact says about the weights that made it: the privacy they were trained under (training.private)
and every dataset they learnt from (the run's own, then each parent's when fine-tuned with --init-from)."""

from __future__ import annotations

import hashlib
import hmac
import math
from pathlib import Path

NOT_PRIVATE = {"private": False, "mechanism": "none"}


def keyed_fingerprint(fingerprint: str, key: str) -> str:
    """What a private run's checkpoint and outputs show of its catalog fingerprint: an HMAC under a key kept in the
    run folder's run.json. A plain hash of the training catalog would let anyone who can guess the catalog but one
    study test each guess for the last one, which the DP guarantee does not allow; the owner, who holds the key,
    can still match outputs to the run."""
    return hmac.new(bytes.fromhex(key), fingerprint.encode(), hashlib.sha256).hexdigest()


def privacy_of(meta: dict) -> dict:
    """A checkpoint's privacy record (training.private.PrivacyPlan.record), or the record of a run trained without."""
    return meta.get("privacy") or dict(NOT_PRIVATE)


def spend_summary(record: dict) -> str:
    """One line a person reads: the privacy a run's weights have, or that they have none."""
    if record.get("mechanism", "none") == "none":
        return "no differential privacy (trained without train.dp)"
    eps = record["epsilon"]
    spent = (f"epsilon {'inf' if math.isinf(eps) else f'{eps:.3g}'}, delta {record['delta']:.2g} "
             f"({record['accountant']} accountant, {record['steps_taken']} steps, noise multiplier "
             f"{record['noise_multiplier']:.3g}, clipping norm {record['max_grad_norm']:g})")
    if not record.get("private"):
        return f"NOT private: DP-SGD at {spent}, but the checkpoint stores {'; '.join(record['non_private_statistics'])}"
    return f"differentially private: {spent}"


def datasets(meta: dict) -> list[dict]:
    """Every dataset the weights learnt from, newest first: the run's own, then each parent's (folder names only)."""
    found, node, role = [], meta, "trained on"
    while node:
        source = node.get("data_source")
        found.append({"role": role, "data": Path(source).name if source else "unknown",
                      "catalog_fingerprint": node.get("catalog_fingerprint"),
                      **({"run_hash": node["run_hash"]} if node.get("run_hash") else {}),
                      "privacy": spend_summary(privacy_of(node))})
        node, role = node.get("parent"), "fine-tuned from a run trained on"
    return found


def tpr_bound(epsilon: float, delta: float, fpr: float) -> float:
    """The highest true-positive rate any membership attack can reach at false-positive rate `fpr` against
    (epsilon, delta)-DP weights (Kairouz et al. 2015): min(1, e^eps fpr + delta, 1 - e^-eps (1 - delta - fpr))."""
    if math.isinf(epsilon):
        return 1.0
    return float(min(1.0, math.exp(epsilon) * fpr + delta, 1.0 - math.exp(-epsilon) * (1.0 - delta - fpr)))
