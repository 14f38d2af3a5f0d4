"""Fine-tune the segmentation on image/label file pairs, as MONAI Label's ``BundleTrainTask`` hands them.

MONAI Label runs ``configs/train.json`` alone with ``train#dataset#data`` and ``validate#dataset#data`` set to
``[{"image": FILE, "label": FILE}]`` from its datastore. The bundle's own training is the overlay stack
``inference.yaml + train.yaml + finetune_segmentation.yaml`` over subject folders; :func:`finetune_on_files` turns each
pair into a subject folder of that one plane (links, not copies), runs that stack from the installed weights in a
separate process (its own command line, so the stack's checks see its own overrides) without warm-up (the weights are
trained already), and puts the fine-tuned network into ``models/model.pt``.

Label files: the plane's labels (X, Y, S, T) for every frame, or (X, Y, S) for one frame, as MONAI Label's editors
save them: those are frame ``label_frame`` (default 0, as :class:`scripts.single_file.SelectFramed` writes), every
other frame unlabelled.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch

from scripts.files import atomic_path, save_nifti_atomic, write_json_atomic
from scripts.labels import UNLABELLED
from scripts.single_file import plane_stem
from scripts.weights import read_state_dict, shipped_precision

logger = logging.getLogger(__name__)

#: the overlay stack of the bundle's segmentation fine-tuning, relative to the bundle folder
FINETUNE_CONFIGS = ["configs/inference.yaml", "configs/train.yaml", "configs/finetune_segmentation.yaml"]


def pair_subject(pair: Mapping[str, str], folder: Path, label_frame: int = 0) -> Path:
    """A subject folder ``folder`` holding the pair's plane file (linked) and its labels as ``seg_<stem>``.

    Args:
        pair: ``{"image": plane file (X, Y, S, T), "label": labels (X, Y, S, T) or (X, Y, S)}``.
        folder: the subject folder to make (its name is the subject id).
        label_frame: the frame a 3-D label file labels.

    Raises:
        ValueError: the label's grid is not the image's (names both files and the shapes).
    """
    image_path, label_path = Path(pair["image"]), Path(pair["label"])
    image = nib.load(str(image_path))
    label = nib.load(str(label_path))
    stem = plane_stem(image_path, image.shape)
    if image.ndim != 4 or tuple(label.shape[:3]) != tuple(image.shape[:3]) or label.ndim not in (3, 4):
        raise ValueError(
            f"{label_path}: labels of shape {label.shape} do not fit the cine {image_path} of shape {image.shape}; "
            "a label file holds the image's grid, for every frame (4-D) or for one (3-D)"
        )
    if label.ndim == 4 and label.shape[3] != image.shape[3]:
        raise ValueError(f"{label_path}: {label.shape[3]} frames of labels for the {image.shape[3]} of {image_path}")
    folder.mkdir(parents=True)
    os.symlink(image_path.resolve(), folder / f"{stem}.nii.gz")
    values = np.asarray(label.dataobj).astype(np.uint8)
    if values.ndim == 3:
        if not -image.shape[3] <= label_frame < image.shape[3]:
            raise ValueError(f"label frame {label_frame} is outside the {image.shape[3]} frames of {image_path}")
        every_frame = np.full(image.shape, UNLABELLED, dtype=np.uint8)
        every_frame[..., label_frame] = values
        values = every_frame
    save_nifti_atomic(values, image.affine, folder / f"seg_{stem}.nii.gz")
    return folder


def pairs_dataset(train: Sequence[Mapping[str, str]], validate: Sequence[Mapping[str, str]], folder: Path) -> Path:
    """A dataset folder of :func:`pair_subject` folders with a ``datalist.json`` of the two splits; without
    validation pairs the training pairs validate (the best model is then the best fit to them)."""
    if not train:
        raise ValueError("no training pairs: label at least one image in the datastore")
    splits: dict[str, list[dict[str, str]]] = {"training": [], "validation": [], "test": []}
    for split, pairs in (("training", train), ("validation", validate)):
        for index, pair in enumerate(pairs):
            name = f"{split}_{index:04d}_{Path(pair['image']).name.split('.')[0]}"
            pair_subject(pair, folder / name)
            splits[split].append({"subject": name})
    if not splits["validation"]:
        splits["validation"] = list(splits["training"])
    write_json_atomic(splits, folder / "datalist.json")
    return folder


def install_finetuned(finetuned: Path, installed: Path) -> Path:
    """Put the fine-tuned network into ``installed`` (``models/model.pt``): its tensors replace the installed ones,
    the rest (the phenotype heads) stays; rounded as the shipped file is, written atomically."""
    state: dict[str, Any] = read_state_dict(installed) if installed.is_file() else {}
    state.update(read_state_dict(finetuned))
    merged = finetuned.with_name("merged.pt")
    with atomic_path(merged) as temp_path, open(temp_path, "wb") as file:
        torch.save(state, file)
    return shipped_precision(merged, installed)


def finetune_on_files(
    bundle_root: str | os.PathLike,
    train: Sequence[Mapping[str, str]],
    validate: Sequence[Mapping[str, str]] | None,
    max_epochs: int,
    device: str | torch.device,
    output_dir: str | os.PathLike,
    preset: str = "small",
) -> Path:
    """Fine-tune the installed segmentation on image/label file pairs and install the result; returns
    ``models/model.pt``.

    Args:
        bundle_root: the bundle folder (its ``models/model.pt`` is the start and is replaced at the end).
        train, validate: ``[{"image": FILE, "label": FILE}]`` (see the module docstring).
        max_epochs: epochs of the fine-tuning.
        device: where to train (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        output_dir: the dataset of links and the training's checkpoints and logs (``finetune_segmentation/``).
        preset: the network preset of the installed weights.
    """
    bundle_root, output_dir = Path(bundle_root).resolve(), Path(output_dir).resolve()
    installed = bundle_root / "models" / "model.pt"
    dataset = output_dir / "dataset"
    if dataset.exists():
        raise FileExistsError(f"{dataset} exists from an earlier training: remove it or give another output_dir")
    pairs_dataset(list(train), list(validate or []), dataset)
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(FINETUNE_CONFIGS),
               "--dataset_dir", str(dataset), "--output_dir", str(output_dir), "--max_epochs", str(int(max_epochs)),
               "--pretrained_ckpt", str(installed), "--preset", preset, "--warmup_epochs", "0",
               "--device", f"$torch.device({str(torch.device(device))!r})"]  # fmt: skip
    logger.info("fine-tuning on %d file pairs: %s", len(train), " ".join(command))
    subprocess.run(command, cwd=bundle_root, check=True)
    return install_finetuned(output_dir / "finetune_segmentation" / "models" / "model.pt", installed)
