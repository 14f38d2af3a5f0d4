"""World geometry of cine planes and canonical planes, in RAS millimetres.

A plane file's (4, 4) affine maps voxel coordinates (x, y, slice) to world mm. A canonical plane is a 2-D grid in
world mm: centre ``c`` (3,), in-plane unit vectors ``u`` and ``v`` (3,) taken from the source plane's affine (voxel
axes 0 and 1, ``v`` orthogonalised against ``u``) so its orientation is preserved, spacing ``s`` mm and ``n x n``
pixels. Canonical pixel ``[i, j]`` (array axes H, W) lies at ``c + (i - (n - 1) / 2) s u + (j - (n - 1) / 2) s v``.

SA slices are ordered base to apex by their position along RAS ``(1, -1, 1)``: the base lies right, posterior and
superior of the apex in every standard acquisition, so no segmentation is needed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: RAS direction from apex to base (right, posterior, superior): base slices project most positively on it.
BASE_DIRECTION_RAS = np.array([1.0, -1.0, 1.0]) / np.sqrt(3.0)


def plane_axes(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-plane unit vectors ``u`` (voxel axis 0), ``v`` (axis 1, orthogonalised) and the unit normal, each (3,)."""
    u = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    v = affine[:3, 1] - (affine[:3, 1] @ u) * u
    v = v / np.linalg.norm(v)
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
