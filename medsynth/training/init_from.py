"""Fine-tuning: a run that starts from another finished run's weights (train.init_from, `--init-from RUN`).

The parent must have the same kind of network (model section, image channels, dimensionality, noise process and
prediction). Layers whose meaning changes are "layers that do not fit": the class embedding when the class names
differ, the input convolution when the mask labels differ. They are refused in one sentence naming them, unless
train.init_fresh_layers is true: then the class rows of classes the parent knew (matched by name) and the null row are
copied and new classes start fresh, and the input convolution keeps the parent's image-channel weights while the new
mask channels start fresh. The run records the parent (its checkpoint hash, data, classes, privacy) and the parent's
own lineage, so every artefact downstream names every dataset the weights learnt from.

train.trainable (glob patterns over the network's parameter names) fine-tunes only the layers it names and keeps the
rest at the parent's weights: fewer parameters to adapt, and under train.dp less noise in all (the noise is added to
every trained parameter) and cheaper per-example gradients, as DP-LDM does (Lyu et al. 2023: attention and
conditioning layers only). The run records the patterns and how many parameters they train.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import torch
from torch import nn

from medsynth import provenance
from medsynth.config import Config, config_from_dict
from medsynth.errors import MedsynthError
from medsynth.models import build_denoiser
from medsynth.runs import RunFolder
from medsynth.runs.checkpoint import load_checkpoint

CLASS_ROWS, INPUT_CONV = "net.class_embedding.weight", "net.conv_in.conv.weight"


@dataclass(frozen=True)
class Parent:
    """The run a new run starts from, and the weights (mapped onto the new network) it starts with."""

    record: dict                      # what the new run's run.json and checkpoint say about it
    weights: dict[str, torch.Tensor]  # a full state dict for the new network


def read_parent(cfg: Config, image_channels: int, num_labels: int, class_names: list[str],
                label_ids: list[int] | None) -> Parent | None:
    """The parent run of `cfg` (None without train.init_from), checked and mapped before anything is written."""
    if not cfg.train.init_from:
        return None
    if cfg.latent.enabled:
        raise MedsynthError("train.init_from is not available for latent runs yet; fine-tune a pixel model "
                            "(latent.enabled: false) or drop --init-from.")
    run = Path(cfg.train.init_from).expanduser().resolve()
    folder = RunFolder(run)
    if not folder.checkpoint.is_file():
        raise MedsynthError(f"--init-from {run}: no trained run there (no {folder.relative(folder.checkpoint)}); "
                            "give a run folder made by `medsynth train`.")
    state = load_checkpoint(folder.checkpoint)
    if not state.get("finished"):
        raise MedsynthError(f"--init-from {run}: its training stopped at step {state.get('step')} and is not finished; "
                            "finish it with `medsynth train ... --resume` first.")
    parent_cfg = config_from_dict(state["config"], str(folder.checkpoint), stored=True)
    check_compatible(run, parent_cfg, cfg, int(state["image_channels"]), image_channels)
    new = fresh_state(cfg, image_channels, num_labels, len(class_names))
    weights = state["ema" if cfg.train.init_weights == "ema" else "model"]
    misfits = misfitting(weights, new, list(state["class_names"]), class_names,
                         (state["num_labels"], state.get("label_ids")), (num_labels, label_ids))
    if misfits and not cfg.train.init_fresh_layers:
        raise MedsynthError(f"--init-from {run}: {'; '.join(misfits)}; set train.init_fresh_layers: true to start "
                            "those layers fresh (classes and labels the parent knew keep their weights).")
    mapped = map_weights(weights, new, list(state["class_names"]), class_names, image_channels)
    record = {"run": str(run), "run_hash": provenance.sha256_file(folder.checkpoint), "weights": cfg.train.init_weights,
              "data_source": state.get("data_source"), "catalog_fingerprint": state.get("catalog_fingerprint"),
              "class_names": list(state["class_names"]), "steps": int(state.get("step", 0)),
              "privacy": state.get("privacy"), "fresh_layers": misfits, "parent": state.get("parent"),
              **trained_layers(cfg.train.trainable, new)}
    return Parent(record, mapped)


def check_compatible(run: Path, parent: Config, cfg: Config, parent_channels: int, image_channels: int) -> None:
    """Refuse a parent whose network is of another kind, in one sentence naming what differs."""
    differs = [f"model.{k}" for k, v in parent.to_dict()["model"].items()
               if k != "checkpointing" and cfg.to_dict()["model"][k] != v]
    differs += [f"diffusion.{k}" for k in ("process", "prediction") if getattr(parent.diffusion, k) != getattr(cfg.diffusion, k)]
    if parent.spatial_dims != cfg.spatial_dims:
        differs.append(f"{parent.spatial_dims}D, not {cfg.spatial_dims}D")
    if parent_channels != image_channels:
        differs.append(f"{parent_channels} image channels, not {image_channels}")
    if parent.latent.enabled:
        differs.append("a latent run")
    if parent.conditioning.extra_columns or cfg.conditioning.extra_columns:
        differs.append("conditions beyond the class (conditioning.classes / covariates), which fine-tuning does not "
                       "map yet")
    if differs:
        raise MedsynthError(f"--init-from {run}: its network is not compatible with this config ({', '.join(differs)}); "
                            "fine-tune with the parent's model and diffusion sections.")


def fresh_state(cfg: Config, image_channels: int, num_labels: int, num_classes: int) -> dict[str, torch.Tensor]:
    """A freshly initialised state dict of the new network (seeded by train.seed; the global stream is left alone)."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        model = build_denoiser(cfg.model, cfg.spatial_dims, image_channels, num_labels, num_classes)
    return model.state_dict()


def misfitting(weights: dict, new: dict, old_classes: list[str], new_classes: list[str], old_labels: tuple,
               new_labels: tuple) -> list[str]:
    """Each parent layer that does not fit the new network, with why."""
    found = []
    if old_classes != new_classes:
        found.append(f"the class embedding ({CLASS_ROWS}) was trained for classes {old_classes or 'none'}, "
                     f"this run has {new_classes or 'none'}")
    if old_labels[0] != new_labels[0] or (old_labels[1] or None) != (new_labels[1] or None):
        found.append(f"the input convolution ({INPUT_CONV}) was trained for {old_labels[0]} mask labels, this run has "
                     f"{new_labels[0]}")
    named = {CLASS_ROWS, INPUT_CONV}
    found += [f"{k} has shape {tuple(weights[k].shape)} in the parent, {tuple(v.shape)} here"
              for k, v in new.items() if k in weights and k not in named and weights[k].shape != v.shape]
    found += [f"{k} is missing in the parent" for k in new if k not in weights and k not in named]
    return found


def map_weights(weights: dict, new: dict, old_classes: list[str], new_classes: list[str],
                image_channels: int) -> dict[str, torch.Tensor]:
    """The parent's weights on the new network: equal layers copied, known class rows and image channels copied
    into the class embedding and input convolution, everything else as freshly initialised."""
    out = {k: (weights[k].clone() if k in weights and weights[k].shape == v.shape else v.clone()) for k, v in new.items()}
    if CLASS_ROWS in new and CLASS_ROWS in weights and old_classes != new_classes:
        rows, old = new[CLASS_ROWS].clone(), weights[CLASS_ROWS]
        for i, name in enumerate(new_classes):
            if name in old_classes:
                rows[i] = old[old_classes.index(name)]
        rows[len(new_classes)] = old[len(old_classes)]      # the null class: guidance's unconditioned path
        out[CLASS_ROWS] = rows
    if INPUT_CONV in weights and weights[INPUT_CONV].shape != new[INPUT_CONV].shape:
        conv = new[INPUT_CONV].clone()
        conv[:, :image_channels] = weights[INPUT_CONV][:, :image_channels]
        out[INPUT_CONV] = conv
    return out


def trained_names(names: list[str], patterns: tuple[str, ...]) -> set[str]:
    """The parameter names train.trainable's patterns match (all without patterns); a pattern that matches nothing is
    refused with examples of the names there are."""
    if not patterns:
        return set(names)
    for pattern in patterns:
        if not any(fnmatch(n, pattern) for n in names):
            examples = ", ".join(names[i] for i in range(0, len(names), max(1, len(names) // 5)))
            raise MedsynthError(f"train.trainable: {pattern!r} matches no layer of this network; its parameters are "
                                f"named like {examples} (glob patterns, e.g. '*attention*', '*time_emb*').")
    return {n for n in names if any(fnmatch(n, p) for p in patterns)}


def trained_layers(patterns: tuple[str, ...], state: dict[str, torch.Tensor]) -> dict:
    """What a fine-tuning run's record says about the layers it trains (nothing when it trains them all)."""
    if not patterns:
        return {}
    names = [k for k, v in state.items() if v.is_floating_point()]
    chosen = trained_names(names, patterns)
    return {"trainable": list(patterns), "trained_parameters": sum(state[k].numel() for k in chosen),
            "all_parameters": sum(state[k].numel() for k in names)}


def freeze_untrained(model: nn.Module, patterns: tuple[str, ...]) -> None:
    """Keep every parameter train.trainable does not name at its starting weights (no gradient, no optimiser)."""
    chosen = trained_names([n for n, _ in model.named_parameters()], patterns)
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
