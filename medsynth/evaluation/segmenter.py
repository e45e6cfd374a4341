"""A small MONAI UNet segmenter trained on (image, label map) pairs: conditioning judge and utility model for masks."""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import SegResNet, UNet
from monai.networks.utils import one_hot

from medsynth.progress import progress_iter


def build_segmenter(spatial_dims: int, labels: int, network: str = "unet") -> torch.nn.Module:
    """`labels` counts the foreground labels; the network (MONAI UNet or SegResNet) predicts background plus each."""
    if network == "segresnet":
        return SegResNet(spatial_dims=spatial_dims, in_channels=1, out_channels=labels + 1, init_filters=8)
    return UNet(spatial_dims=spatial_dims, in_channels=1, out_channels=labels + 1, channels=(16, 32, 64),
                strides=(2, 2), num_res_units=1, norm="batch")


def train_segmenter(images: np.ndarray, labels: np.ndarray, num_labels: int, steps: int = 300, batch_size: int = 8,
                    lr: float = 2e-3, seed: int = 0, name: str = "segmenter", show_progress: bool = False,
                    network: str = "unet") -> torch.nn.Module:
    """Dice + cross-entropy, Adam, light gain/offset/noise augmentation (no flips: label meaning may be sided).

    images (N, 1, *spatial) in model units; labels (N, *spatial) integer label maps."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(images, np.float32))
    y_all = torch.from_numpy(np.ascontiguousarray(labels, np.int64))[:, None]
    model = build_segmenter(x_all.ndim - 2, num_labels, network)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    model.train()
    for _ in progress_iter(range(steps), name, enabled=show_progress):
        index = torch.randint(len(x_all), (min(batch_size, len(x_all)),), generator=g)
        x = x_all[index]
        shape = (len(index),) + (1,) * (x.ndim - 1)
        x = x * (0.9 + 0.2 * torch.rand(shape, generator=g)) + 0.1 * torch.rand(shape, generator=g) - 0.05
        x = x + 0.03 * torch.randn(x.shape, generator=g)
        loss = loss_fn(model(x), y_all[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def segment(model: UNet, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """(N, *spatial) predicted label maps."""
    x_all = torch.from_numpy(np.ascontiguousarray(images, np.float32))
    return torch.cat([model(x_all[i : i + batch_size]).argmax(1) for i in range(0, len(x_all), batch_size)]).numpy()


def dice_per_label(predicted: np.ndarray, truth: np.ndarray, num_labels: int) -> np.ndarray:
    """(N, num_labels) Dice of each foreground label; NaN where a label is absent from both maps."""
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    p = one_hot(torch.from_numpy(predicted.astype(np.int64))[:, None], num_labels + 1)
    t = one_hot(torch.from_numpy(truth.astype(np.int64))[:, None], num_labels + 1)
    return metric(p, t).numpy()


def mean_dice(per_label: np.ndarray) -> float:
    """One model's score: Dice averaged over studies per label, then over labels (NaN labels left out)."""
    return float(np.nanmean(np.nanmean(per_label, 0)))
