"""World geometry of cine planes and canonical planes, in RAS millimetres.

A plane file's (4, 4) affine maps voxel coordinates (x, y, slice) to world mm. A canonical plane is a 2-D grid in
world mm: centre ``c`` (3,), in-plane unit vectors ``u`` and ``v`` (3,), spacing ``s`` mm and ``n x n`` pixels.
Canonical pixel ``[i, j]`` (array axes H, W) lies at ``c + (i - (n - 1) / 2) s u + (j - (n - 1) / 2) s v``.

``u`` and ``v`` are either the source plane's stored axes (:func:`plane_axes`: voxel axes 0 and 1, ``v``
orthogonalised against ``u``), or the patient's axes (:func:`patient_axes`), which do not depend on the order in which
a file stores its voxels: scanners, vendors and converters store the same plane transposed, mirrored or rotated, and a
network sees each of those as another image. Patient axes: on SA planes ``u`` is the plane's direction nearest to the
patient's left-posterior and ``u x v`` points to the apex; on long-axis planes ``v`` points to the apex along the LV
long axis (the SA stack's normal, else the standard axis below) and ``u`` to the patient's posterior side.

SA slices are ordered base to apex by their position along RAS ``(1, -1, 1)``: the base lies right, posterior and
superior of the apex in every standard acquisition, so no segmentation is needed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: RAS direction from apex to base (right, posterior, superior): base slices project most positively on it.
BASE_DIRECTION_RAS = np.array([1.0, -1.0, 1.0]) / np.sqrt(3.0)
#: RAS direction that the canonical SA axis ``u`` is the in-plane projection of (left, posterior): where the septum
#: lies from the LV centre in an SA view; synthetic SA stacks are planned with ``u`` along the septum.
SA_U_REFERENCE_RAS = np.array([-1.0, -1.0, 0.0]) / np.sqrt(2.0)
#: RAS posterior: the side of a long-axis plane that its canonical ``u`` points to.
POSTERIOR_RAS = np.array([0.0, -1.0, 0.0])
#: A reference direction closer than this (sine of the angle) to a plane's normal does not orient the plane: it keeps
#: its stored axes.
MIN_IN_PLANE_FRACTION = 0.3


def plane_axes(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-plane unit vectors ``u`` (voxel axis 0), ``v`` (axis 1, orthogonalised) and the unit normal, each (3,)."""
    u = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    v = affine[:3, 1] - (affine[:3, 1] @ u) * u
    v = v / np.linalg.norm(v)
    return u, v, np.cross(u, v)


def sa_apex_direction(affine: np.ndarray) -> np.ndarray:
    """(3,) RAS unit normal of an SA stack pointing from base to apex."""
    normal = plane_axes(affine)[2]
    return normal if normal @ BASE_DIRECTION_RAS < 0 else -normal


def patient_axes(
    affine: np.ndarray, short_axis: bool, apex_direction: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical in-plane unit vectors ``u``, ``v`` and the normal ``u x v`` (each (3,)) of a plane, from the
    patient's axes (see the module docstring), so the same plane stored transposed, mirrored or rotated gives the same
    canonical image.

    Args:
        affine: (4, 4) voxel-to-RAS affine of the plane file.
        short_axis: an SA plane (else a long-axis view).
        apex_direction: (3,) RAS unit vector from base to apex (the SA stack's normal) for a long-axis view; default
            ``-BASE_DIRECTION_RAS``.

    Returns:
        (u, v, normal); the stored axes (:func:`plane_axes`) where the reference direction lies nearly along the
        plane's normal.
    """
    stored = plane_axes(affine)
    normal = stored[2]
    if short_axis:
        apex = sa_apex_direction(affine)
        u = SA_U_REFERENCE_RAS - (SA_U_REFERENCE_RAS @ normal) * normal
        if np.linalg.norm(u) < MIN_IN_PLANE_FRACTION:
            return stored
        u = u / np.linalg.norm(u)
        v = np.cross(apex, u)
    else:
        apex = -BASE_DIRECTION_RAS if apex_direction is None else np.asarray(apex_direction, dtype=float)
        v = apex - (apex @ normal) * normal
        if np.linalg.norm(v) < MIN_IN_PLANE_FRACTION:
            return stored
        v = v / np.linalg.norm(v)
        u = np.cross(v, normal)
        u = -u if u @ POSTERIOR_RAS < 0 else u
    return u, v, np.cross(u, v)


def voxel_to_world(affine: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """(..., 3) voxel coordinates -> (..., 3) world mm."""
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def world_to_voxel(affine: np.ndarray, world: np.ndarray) -> np.ndarray:
    """(..., 3) world mm -> (..., 3) voxel coordinates."""
    return (world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T


def slice_centre(affine: np.ndarray, shape: Sequence[int], slice_index: float) -> np.ndarray:
    """World position (3,) mm of the in-plane centre of slice ``slice_index`` of a (X, Y, S, ...) volume."""
    return voxel_to_world(affine, np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, slice_index]))


def sa_slice_order(affine: np.ndarray, shape: Sequence[int]) -> list[int]:
    """Source slice indices of an SA stack (X, Y, S, ...) ordered base to apex (decreasing projection on
    :data:`BASE_DIRECTION_RAS`)."""
    positions = [slice_centre(affine, shape, z) @ BASE_DIRECTION_RAS for z in range(shape[2])]
    return [int(z) for z in np.argsort(positions, kind="stable")[::-1]]


def canonical_grid(centre: np.ndarray, u: np.ndarray, v: np.ndarray, crop_size: int, spacing_mm: float) -> np.ndarray:
    """World positions (H, W, 3) mm of the canonical pixels of a plane (H = W = ``crop_size``; H along ``u``, W along
    ``v``) centred on ``centre`` (3,)."""
    offsets = (np.arange(crop_size) - (crop_size - 1) / 2) * spacing_mm
    return centre + offsets[:, None, None] * u + offsets[None, :, None] * v
