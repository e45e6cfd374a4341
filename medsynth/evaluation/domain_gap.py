"""Can a downstream network tell the synthetic studies from real ones? (#23)

A classifier two-sample test (Lopez-Paz and Oquab, 2017) per class and per network of the recipe family: the network
learns real training studies of the class against as many synthetic ones, then scores unseen studies (the class's
real holdout against as many other synthetic ones); its ROC AUC is 0.5 where it cannot tell them apart. A network that
can sees a mark of the synthetic studies, and what it learns from them need not carry to real patients: on the CT
phantoms resnet18 told them apart at 0.93-0.98 and was the one recipe the synthetic lesions did not help, while the
MONAI Classifier (0.60-0.83) gained; on BreastMNIST resnet18 told them apart less well (0.79-0.83) and gained
(docs/benchmarks.md, session 29).
"""

from __future__ import annotations

import numpy as np

from medsynth.evaluation import classifier as cls
from medsynth.evaluation.metrics import mean_interval
from medsynth.evaluation.recipes import BATCH
from medsynth.evaluation.studies import StudySet
from medsynth.progress import progress_iter
from medsynth.stats import roc_auc


def two_sample(real_train: np.ndarray, real_unseen: np.ndarray, synthetic: np.ndarray, network: str, seeds: int,
               steps: int, seed: int = 0) -> dict:
    """ROC AUC of `network` telling synthetic from real studies it did not learn from, over `seeds` seeds: trained on
    n real training and the first n synthetic studies (n: the smaller of the real count and half the synthetic one),
    scored on `real_unseen` and as many of the other synthetic studies."""
    n = min(len(real_train), len(synthetic) // 2)
    test = synthetic[n : n + len(real_unseen)]
    labels = np.r_[np.zeros(n), np.ones(n)].astype(np.int64)
    aucs = []
    for k in range(seeds):
        model = cls.train_classifier(np.concatenate([real_train[:n], synthetic[:n]]), labels, 2, seed=seed + k,
                                     steps=steps, batch_size=BATCH, network=network)
        p = cls.probabilities(model, np.concatenate([real_unseen, test]))[:, 1]
        aucs.append(roc_auc(p[len(real_unseen):], p[: len(real_unseen)]))
    return {**mean_interval(np.array(aucs), (0, 1)), "per_seed": [float(a) for a in aucs], "trained_on": [n, n],
            "scored_on": [len(real_unseen), len(test)]}


def domain_gap(train: StudySet, holdout: StudySet, synthetic: StudySet, names: list[str], networks: list[str],
               seeds: int, steps: int, seed: int, show_progress: bool) -> dict:
    """{class name: {network: two_sample's figures}} for every class with at least 2 real training, 2 real holdout
    and 4 synthetic studies."""
    kinds = [c for c in range(len(names)) if (train.classes == c).sum() >= 2 and (holdout.classes == c).sum() >= 2
             and (synthetic.classes == c).sum() >= 4]
    pairs = [(c, network) for c in kinds for network in networks]
    out: dict[str, dict] = {}
    for c, network in progress_iter(pairs, "real vs synthetic, per class and network", enabled=show_progress):
        out.setdefault(names[c], {})[network] = two_sample(
            train.images[train.classes == c], holdout.images[holdout.classes == c],
            synthetic.images[synthetic.classes == c], network, seeds, steps, seed)
    return out

