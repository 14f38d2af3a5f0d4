"""The heart centre of a subject, in world mm, found without any segmentation.

Every canonical plane is centred on the heart centre projected onto that plane. Methods (recorded as
``geometry["centre_method"]``):

``la_intersection``: the LV long axis is the common line of the long-axis planes (least squares over their plane
equations); its intersection with the middle slice of the SA stack is the centre.

``image_centre``: without two usable long-axis planes, the centre of the middle SA slices (a technologist centres
the SA field of view on the heart). A motion localiser (centroid of the temporal standard deviation) was tried and
removed: on the 3 Sunnybrook studies it landed 50-118 mm from the contoured LV (flow and fat artefacts move too), the
image centre 7-15 mm.

``lv_segmentation``: the image centre moved onto the LV blood pool that a first pass of the network segmented there
(:func:`lv_offset_px`, applied by :class:`scripts.subject_segmenter.SubjectSegmenter`): the networks learned hearts
centred as the long-axis intersection centres them, and an off-centre LV is segmented offset towards the crop centre.

``lv_labels``: training only (``LoadCineSubjectd(centre_on_labelled_lv=True)``): the image centre moved onto the mean
LV blood-pool label, so real SA-only training studies sit in their crops as inference recentres them.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from scripts.geometry import plane_axes, sa_slice_order, slice_centre, world_to_voxel
from scripts.labels import CLASS_NAMES, LA_PLANES, SA_PLANE
from scripts.sample_geometry import sa_plane_indices
from scripts.subject import Subject

logger = logging.getLogger(__name__)

#: Two long-axis planes are "distinct" if the second singular value of their normals exceeds this (~6 degrees).
MIN_LA_NORMAL_SPREAD = 0.1
CENTRE_METHODS = ("la_intersection", "image_centre", "lv_segmentation", "lv_labels")
#: fewest LV blood-pool pixels (all SA planes and frames together) for :func:`lv_offset_px` to move the centre
MIN_LV_PIXELS = 50


def heart_centre(subject: Subject) -> tuple[np.ndarray, str]:
    """World position (3,) mm of the heart centre and the method that found it (one of ``CENTRE_METHODS``).

    Found once per read subject and kept in ``subject.centre``: inference builds a subject's canonical stack once per
    pass (extra SA stacks, test-time shifts) from the same files. The fallback (``image_centre``) is logged as a
    warning.
    """
    if subject.centre is None:
        subject.centre = _find_heart_centre(subject)
    centre, method = subject.centre
    return centre.copy(), method


def _find_heart_centre(subject: Subject) -> tuple[np.ndarray, str]:
    sa = subject.planes.get(SA_PLANE)
    sa_order = sa_slice_order(sa.affine, sa.image.shape) if sa is not None else []
    centre = _long_axis_centre(subject, sa_order)
    if centre is not None:
        return centre, "la_intersection"
    if sa is not None:
        third = len(sa_order) // 3
        reference, slices = sa, sa_order[third : len(sa_order) - third] or sa_order
    else:
        reference = next(subject.planes[stem] for stem in LA_PLANES if stem in subject.planes)
        slices = [0]
    centre = slice_centre(reference.affine, reference.image.shape, float(np.mean(slices)))
    method = "image_centre"
    logger.warning(
        "subject %s: heart centre by %s (no two usable long-axis planes cutting the SA stack)", subject.id, method
    )
    return centre, method


def _long_axis_centre(subject: Subject, sa_order: list[int]) -> np.ndarray | None:
    """Heart centre (3,) mm from the long-axis planes' common line (and the SA middle slice of ``sa_order``, the SA
    slices base to apex), or None if undetermined."""
    la_planes = [subject.planes[stem] for stem in LA_PLANES if stem in subject.planes]
    if len(la_planes) < 2:
        return None
    normals = np.stack([plane_axes(p.affine)[2] for p in la_planes])
    points = np.stack([slice_centre(p.affine, p.image.shape, 0) for p in la_planes])
    singular_values, right_vectors = np.linalg.svd(normals)[1:]
    if singular_values[1] < MIN_LA_NORMAL_SPREAD:
        return None
    long_axis = right_vectors[-1]
    rows, offsets = list(normals), list(np.einsum("ij,ij->i", normals, points))
    sa = subject.planes.get(SA_PLANE)
    if sa is not None:
        sa_normal = plane_axes(sa.affine)[2]
        if abs(sa_normal @ long_axis) < 0.2:  # long axis (nearly) within the SA planes: no usable intersection
            return None
        mid_slice = slice_centre(sa.affine, sa.image.shape, sa_order[len(sa_order) // 2])
        rows.append(sa_normal)
        offsets.append(sa_normal @ mid_slice)
    else:
        rows.append(long_axis)
        offsets.append(long_axis @ points.mean(axis=0))
    centre = np.linalg.lstsq(np.stack(rows), np.array(offsets), rcond=None)[0]
    if sa is not None:  # the intersection must fall inside the SA field of view, else the geometry is inconsistent
        x, y, _ = world_to_voxel(sa.affine, centre)
        if not (0 <= x <= sa.image.shape[0] - 1 and 0 <= y <= sa.image.shape[1] - 1):
            return None
    return centre


def lv_offset_px(geometry: Mapping[str, Any], labels: np.ndarray) -> np.ndarray | None:
    """Mean position (2,) of the LV blood pool in the canonical SA planes, in canonical pixels (u, v) from the crop
    centre, or None with fewer than :data:`MIN_LV_PIXELS` such pixels.

    Args:
        geometry: the sample's geometry record (dict), whose ``planes`` say which canonical planes are SA.
        labels: canonical labels (P, T, H, W) of that sample (H along u, W along v).

    Every SA plane shares the SA stack's (u, v), so the offset moves the centre along the same axes as
    ``centre_shift_px`` does (see :func:`scripts.canonical.build_canonical`).
    """
    lv = np.argwhere(labels[sa_plane_indices(geometry)] == CLASS_NAMES.index("LVBP"))
    if len(lv) < MIN_LV_PIXELS:
        return None
    return lv[:, 2:].mean(axis=0) - (int(geometry["crop_size"]) - 1) / 2
