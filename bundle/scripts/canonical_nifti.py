"""A canonical stack as one 4-D NIfTI per case, for one-image-per-case tools such as MONAI Label.

Layout: array (H, W, P, T) (canonical pixels, plane, frame), float32 image in [0, 1] or uint8 label, affine
``diag(spacing_mm, spacing_mm, 1, 1)`` (the planes are not one 3-D volume: axis 2 is the plane index, axis 3 the
frame index), ``descrip`` = ``"canonical cine stack (H,W,P,T) mask=<0/1 per plane>"`` and the sample's geometry JSON
as a comment extension, so predictions on the file can still be written back with
:func:`scripts.writeback.canonical_to_planes`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import numpy as np

from scripts.files import atomic_path
from scripts.sample_geometry import parse_geometry

#: NIfTI ``descrip`` prefix of canonical stacks; the plane mask follows as a string of 0/1.
NIFTI_DESCRIPTION = "canonical cine stack (H,W,P,T) mask="


def _stack_to_nifti(stack: np.ndarray, plane_mask: np.ndarray, geometry: str | None, spacing_mm: float) -> Any:
    """(1, P, T, H, W) -> Nifti1Image (H, W, P, T) with the plane mask in ``descrip`` and geometry as extension."""
    volume = np.ascontiguousarray(np.asarray(stack)[0].transpose(2, 3, 0, 1))
    nifti = nib.Nifti1Image(volume, np.diag([spacing_mm, spacing_mm, 1.0, 1.0]))
    nifti.header.set_xyzt_units("mm", "sec")
    nifti.header["pixdim"][4] = 1.0  # frame index: the cycle duration is not known here
    nifti.header["descrip"] = NIFTI_DESCRIPTION + "".join("1" if m else "0" for m in np.asarray(plane_mask))
    if geometry is not None:
        nifti.header.extensions.append(nib.nifti1.Nifti1Extension("comment", geometry.encode()))
    return nifti


def write_canonical_nifti(
    sample: Mapping[str, Any], path: str | os.PathLike, label_path: str | os.PathLike | None = None
) -> tuple[Path, Path | None]:
    """Write a sample's canonical stack as one 4-D NIfTI (layout in the module docstring).

    Args:
        sample: a :class:`scripts.canonical.LoadCineSubjectd` output (``image`` (1, P, T, H, W), ``plane_mask``
            (P,), optionally ``label`` (1, P, T, H, W) and ``geometry``).
        path: the image file (``.nii.gz``).
        label_path: the label file; default ``<path stem>_label.nii.gz``; written only if the sample has a label.

    Returns:
        (image path, label path or None).
    """
    path = Path(path)
    geometry = sample.get("geometry")
    spacing_mm = parse_geometry(geometry)["spacing_mm"] if geometry is not None else 1.0
    plane_mask = np.asarray(sample["plane_mask"], dtype=bool)
    image = np.asarray(sample["image"], dtype=np.float32)
    with atomic_path(path) as temp_path:
        nib.save(_stack_to_nifti(image, plane_mask, geometry, spacing_mm), temp_path)
    if sample.get("label") is None:
        return path, None
    if label_path is None:
        label_path = path.with_name(path.name.replace(".nii.gz", "").replace(".nii", "") + "_label.nii.gz")
    label_path = Path(label_path)
    label = np.asarray(sample["label"], dtype=np.uint8)
    with atomic_path(label_path) as temp_path:
        nib.save(_stack_to_nifti(label, plane_mask, geometry, spacing_mm), temp_path)
    return path, label_path


def read_canonical_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a file of :func:`write_canonical_nifti`: (1, P, T, H, W) array (stored dtype) and plane_mask bool (P,).

    Without the mask in ``descrip`` (file edited by another tool), planes that are all zero count as missing.
    """
    nifti = nib.load(str(path))
    volume = np.asanyarray(nifti.dataobj)
    if volume.ndim != 4:
        raise ValueError(f"{path}: expected a 4-D (H, W, P, T) canonical stack, got shape {volume.shape}")
    stack = volume.transpose(2, 3, 0, 1)[None]
    description = nifti.header["descrip"].tobytes().split(b"\0")[0].decode(errors="replace")
    mask_text = description[len(NIFTI_DESCRIPTION) :] if description.startswith(NIFTI_DESCRIPTION) else ""
    if len(mask_text) == stack.shape[1] and set(mask_text) <= {"0", "1"}:
        plane_mask = np.array([c == "1" for c in mask_text])
    else:
        plane_mask = np.abs(stack[0]).reshape(stack.shape[1], -1).max(axis=1) > 0
    return np.ascontiguousarray(stack), plane_mask


def read_canonical_geometry(path: str | os.PathLike) -> str | None:
    """The geometry JSON stored in a file of :func:`write_canonical_nifti`, or None."""
    for extension in nib.load(str(path)).header.extensions:
        content = extension.get_content()
        if isinstance(content, bytes) and content.startswith(b"{"):
            return content.decode()
    return None
