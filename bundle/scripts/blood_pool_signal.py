"""The LV blood pool's time course read from the SA images within the model's LV region: the curve phases are read from.

The network's LV volume curve is shallower than the heart's and does not wrap the cycle around (it peaks a couple of
frames before the true end-diastole), so keyframes read from it land several frames off. The images themselves show
the blood pool frame by frame: within the pixels the model labels LV at any frame of a slice, blood is the pixels
whose intensity is nearer the slice's blood than its myocardium (as the model labels them over the cycle); as the
ventricle contracts, myocardium moves into that region and the count of blood pixels falls. The model supplies where
the ventricle is and which intensities are blood, the images when it fills and empties.

Only slices with the LV labelled at every frame take part (basal slices that the base leaves at end-systole, where
atrial blood is labelled LV, would add their own curve shape); each slice's count is divided by its median over the
cycle so that every slice weighs the same, and the median over slices per frame is the signal: a slice cut by a
misplaced label or a flow artefact does not move it.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from scripts.labels import CLASS_NAMES, SA_PLANE
from scripts.subject import find_plane_file

__all__ = ["MIN_MYOCARDIUM_PIXELS", "lv_blood_pool_signal", "subject_blood_pool_signal"]

LVBP = CLASS_NAMES.index("LVBP")
LVMYO = CLASS_NAMES.index("LVMYO")
#: Fewest myocardium pixels (over the cycle) a slice needs for its myocardial intensity to be taken as known.
MIN_MYOCARDIUM_PIXELS = 50


def slice_blood_counts(image: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """(T,) blood pixels per frame within the LV region of one SA slice, or None where the slice does not qualify.

    Args:
        image: (X, Y, T) intensities of the slice.
        labels: (X, Y, T) class map of the slice (:data:`scripts.labels.CLASS_NAMES`).

    The region is the pixels labelled LV blood pool at any frame; a pixel of it counts as blood at a frame where its
    intensity is nearer the mean of the slice's LV-labelled pixels than that of its myocardium-labelled ones (all
    frames). None where some frame has no LV label, the myocardium has under :data:`MIN_MYOCARDIUM_PIXELS` pixels,
    or blood and myocardium have the same mean intensity.
    """
    lv, myocardium = labels == LVBP, labels == LVMYO
    if not lv.any(axis=(0, 1)).all() or myocardium.sum() < MIN_MYOCARDIUM_PIXELS:
        return None
    blood_mean, myocardium_mean = float(image[lv].mean()), float(image[myocardium].mean())
    if blood_mean == myocardium_mean:
        return None
    region = lv.any(axis=-1)
    # nearest of the two means: holds for bright-blood (SSFP) and dark-blood contrasts alike
    blood = np.abs(image - blood_mean) < np.abs(image - myocardium_mean)
    return (blood & region[..., None]).sum(axis=(0, 1)).astype(np.float64)


def lv_blood_pool_signal(image: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """(T,) LV blood pool relative to its median over the cycle, per frame, from an SA stack and its segmentation.

    Args:
        image: (X, Y, S, T) SA intensities.
        labels: (X, Y, S, T) class map of the same stack (the model's, in the same grid).

    Returns:
        the median over qualifying slices (:func:`slice_blood_counts`) of each slice's blood count divided by its
        median over the cycle; None where no slice qualifies (then read the phases from the volume curve).

    Example:
        >>> signal = lv_blood_pool_signal(sa_image, sa_labels)  # (50,) values around 1.0, largest near ED
    """
    if image.shape != labels.shape or image.ndim != 4:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be the same (X, Y, S, T)")
    per_slice = []
    for s in range(image.shape[2]):
        counts = slice_blood_counts(image[:, :, s], labels[:, :, s])
        if counts is not None and np.median(counts) > 0:
            per_slice.append(counts / np.median(counts))
    if not per_slice:
        return None
    return np.median(np.stack(per_slice), axis=0)


def subject_blood_pool_signal(
    subject_dir: str | os.PathLike, sa_labels: np.ndarray, sa_image: np.ndarray | None = None
) -> np.ndarray | None:
    """:func:`lv_blood_pool_signal` of a subject folder's SA stack under ``sa_labels`` (X, Y, S, T), its segmentation
    in the file's grid; ``sa_image``: the SA intensities already in memory, else read from the folder's SA file.
    None where the folder has no SA file or no slice qualifies."""
    if sa_image is None:
        path = find_plane_file(Path(subject_dir), SA_PLANE)
        if path is None:
            return None
        sa_image = np.asanyarray(nib.load(path).dataobj)
    # a 3-D file (one slice) is read without the slice axis its (X, Y, 1, T) labels have
    return lv_blood_pool_signal(np.asarray(sa_image, dtype=np.float32).reshape(sa_labels.shape), sa_labels)
