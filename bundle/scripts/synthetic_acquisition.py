"""Acquisition planning of the synthetic cohort: where the SA stack and the long-axis views cut the body (world mm).

A plane stack is planned on the end-diastolic heart the way a CMR technologist would: a short-axis (SA) stack
perpendicular to the LV long axis from base to apex and 2-, 3- and 4-chamber views rotated about that axis. The wide
variety adds what real scans have: any in-plane resolution, slice thickness and gap in the clinical ranges, stacks
planned with some error and reaching into the atria or past the apex, and every breath-hold holding the anatomy a few
millimetres elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scripts import labels
from scripts.synthetic_geometry import rotate_about, unit
from scripts.synthetic_heart import Heart

TINY_MATRIX = 96
#: Ranges of the wide variety: in-plane pixel (mm), slice thickness (mm), gap between slices (mm), SA slice count,
#: the long-axis views' angular error (degrees) and the SA stack's tilt from the LV long axis (degrees).
WIDE_PIXEL_MM = (1.2, 2.5)
WIDE_THICKNESS_MM = (5.0, 10.0)
WIDE_GAP_MM = (0.0, 4.0)
WIDE_SA_SLICES = (6, 16)
WIDE_LA_ERROR_DEGREES = (2.0, 15.0)
WIDE_SA_TILT_DEGREES = (0.0, 8.0)
#: Largest matrix of the wide variety (px): a fine pixel comes with a smaller field of view.
WIDE_MAX_MATRIX = 256
#: The anatomy is modelled in a world whose x axis points to the subject's left (the heart's base lies at smaller x
#: than its apex), so read as RAS the classic files hold a mirrored body; the wide variety writes RAS: x negated.
ANATOMY_TO_RAS = np.diag([-1.0, 1.0, 1.0, 1.0])


@dataclass(frozen=True)
class PlaneStack:
    """One image file's geometry: a stack of S parallel slices of X x Y pixels.

    Attributes:
        name: file stem (``sa``, ``la_2ch``, ...).
        affine: (4, 4) voxel (i, j, k) -> world mm; column 2 has length = slice spacing.
        shape: (X, Y, S).
        thickness: slice thickness (mm) for the slice profile.
        breath_hold_offsets: (S, 3) world displacement (mm) of the anatomy while each slice was acquired, relative
            to where the stack was planned: a pixel at world x shows what lies at x - offset in the planned body.
            None: no displacement.
    """

    name: str
    affine: np.ndarray
    shape: tuple[int, int, int]
    thickness: float
    breath_hold_offsets: np.ndarray | None = None

    def sample_points(self, samples: int) -> np.ndarray:
        """World points (S, Y, X, samples, 3) float32: every pixel centre, spread across the slice thickness.

        The (S, Y, X) order is the reverse of NIfTI's (X, Y, S), so C-ordered arrays of it are NIfTI's Fortran order.
        Points are where the anatomy is looked up, so breath-hold offsets are already taken off.
        """
        nx, ny, ns = self.shape
        k, j, i = np.meshgrid(np.arange(ns), np.arange(ny), np.arange(nx), indexing="ij")
        voxels = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(np.float64)
        centres = voxels @ self.affine.T[:, :3]  # (S, Y, X, 3)
        if self.breath_hold_offsets is not None:
            centres -= self.breath_hold_offsets[:, None, None, :]
        normal = unit(self.affine[:3, 2])
        offsets = (np.arange(samples) - samples // 2) / samples * self.thickness
        return (centres[..., None, :] + offsets[:, None] * normal).astype(np.float32)


def in_plane_direction(heart: Heart, angle: float) -> np.ndarray:
    """World unit vector perpendicular to the long axis, ``angle`` radians from the septal x axis towards anterior y."""
    return np.cos(angle) * heart.axes[:, 0] + np.sin(angle) * heart.axes[:, 1]


def plane_affine(
    centre: np.ndarray, e_i: np.ndarray, e_j: np.ndarray, pixel: float, spacing: float, matrix: int
) -> np.ndarray:
    """Affine of a square ``matrix`` plane whose central pixel is at ``centre``; k steps along e_i x e_j."""
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1] = pixel * e_i, pixel * e_j
    affine[:3, 2] = spacing * np.cross(e_i, e_j)
    affine[:3, 3] = centre - (matrix - 1) / 2 * pixel * (e_i + e_j)
    return affine


def plan_acquisition(heart: Heart, rng: np.random.Generator, tiny: bool) -> list[PlaneStack]:
    """Plan the SA stack and the 2/3/4-chamber views on the ED heart, as a technologist would.

    SA: perpendicular to the LV long axis, first slice at or just above the AV plane, stepping to beyond the apex.
    LA: planes containing the LV long axis; 4ch towards the RV, 2ch ~90 degrees from it, 3ch through the aortic valve.
    The field of view is centred on the heart with a small random offset within the plane.
    """
    f = heart.frames[0]
    long_axis = heart.axes[:, 2]
    pixel = float(rng.uniform(1.6, 2.0))
    sa_matrix = TINY_MATRIX if tiny else int(rng.integers(80, 101)) * 2
    la_matrix = TINY_MATRIX if tiny else int(rng.integers(80, 101)) * 2
    thickness = 8.0
    spacing = float(rng.choice([8.0, 9.0, 10.0]))
    first_above = float(rng.uniform(0.0, 8.0))
    apex_depth = f.lv_cut + f.epi_long
    num_slices = int(np.clip(np.ceil((apex_depth + first_above + rng.uniform(0, 5)) / spacing) + 1, 8, 15))

    shift = rng.uniform(-10, 10, size=2)
    sa_e_i = in_plane_direction(heart, rng.uniform(-0.3, 0.3))
    sa_e_j = np.cross(-long_axis, sa_e_i)  # so that e_i x e_j points to the apex: slice k runs base -> apex
    sa_centre = heart.to_world(np.array([0.0, 0.0, first_above])) + shift[0] * sa_e_i + shift[1] * sa_e_j
    sa_affine = plane_affine(sa_centre, sa_e_i, sa_e_j, pixel, spacing, sa_matrix)
    planes = [PlaneStack("sa", sa_affine, (sa_matrix, sa_matrix, num_slices), thickness)]

    ao_angle = np.arctan2(heart.aortic_valve_xy[1], heart.aortic_valve_xy[0])
    angles = {"la_2ch": np.pi / 2 + rng.uniform(-0.15, 0.15), "la_3ch": ao_angle + rng.uniform(-0.08, 0.08)}
    angles["la_4ch"] = rng.uniform(-0.15, 0.15)
    la_centre_h = np.array([0.0, 0.0, -0.3 * apex_depth])
    for name in labels.LA_PLANES:
        e_i = in_plane_direction(heart, angles[name])
        e_j = -long_axis  # rows run from the base towards the apex
        shift = rng.uniform(-10, 10, size=2)
        centre = heart.to_world(la_centre_h) + shift[0] * e_i + shift[1] * e_j
        affine = plane_affine(centre, e_i, e_j, pixel, thickness, la_matrix)
        planes.append(PlaneStack(name, affine, (la_matrix, la_matrix, 1), thickness))
    return planes


def plan_wide_acquisition(heart: Heart, rng: np.random.Generator, tiny: bool) -> list[PlaneStack]:
    """Plan the planes as a technologist does on real patients, with the protocol and its errors drawn per subject.

    Pixel, thickness and gap from :data:`WIDE_PIXEL_MM`, :data:`WIDE_THICKNESS_MM`, :data:`WIDE_GAP_MM`. SA: tilted
    up to :data:`WIDE_SA_TILT_DEGREES` from the LV long axis, from up to 20 mm above the AV plane (atria) to up to
    20 mm past the apex (liver, stomach), 6-16 slices (a stack that needs more slices gets a larger gap). LA: the
    ideal 2-, 3- and 4-chamber planes rotated by :data:`WIDE_LA_ERROR_DEGREES` about a random axis in the plane.
    Breath-holds: groups of 1-3 SA slices and each LA view hold the anatomy a few mm apart, mostly head-feet.
    """
    f = heart.frames[0]
    long_axis = heart.axes[:, 2]
    pixel = float(rng.uniform(*WIDE_PIXEL_MM))
    sa_matrix, la_matrix = (
        (TINY_MATRIX, TINY_MATRIX)
        if tiny
        else tuple(int(np.clip(rng.uniform(280, 400) / pixel, 96, WIDE_MAX_MATRIX)) // 2 * 2 for _ in range(2))
    )
    thickness = float(rng.uniform(*WIDE_THICKNESS_MM))
    spacing = thickness + (float(rng.uniform(*WIDE_GAP_MM)) if rng.uniform() < 0.7 else 0.0)
    above, beyond = float(rng.uniform(-3.0, 20.0)), float(rng.uniform(-5.0, 20.0))
    coverage = above + f.lv_cut + f.epi_long + beyond
    low, high = WIDE_SA_SLICES
    num_slices = int(np.floor(coverage / spacing)) + 1
    if num_slices > high:
        spacing, num_slices = coverage / (high - 1), high
    num_slices = max(num_slices, low)

    tilt_axis = in_plane_direction(heart, rng.uniform(0, 2 * np.pi))
    tilt = np.deg2rad(rng.uniform(*WIDE_SA_TILT_DEGREES))
    sa_e_i = in_plane_direction(heart, rng.uniform(-0.3, 0.3))
    sa_e_j = np.cross(-long_axis, sa_e_i)  # so that e_i x e_j points to the apex: slice k runs base -> apex
    sa_e_i, sa_e_j = rotate_about(sa_e_i, tilt_axis, tilt), rotate_about(sa_e_j, tilt_axis, tilt)
    shift = rng.uniform(-10, 10, size=2)
    sa_centre = heart.to_world(np.array([0.0, 0.0, above])) + shift[0] * sa_e_i + shift[1] * sa_e_j
    sa_affine = plane_affine(sa_centre, sa_e_i, sa_e_j, pixel, spacing, sa_matrix)
    breath_hold = float(rng.uniform(0.5, 3.5))
    sa_offsets = breath_hold_offsets(rng, num_slices, int(rng.integers(1, 4)), breath_hold)
    planes = [PlaneStack("sa", sa_affine, (sa_matrix, sa_matrix, num_slices), thickness, sa_offsets)]

    ideal = {"la_2ch": np.pi / 2, "la_3ch": np.arctan2(heart.aortic_valve_xy[1], heart.aortic_valve_xy[0])}
    ideal["la_4ch"] = 0.0
    la_centre_h = np.array([0.0, 0.0, -0.3 * (f.lv_cut + f.epi_long)])
    for name in labels.LA_PLANES:
        e_i, e_j = in_plane_direction(heart, ideal[name]), -long_axis
        mix = rng.uniform(0, 2 * np.pi)
        error_axis = np.cos(mix) * e_j + np.sin(mix) * e_i
        error = np.deg2rad(rng.uniform(*WIDE_LA_ERROR_DEGREES))
        e_i, e_j = rotate_about(e_i, error_axis, error), rotate_about(e_j, error_axis, error)
        shift = rng.uniform(-10, 10, size=2)
        centre = heart.to_world(la_centre_h) + shift[0] * e_i + shift[1] * e_j
        affine = plane_affine(centre, e_i, e_j, pixel, thickness, la_matrix)
        offsets = breath_hold_offsets(rng, 1, 1, breath_hold)
        planes.append(PlaneStack(name, affine, (la_matrix, la_matrix, 1), thickness, offsets))
    return planes


def breath_hold_offsets(rng: np.random.Generator, num_slices: int, per_hold: int, sigma_mm: float) -> np.ndarray:
    """(num_slices, 3) world displacement (mm) of the anatomy per slice, shared by ``per_hold`` consecutive slices.

    Between breath-holds the diaphragm stops at another height: mostly head-feet (world z), less front-back (y) and
    least left-right (x); at most 10 mm.
    """
    holds = -(-num_slices // per_hold)
    offsets = rng.normal(0.0, sigma_mm, size=(holds, 3)) * np.array([0.35, 0.5, 1.0])
    norms = np.linalg.norm(offsets, axis=1, keepdims=True)
    offsets *= np.minimum(1.0, 10.0 / np.maximum(norms, 1e-9))
    return np.repeat(offsets, per_hold, axis=0)[:num_slices]


def ras_affine(plane: PlaneStack) -> np.ndarray:
    """(4, 4) RAS affine of a plane whose arrays are written reversed along voxel axis i.

    The anatomy world mirrored in x (:data:`ANATOMY_TO_RAS`) with i reversed too keeps the voxel grid right-handed, as
    the planned one is: voxel (i, j, k) of the written arrays is voxel (X - 1 - i, j, k) of the rendered ones.
    """
    reverse_i = np.eye(4)
    reverse_i[0, 0], reverse_i[0, 3] = -1.0, plane.shape[0] - 1
    return ANATOMY_TO_RAS @ plane.affine @ reverse_i
