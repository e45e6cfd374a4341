"""Dataset folders described by a dataset.json: the Medical Segmentation Decathlon and nnU-Net v2 layouts.

MSD:        dataset.json {"modality": {"0": "MRI"}, "labels": {"0": "background", ...}, "training": [...]}
            imagesTr/<case>.nii.gz (4D when multi-channel), labelsTr/<case>.nii.gz
nnU-Net v2: dataset.json {"channel_names": {"0": "CT"}, "labels": {"background": 0, ...}, "file_ending": ".nii.gz"}
            imagesTr/<case>_0000.nii.gz (one file per channel), labelsTr/<case>.nii.gz
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from medsynth.data.readers.base import Scan, StudyRef
from medsynth.data.readers.nifti import NIFTI_ENDINGS, load_image_and_label
from medsynth.data.study import Study, normalise_modality
from medsynth.errors import DataError

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def is_dataset_folder(path: Path) -> bool:
    return path.is_dir() and (path / "dataset.json").is_file()


def read_dataset_json(root: Path) -> dict:
    path = root / "dataset.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); fix the file.") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} must hold a JSON object with 'labels' and 'modality' or 'channel_names'.")
    return meta


def label_vocabulary(meta: dict, where: Path) -> dict[int, str]:
    """Label ids to names, from MSD ({'0': 'background'}) or nnU-Net v2 ({'background': 0}, regions as lists)."""
    labels = meta.get("labels")
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise DataError(f"{where}: 'labels' must be an object mapping label ids and names.")
    vocab: dict[int, str] = {}
    try:
        for key, value in labels.items():
            if str(key).lstrip("-").isdigit():  # MSD: id -> name
                vocab[int(key)] = str(value)
            else:  # nnU-Net v2: name -> id, or name -> [ids] for regions
                for label_id in value if isinstance(value, list) else [value]:
                    vocab.setdefault(int(label_id), str(key))
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'labels' mixes names and ids in a way neither MSD nor nnU-Net uses.") from None
    return vocab


def scan_dataset(root: Path) -> Scan:
    meta = read_dataset_json(root)
    where = root / "dataset.json"
    channel_names = meta.get("channel_names") or meta.get("modality") or {}
    if not isinstance(channel_names, dict) or not channel_names:
        raise DataError(f"{where}: needs 'modality' (MSD) or 'channel_names' (nnU-Net v2) naming each channel.")
    modality = normalise_modality(channel_names.get("0", next(iter(channel_names.values()))))
    kind = "nnU-Net v2 dataset" if "channel_names" in meta else "MSD dataset"
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in NIFTI_ENDINGS:
        raise DataError(f"{where}: file_ending {ending!r} is not supported; medsynth reads .nii.gz and .nii datasets.")
    if isinstance(meta.get("training"), list) and meta["training"]:
        cases = _cases_from_training_list(root, meta["training"], ending)
    else:
        cases = _cases_from_files(root, ending, len(channel_names))
    declared = meta.get("numTraining")
    if declared is not None and int(declared) != len(cases):
        raise DataError(f"{where} says numTraining={declared} but {len(cases)} training cases were found; "
                        "fix numTraining or add the missing files.")
    refs = [StudyRef(case, "dataset", tuple(images), label, modality=modality, channels=len(channel_names))
            for case, (images, label) in cases.items()]
    return Scan(kind, str(meta.get("name", root.name)), refs, label_vocabulary(meta, where))


def _cases_from_training_list(root: Path, training: list, ending: str) -> dict[str, tuple[list[str], str]]:
    cases = {}
    for entry in training:
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f"{root / 'dataset.json'}: each 'training' entry needs an 'image' (and usually 'label').")
        images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        paths = [str((root / p).resolve()) for p in images]
        label = str((root / entry["label"]).resolve()) if entry.get("label") else ""
        for path in paths + ([label] if label else []):
            if not Path(path).is_file():
                raise DataError(f"{root / 'dataset.json'} lists {path} but that file does not exist; "
                                "fix the 'training' list or restore the file.")
        cases[Path(paths[0]).name[: -len(ending)] if paths[0].endswith(ending) else Path(paths[0]).stem] = (paths, label)
    return cases


def _cases_from_files(root: Path, ending: str, n_channels: int) -> dict[str, tuple[list[str], str]]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise DataError(f"{root} has a dataset.json but no imagesTr folder; the MSD and nnU-Net layouts need one.")
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    matching = [p for p in files if p.name.endswith(ending)]
    if files and not matching:
        raise DataError(f"{root / 'dataset.json'} says file_ending {ending!r} but no file in imagesTr ends that way "
                        f"(e.g. {files[0].name}); fix file_ending.")
    if not matching:
        raise DataError(f"{images_dir} holds no images.")
    channels: dict[str, dict[int, Path]] = defaultdict(dict)
    for path in matching:
        stem = path.name[: -len(ending)]
        found = _CHANNEL.match(stem)
        case, channel = (found["case"], int(found["channel"])) if found else (stem, 0)
        channels[case][channel] = path
    cases = {}
    for case, by_channel in sorted(channels.items()):
        suffixed = _CHANNEL.match(Path(by_channel[min(by_channel)]).name[: -len(ending)])
        if suffixed and sorted(by_channel) != list(range(n_channels)):
            raise DataError(f"case {case} has channel files {sorted(by_channel)} but dataset.json names "
                            f"{n_channels} channel(s) 0..{n_channels - 1}; add the missing _000N files or fix channel_names.")
        label = labels_dir / f"{case}{ending}"
        if labels_dir.is_dir() and not label.is_file():
            raise DataError(f"case {case} has no label map {label}; add it or remove the case from imagesTr.")
        cases[case] = ([str(by_channel[c]) for c in sorted(by_channel)], str(label) if label.is_file() else "")
    return cases


def load_dataset_case(ref: StudyRef, label_names: dict[int, str] | None) -> Study:
    image, affine, label = load_image_and_label(ref.images, ref.label, ref.study_id, label_names or None)
    if ref.channels and image.shape[0] != ref.channels:
        raise DataError(f"case {ref.study_id} has {image.shape[0]} channel(s) but dataset.json names {ref.channels}; "
                        "fix 'modality'/'channel_names' or the image file.")
    return Study(image, affine, ref.modality, label, study_id=ref.study_id, subject_id=ref.subject_id,
                 source=ref.images[0])
