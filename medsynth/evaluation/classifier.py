"""A small MONAI classifier trained on real studies: conditioning judge, feature space for Frechet distance, utility model."""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.nets import Classifier, resnet18
from torch import nn

FEATURES = 32  # width of the feature layer that Frechet distances are measured in


class FeatureClassifier(nn.Module):
    """MONAI Classifier trunk -> 32-d feature layer (PReLU) -> linear class head."""

    def __init__(self, in_shape: tuple[int, ...], classes: int, channels=(32, 64, 128)) -> None:
        super().__init__()
        self.trunk = Classifier(in_shape=in_shape, classes=FEATURES, channels=channels, strides=(2,) * len(channels),
                                num_res_units=1, dropout=0.2)
        self.act = nn.PReLU()
        self.head = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResNetClassifier(nn.Module):
    """MONAI's resnet18 (2D or 3D) as a downstream classifier: pooled features -> linear class head. `width` scales
    every layer's channels (MONAI's widen_factor; 1.0: 64-512 channels, 512-d features)."""

    def __init__(self, in_shape: tuple[int, ...], classes: int, width: float = 1.0) -> None:
        super().__init__()
        self.trunk = resnet18(spatial_dims=len(in_shape) - 1, n_input_channels=in_shape[0], num_classes=classes,
                              feed_forward=False, widen_factor=width)
        self.head = nn.Linear(int(512 * width), classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


NETWORKS = {"classifier": FeatureClassifier, "resnet18": ResNetClassifier,
            # a quarter of resnet18's channels (16-128): the same 18 layers at the cost a 2-core CPU can afford many
            # times over (full width: about 10x the Classifier's seconds per step at 32 x 32)
            "resnet18-quarter": lambda in_shape, classes: ResNetClassifier(in_shape, classes, width=0.25)}


def train_classifier(images: np.ndarray, labels: np.ndarray, classes: int, seed: int = 0, epochs: int = 40,
                     batch_size: int = 64, lr: float = 1e-3, steps: int | None = None, balanced: bool = True,
                     network: str = "classifier") -> nn.Module:
    """Cross-entropy (class-balanced unless `balanced` is off), Adam, random flips; images (N, C, *spatial) in [-1, 1].

    `epochs` passes over the data, or with `steps` exactly that many random batches (the same cost for any set size).
    `network`: a MONAI Classifier trunk ("classifier"), MONAI resnet18 or its quarter-width form."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = NETWORKS[network](images.shape[1:], classes)
    counts = np.bincount(labels, minlength=classes).astype(float)
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / classes if balanced else np.ones(classes),
                           dtype=torch.float32)
    loss = lambda out, y: nn.functional.cross_entropy(out, y, weight=weights)  # noqa: E731
    return fit(model, images, torch.from_numpy(labels.astype(np.int64)), loss, rng,
               batches(rng, len(images), batch_size, steps, epochs), lr)


def batches(rng: np.random.Generator, n: int, batch_size: int, steps: int | None, epochs: int):
    """Row indices of each batch: `steps` random batches, or `epochs` shuffled passes. Drawn lazily, so the random
    stream interleaves with fit's flips as it always has."""
    if steps is not None:
        for _ in range(steps):
            yield rng.choice(n, min(batch_size, n), replace=False)
        return
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]


def fit(model: nn.Module, images: np.ndarray, targets: torch.Tensor, loss, rng: np.random.Generator, indices,
        lr: float) -> nn.Module:
    """Adam (weight decay 1e-4) on `loss(model(x), y)` over the batches `indices`, each image mirrored along its last
    axis at random."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    x_all = torch.from_numpy(images.astype(np.float32))
    model.train()
    for index in indices:
        x = x_all[index]
        flip = torch.from_numpy(rng.random(len(index)) < 0.5)
        x = torch.where(flip.view(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)
        value = loss(model(x), targets[index])
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def predict(model: FeatureClassifier, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class (N,), features (N, 32))."""
    x = torch.from_numpy(images.astype(np.float32))
    features = torch.cat([model.features(x[i : i + 256]) for i in range(0, len(x), 256)])
    return model.head(features).argmax(1).numpy(), features.numpy()


@torch.no_grad()
def probabilities(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """(N, classes) the classifier's softmax probabilities."""
    x = torch.from_numpy(images.astype(np.float32))
    return torch.cat([model(x[i : i + 256]).softmax(1) for i in range(0, len(x), 256)]).numpy()


def train_regressor(images: np.ndarray, targets: np.ndarray, seed: int = 0, steps: int = 300, batch_size: int = 16,
                    lr: float = 1e-3) -> nn.Module:
    """A MONAI Classifier trunk with one output, fitted by MSE to `targets` (standardised values), random flips."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = FeatureClassifier(images.shape[1:], 1)
    loss = lambda out, y: nn.functional.mse_loss(out[:, 0], y)  # noqa: E731
    return fit(model, images, torch.from_numpy(targets.astype(np.float32)), loss, rng,
               batches(rng, len(images), batch_size, steps, 0), lr)


@torch.no_grad()
def predict_value(model: FeatureClassifier, images: np.ndarray) -> np.ndarray:
    """(N,) the regressor's standardised values."""
    x = torch.from_numpy(images.astype(np.float32))
    return torch.cat([model(x[i : i + 256])[:, 0] for i in range(0, len(x), 256)]).numpy().astype(np.float64)
