"""Realistic synthetic multi-view cine CMR cohort: the bundle's embedded default dataset.

Each subject is one analytic 3D+T heart in world millimetres (RAS, as nibabel affines use) inside a static torso.
Structures are implicit functions (truncated ellipsoids, tubes around polylines) evaluated only where the imaging
planes sample space, so nothing is voxelised in 3D per frame. The acquisition is planned the way a CMR technologist
would: a short-axis (SA) stack perpendicular to the LV long axis from base to apex and 2-, 3- and 4-chamber views
rotated about that axis. Images get slice-profile partial volume, bSSFP-like contrast, a coil bias field, Rician noise
and occasional artefacts; labels are the class at the slice centre. Phenotypes are integrated from the 3D model on a
fine grid, never from the slices.

Heart frame: origin at the centre of the atrioventricular (AV) plane, ``z`` along the LV long axis from apex to base
(ventricles at ``z <= 0``, atria at ``z > 0``), ``x`` from the LV axis towards the septum/RV, ``y`` perpendicular and
pointing anteriorly. In systole the AV plane descends towards the apex; the heart frame moves with it.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

from scripts import labels

DEFAULT_FRAMES = 50
TINY_FRAMES = 20
TINY_MATRIX = 96
#: Sub-samples across the slice thickness (odd, so the middle one is the slice centre used for labels).
SLICE_PROFILE_SAMPLES = 3
#: Grid spacing (mm) of the volume integration that yields the ground-truth phenotypes.
PHENOTYPE_GRID_MM = 1.6

# --- tissues: what a sample point is made of; decides its intensity and its label -----------------
AIR, SOFT, FAT, MUSCLE, LUNG, LIVER, BONE, CSF, VESSEL, EPIFAT, WALL = range(11)
LVBP, LVMYO, RVBP, LABP, RABP, PAPILLARY = range(11, 17)
NUM_TISSUES = 17
#: Project class of each tissue; papillary muscles belong to the blood pool (UK Biobank convention).
TISSUE_TO_CLASS = np.zeros(NUM_TISSUES, dtype=np.uint8)
TISSUE_TO_CLASS[[LVBP, LVMYO, RVBP, LABP, RABP, PAPILLARY]] = [1, 2, 3, 4, 5, 1]

# The LV volume curve, as (phase, normalised volume) knots joined by cosine eases.
ES_PHASE_RANGE = (0.32, 0.38)


# ==================================================================================================
# Cardiac cycle
# ==================================================================================================
def cosine_knot_curve(phase: np.ndarray, knots: list[tuple[float, float]]) -> np.ndarray:
    """Piecewise curve through ``(phase, value)`` knots, eased with half cosines (zero slope at every knot).

    Args:
        phase: (T,) cycle phase in [0, 1).
        knots: increasing phases from 0 to 1 with their values.

    Returns:
        (T,) float64 values.
    """
    knot_phase = np.array([k[0] for k in knots])
    knot_value = np.array([k[1] for k in knots])
    segment = np.clip(np.searchsorted(knot_phase, phase, side="right") - 1, 0, len(knots) - 2)
    start, stop = knot_phase[segment], knot_phase[segment + 1]
    ease = 0.5 - 0.5 * np.cos(np.pi * (phase - start) / (stop - start))
    return knot_value[segment] + (knot_value[segment + 1] - knot_value[segment]) * ease


def ventricular_curve(phase: np.ndarray, es_phase: float, rapid_fill: float, atrial_phase: float) -> np.ndarray:
    """Normalised ventricular volume: 1 at ED (phase 0), ejection to 0 at ES, rapid filling, diastasis, atrial kick.

    Args:
        phase: (T,) cycle phase in [0, 1).
        es_phase: phase of end-systole (~0.35).
        rapid_fill: fraction of the stroke volume refilled by the end of rapid filling.
        atrial_phase: phase where the atrial contraction starts.

    Returns:
        (T,) values in [0, 1].
    """
    diastasis = rapid_fill + 0.25 * (1.0 - rapid_fill)
    knots = [(0.0, 1.0), (es_phase, 0.0), (es_phase + 0.15, rapid_fill), (atrial_phase, diastasis), (1.0, 1.0)]
    return cosine_knot_curve(phase, knots)


def atrial_curve(phase: np.ndarray, es_phase: float, conduit_level: float, atrial_phase: float) -> np.ndarray:
    """Normalised atrial volume: reservoir filling in ventricular systole (max just after ES), passive emptying in
    rapid filling, a plateau in diastasis, then the booster contraction back to the minimum at ED.

    Args:
        phase: (T,) cycle phase in [0, 1).
        es_phase: ventricular end-systolic phase.
        conduit_level: normalised volume left after passive emptying.
        atrial_phase: phase where the atrial contraction starts.

    Returns:
        (T,) values in [0, 1].
    """
    knots = [
        (0.0, 0.0),
        (es_phase + 0.03, 1.0),
        (es_phase + 0.2, conduit_level),
        (atrial_phase, conduit_level + 0.05),
        (1.0, 0.0),
    ]
    return cosine_knot_curve(phase, knots)


# ==================================================================================================
# Geometry of the heart
# ==================================================================================================
def truncated_ellipsoid_volume(radius: np.ndarray, semi_long: np.ndarray, cut: float) -> np.ndarray:
    """Volume (mm^3) of a prolate ellipsoid of revolution cut by a plane ``cut`` mm above its centre, apex side kept.

    Args:
        radius: short semi-axis (mm), any shape.
        semi_long: long semi-axis (mm), same shape, larger than ``cut``.
        cut: distance from the centre to the cutting (base) plane (mm).
    """
    return np.pi * radius**2 * ((cut + semi_long) - (cut**3 + semi_long**3) / (3.0 * semi_long**2))


def solve_wall_thickness(
    radius: np.ndarray, semi_long: np.ndarray, cut: float, apex_ratio: float, myo_volume: float
) -> np.ndarray:
    """Radial wall thickness (mm) per frame that keeps the LV myocardial volume at ``myo_volume`` (mm^3).

    The epicardium is the cavity ellipsoid grown by ``w`` radially and ``apex_ratio * w`` at the apex; the volume is
    monotone in ``w``, so bisection converges.

    Args:
        radius, semi_long: (T,) cavity semi-axes (mm).
        cut: centre-to-base distance (mm).
        apex_ratio: apical / equatorial wall thickness.
        myo_volume: myocardial volume to keep (mm^3).

    Returns:
        (T,) thickness in mm.
    """
    cavity = truncated_ellipsoid_volume(radius, semi_long, cut)
    low, high = np.zeros_like(radius), np.full_like(radius, 40.0)
    for _ in range(40):
        mid = 0.5 * (low + high)
        shell = truncated_ellipsoid_volume(radius + mid, semi_long + apex_ratio * mid, cut) - cavity
        too_thin = shell < myo_volume
        low, high = np.where(too_thin, mid, low), np.where(too_thin, high, mid)
    return 0.5 * (low + high)


@dataclass(frozen=True)
class HeartFrame:
    """Scalars of the heart at one frame, all in mm in the heart frame (see the module docstring)."""

    lv_cut: float  # distance from the LV ellipsoid centre (below the AV plane) to the AV plane
    lv_radius: float  # cavity short semi-axis
    lv_long: float  # cavity long semi-axis
    epi_radius: float  # epicardium short semi-axis
    epi_long: float  # epicardium long semi-axis
    rv_centre: tuple[float, float, float]
    rv_axes: tuple[float, float, float]
    rv_wall: float
    la_centre: tuple[float, float, float]
    la_axes: tuple[float, float, float]
    ra_centre: tuple[float, float, float]
    ra_axes: tuple[float, float, float]
    atrial_wall: float
    epifat: float
    papillary_xy: tuple[tuple[float, float], tuple[float, float]]
    papillary_radius: float


@dataclass
class Heart:
    """One subject's 3D+T heart: static pose and per-frame shape parameters.

    Attributes:
        base_world: (3,) world position (mm) of the AV-plane centre at ED.
        axes: (3, 3) columns = heart-frame x, y, z unit vectors in world coordinates.
        descent: (T,) displacement (mm) of the AV plane towards the apex.
        frames: list of per-frame :class:`HeartFrame`.
        aortic_valve_xy: heart-frame (x, y) of the aortic valve centre in the AV plane (mm).
    """

    base_world: np.ndarray
    axes: np.ndarray
    descent: np.ndarray
    frames: list[HeartFrame]
    aortic_valve_xy: tuple[float, float]

    def to_heart(self, world: np.ndarray) -> np.ndarray:
        """World points (..., 3) mm -> ED heart-frame coordinates (..., 3) mm (add ``descent[t]`` to z for frame t)."""
        return (world - self.base_world) @ self.axes

    def to_world(self, heart: np.ndarray) -> np.ndarray:
        """ED heart-frame points (..., 3) mm -> world (..., 3) mm."""
        return self.base_world + heart @ self.axes.T


def ellipsoid_level(points: np.ndarray, centre: tuple[float, ...], axes: tuple[float, ...]) -> np.ndarray:
    """Normalised squared radius of axis-aligned ellipsoid; < 1 inside. points (N, 3) mm -> (N,)."""
    d = (points - np.asarray(centre, dtype=points.dtype)) / np.asarray(axes, dtype=points.dtype)
    return np.einsum("ij,ij->i", d, d)


def heart_tissue(points: np.ndarray, f: HeartFrame) -> np.ndarray:
    """Tissue of heart-frame points at one frame; :data:`AIR` (0) where no cardiac structure is.

    Structures are painted in order, later ones winning: epicardial fat, atrial walls, atria, RV wall, RV blood,
    LV myocardium, LV blood, papillary muscles. The LV shell over the RV ellipsoid is what makes the RV a crescent.

    Args:
        points: (N, 3) float32 heart-frame coordinates (mm).
        f: the frame's shape.

    Returns:
        (N,) uint8 tissue ids.
    """
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    tissue = np.zeros(len(points), dtype=np.uint8)
    ventricular = z <= 0.0
    rho2 = x * x + y * y
    dz2 = (z + f.lv_cut) ** 2

    fat_level = rho2 / (f.epi_radius + f.epifat) ** 2 + dz2 / (f.epi_long + f.epifat) ** 2
    rv_wall_axes = tuple(a + f.rv_wall for a in f.rv_axes)
    rv_wall_level = ellipsoid_level(points, f.rv_centre, rv_wall_axes)
    fat_axes = tuple(a + f.epifat for a in rv_wall_axes)
    rv_fat_level = ellipsoid_level(points, f.rv_centre, fat_axes)
    tissue[((fat_level < 1.0) | (rv_fat_level < 1.0)) & (z <= f.epifat)] = EPIFAT

    paint_atria(points, f, tissue)

    tissue[(rv_wall_level < 1.0) & ventricular] = WALL
    tissue[(ellipsoid_level(points, f.rv_centre, f.rv_axes) < 1.0) & ventricular] = RVBP
    epi_level = rho2 / f.epi_radius**2 + dz2 / f.epi_long**2
    tissue[(epi_level < 1.0) & ventricular] = LVMYO
    cavity = (rho2 / f.lv_radius**2 + dz2 / f.lv_long**2 < 1.0) & ventricular
    tissue[cavity] = LVBP
    tissue[cavity & papillary_mask(x, y, z, f)] = PAPILLARY
    return tissue


def paint_atria(points: np.ndarray, f: HeartFrame, tissue: np.ndarray) -> None:
    """Paint atrial walls and blood pools (``z > 0``) into ``tissue`` in place.

    Where the two ellipsoids overlap, a point belongs to the one it is deeper in; a thin band where both are equally
    deep is the interatrial septum (wall).
    """
    above = points[:, 2] > 0.0
    la_level = ellipsoid_level(points, f.la_centre, f.la_axes)
    ra_level = ellipsoid_level(points, f.ra_centre, f.ra_axes)
    la_wall = ellipsoid_level(points, f.la_centre, tuple(a + f.atrial_wall for a in f.la_axes))
    ra_wall = ellipsoid_level(points, f.ra_centre, tuple(a + f.atrial_wall for a in f.ra_axes))
    tissue[((la_wall < 1.0) | (ra_wall < 1.0)) & above] = WALL
    septum = 0.12
    tissue[(la_level < 1.0) & (la_level < ra_level - septum) & above] = LABP
    tissue[(ra_level < 1.0) & (ra_level < la_level - septum) & above] = RABP


def papillary_mask(x: np.ndarray, y: np.ndarray, z: np.ndarray, f: HeartFrame) -> np.ndarray:
    """Two papillary muscles: cylinders parallel to the long axis in the mid-to-apical cavity. Returns (N,) bool."""
    length = f.lv_cut + f.lv_long
    in_range = (z > -0.75 * length) & (z < -0.35 * length)
    mask = np.zeros(len(x), dtype=bool)
    for px, py in f.papillary_xy:
        mask |= (x - px) ** 2 + (y - py) ** 2 < f.papillary_radius**2
    return mask & in_range


# ==================================================================================================
# Static anatomy: torso, lungs, liver, spine, great vessels
# ==================================================================================================
@dataclass(frozen=True)
class Tube:
    """A vessel: a polyline centreline (K, 3) in world mm with a radius (K,) mm at each vertex."""

    centreline: np.ndarray
    radius: np.ndarray


@dataclass(frozen=True)
class Body:
    """Static anatomy in world mm. The torso is an elliptic cylinder along the world z (superior) axis."""

    centre_xy: tuple[float, float]
    semi_axes_xy: tuple[float, float]
    fat_thickness: float
    muscle_thickness: float
    lungs: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...]
    liver: tuple[tuple[float, float, float], tuple[float, float, float]]
    spine_xy: tuple[float, float]
    spine_radius: float
    canal_xy: tuple[float, float]
    vessels: tuple[Tube, ...]


def tube_mask(points: np.ndarray, tube: Tube) -> np.ndarray:
    """Points (N, 3) within the tube's radius of its centreline, radius linear along each segment -> (N,) bool."""
    inside = np.zeros(len(points), dtype=bool)
    for a, b, ra, rb in zip(tube.centreline[:-1], tube.centreline[1:], tube.radius[:-1], tube.radius[1:]):
        seg = (b - a).astype(np.float32)
        rel = points - a.astype(np.float32)
        along = np.clip(rel @ seg / float(seg @ seg), 0.0, 1.0)
        dist2 = np.einsum("ij,ij->i", rel, rel) - 2 * along * (rel @ seg) + along**2 * float(seg @ seg)
        inside |= dist2 < (ra + (rb - ra) * along) ** 2
    return inside


def body_tissue(points: np.ndarray, body: Body) -> np.ndarray:
    """Tissue of world points (N, 3) mm in the static anatomy (no heart), painted outside-in -> (N,) uint8."""
    x, y = points[:, 0] - body.centre_xy[0], points[:, 1] - body.centre_xy[1]
    a, b = body.semi_axes_xy

    def inside_torso(shrink: float) -> np.ndarray:
        return (x / (a - shrink)) ** 2 + (y / (b - shrink)) ** 2 < 1.0

    tissue = np.zeros(len(points), dtype=np.uint8)
    tissue[inside_torso(0.0)] = FAT
    tissue[inside_torso(body.fat_thickness)] = MUSCLE
    interior = inside_torso(body.fat_thickness + body.muscle_thickness)
    tissue[interior] = SOFT
    for centre, axes in body.lungs:
        tissue[interior & (ellipsoid_level(points, centre, axes) < 1.0)] = LUNG
    tissue[interior & (ellipsoid_level(points, *body.liver) < 1.0)] = LIVER
    sx, sy = points[:, 0] - body.spine_xy[0], points[:, 1] - body.spine_xy[1]
    tissue[sx * sx + sy * sy < body.spine_radius**2] = BONE
    cx, cy = points[:, 0] - body.canal_xy[0], points[:, 1] - body.canal_xy[1]
    tissue[cx * cx + cy * cy < 49.0] = CSF
    for vessel in body.vessels:
        tissue[tube_mask(points, vessel)] = VESSEL
    return tissue


# ==================================================================================================
# Subject sampling
# ==================================================================================================
PHENOTYPE_RANGES = {
    # category: LVEDV mL, LVEF %, wall mm, RV/LV EDV, RVEF %, LAVmax mL, LAEF %, RAVmax mL, RAEF %, rapid filling
    "healthy": ((100, 200), (55, 72), (7, 10), (0.95, 1.25), (50, 68), (45, 90), (50, 70), (45, 100), (40, 62), (0.6, 0.8)),
    "dilated": ((210, 310), (18, 38), (6, 9), (0.8, 1.15), (28, 50), (90, 150), (18, 40), (70, 140), (25, 45), (0.5, 0.8)),
    "hypertrophic": ((90, 150), (60, 76), (12, 18), (0.85, 1.15), (55, 70), (70, 120), (30, 52), (50, 100), (35, 55), (0.4, 0.6)),
    "low_ef": ((140, 240), (28, 48), (8, 11), (0.9, 1.3), (32, 55), (70, 120), (25, 48), (55, 120), (30, 50), (0.5, 0.7)),
}  # fmt: skip
CATEGORY_PROBABILITIES = {"healthy": 0.55, "dilated": 0.15, "hypertrophic": 0.15, "low_ef": 0.15}


@dataclass(frozen=True)
class Design:
    """Sampled targets of one subject's heart (volumes mL, fractions %, lengths mm)."""

    category: str
    lvedv: float
    lvef: float
    wall: float
    rv_ratio: float
    rvef: float
    lavmax: float
    laef: float
    ravmax: float
    raef: float
    rapid_fill: float


def sample_design(rng: np.random.Generator) -> Design:
    """Draw a disease category, then uniform targets within its ranges (:data:`PHENOTYPE_RANGES`)."""
    names = list(CATEGORY_PROBABILITIES)
    category = names[rng.choice(len(names), p=list(CATEGORY_PROBABILITIES.values()))]
    values = [float(rng.uniform(lo, hi)) for lo, hi in PHENOTYPE_RANGES[category]]
    return Design(category, *values)


def unit(v: np.ndarray) -> np.ndarray:
    """v / |v|."""
    return v / np.linalg.norm(v)


def rotate_about(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of vector v (3,) about unit ``axis`` (3,) by ``angle`` radians."""
    return v * np.cos(angle) + np.cross(axis, v) * np.sin(angle) + axis * (axis @ v) * (1 - np.cos(angle))


def sample_heart_axes(rng: np.random.Generator) -> np.ndarray:
    """Heart-frame axes in world RAS: long axis from apex (left, anterior, inferior) to base (right, posterior,
    superior); x towards the RV (right-anterior of the LV); y anterior. Returns (3, 3), columns x, y, z."""
    long_axis = unit(np.array([-0.55, -0.45, 0.6]) + rng.normal(0.0, 0.12, 3))
    towards_rv = np.array([-1.0, 1.0, 0.0])
    x_axis = unit(towards_rv - (towards_rv @ long_axis) * long_axis)
    x_axis = rotate_about(x_axis, long_axis, rng.uniform(-0.25, 0.25))
    y_axis = np.cross(long_axis, x_axis)
    if y_axis @ np.array([0.0, 1.0, 1.0]) < 0:  # the anterior wall faces the chest wall and head
        y_axis = -y_axis
    return np.stack([x_axis, y_axis, long_axis], axis=1)


def build_heart(design: Design, rng: np.random.Generator, frames: int) -> tuple[Heart, dict[str, float]]:
    """Turn design targets into per-frame geometry.

    Returns:
        The heart and the phases used (``es``, ``atrial``), useful to callers and tests.
    """
    phase = np.arange(frames) / frames
    es_phase = float(rng.uniform(*ES_PHASE_RANGE))
    atrial_phase = float(rng.uniform(0.78, 0.86))

    lv_curve = ventricular_curve(phase, es_phase, design.rapid_fill, atrial_phase)
    lv_volume = 1e3 * design.lvedv * (1 - design.lvef / 100 * (1 - lv_curve))
    # LV shape at ED: sphericity = cavity radius / cavity length; the base plane cuts above the ellipsoid centre.
    sphericity = rng.uniform(0.42, 0.5) if design.category == "dilated" else rng.uniform(0.33, 0.42)
    cut_ratio = rng.uniform(0.25, 0.4)
    shape_factor = np.pi * sphericity**2 * (1 + cut_ratio) ** 2 * ((1 + cut_ratio) - (1 + cut_ratio**3) / 3)
    lv_long_ed = (lv_volume[0] / shape_factor) ** (1 / 3)
    lv_cut = cut_ratio * lv_long_ed
    # The AV plane descends in proportion to the ejected volume; the apex barely moves, so the cavity shortens.
    max_descent = rng.uniform(9.0, 16.0) * min(1.0, design.lvef / 60.0) ** 0.7
    descent = max_descent * (lv_volume[0] - lv_volume) / (lv_volume[0] - lv_volume.min())
    lv_long = lv_long_ed - 1.05 * descent
    lv_radius = np.sqrt(lv_volume / truncated_ellipsoid_volume(1.0, lv_long, lv_cut))

    apex_ratio = float(rng.uniform(0.6, 0.85))
    myo_volume = float(
        truncated_ellipsoid_volume(lv_radius[0] + design.wall, lv_long[0] + apex_ratio * design.wall, lv_cut)
        - lv_volume[0]
    )
    wall = solve_wall_thickness(lv_radius, lv_long, lv_cut, apex_ratio, myo_volume)
    epi_radius, epi_long = lv_radius + wall, lv_long + apex_ratio * wall

    rv_es_phase = es_phase + float(rng.uniform(0.0, 0.03))
    rv_curve = ventricular_curve(phase, rv_es_phase, design.rapid_fill, atrial_phase)
    rv_volume = 1e3 * design.lvedv * design.rv_ratio * (1 - design.rvef / 100 * (1 - rv_curve))
    rv_base_axes = np.array(
        [rng.uniform(0.8, 1.0), rng.uniform(1.15, 1.35), rng.uniform(0.62, 0.72)]
    ) * np.array([epi_radius[0], epi_radius[0], lv_cut + epi_long[0]])
    rv_anchor = -rng.uniform(0.1, 0.3) * epi_radius  # septal anchor of the RV ellipsoid's homothety, per frame
    rv_scale = solve_rv_scale(rv_volume, rv_base_axes, rv_anchor, epi_radius, epi_long, lv_cut, rng)

    atria = sample_atria(design, rng, phase, es_phase, atrial_phase, epi_radius[0], rv_base_axes)
    papillary_angles = (np.deg2rad(rng.uniform(130, 160)), np.deg2rad(rng.uniform(-140, -110)))
    papillary_radius = float(rng.uniform(2.5, 4.0))
    fat = float(rng.uniform(0.0, 4.0))
    rv_wall = float(rng.uniform(2.5, 4.0))

    frame_list = []
    for t in range(frames):
        rv_axes = rv_scale[t] * rv_base_axes
        papillary_r = 0.55 * lv_radius[t]
        frame_list.append(
            HeartFrame(
                lv_cut=lv_cut,
                lv_radius=float(lv_radius[t]),
                lv_long=float(lv_long[t]),
                epi_radius=float(epi_radius[t]),
                epi_long=float(epi_long[t]),
                rv_centre=(float(rv_anchor[t] + 0.97 * rv_axes[0]), 0.0, float(-0.25 * rv_axes[2])),
                rv_axes=tuple(float(a) for a in rv_axes),
                rv_wall=rv_wall,
                epifat=fat,
                papillary_xy=tuple((papillary_r * np.cos(a), papillary_r * np.sin(a)) for a in papillary_angles),
                papillary_radius=papillary_radius,
                atrial_wall=2.0,
                **{key: value[t] for key, value in atria.items()},
            )
        )
    # The aortic valve sits antero-septal in the LV base, beside the mitral opening to the LA.
    ao_angle = np.deg2rad(rng.uniform(35, 60))
    aortic_valve = 0.55 * lv_radius[0] * np.array([np.cos(ao_angle), np.sin(ao_angle)])
    axes = sample_heart_axes(rng)
    mid_cavity_depth = 0.5 * (lv_cut + lv_long[0])
    # Technologists put the heart near the isocentre: the mid-cavity lands within 15 mm of the world origin.
    base_world = rng.uniform(-15, 15, size=3) + mid_cavity_depth * axes[:, 2]
    heart = Heart(base_world, axes, descent.astype(np.float32), frame_list, tuple(map(float, aortic_valve)))
    return heart, {"es": es_phase, "atrial": atrial_phase}


def solve_rv_scale(
    rv_volume: np.ndarray,
    base_axes: np.ndarray,
    anchor: np.ndarray,
    epi_radius: np.ndarray,
    epi_long: np.ndarray,
    lv_cut: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Scale s per frame so the RV crescent (RV ellipsoid below the AV plane, minus the LV) holds ``rv_volume``.

    The RV ellipsoid is the base ellipsoid scaled by s about a septal anchor point, so the family is nested and its
    volume grows with s; the crescent volume is estimated with fixed Monte-Carlo points in the unit ball.

    Args:
        rv_volume: (T,) target volumes (mm^3).
        base_axes: (3,) RV semi-axes at s = 1 (mm).
        anchor: (T,) x of the anchor (mm); epi_radius, epi_long: (T,) LV epicardium semi-axes (mm).
        lv_cut: LV centre-to-base distance (mm).

    Returns:
        (T,) scales.
    """
    ball = rng.normal(size=(6000, 3))
    ball *= (rng.uniform(size=(6000, 1)) ** (1 / 3)) / np.linalg.norm(ball, axis=1, keepdims=True)
    offset = np.array([0.97, 0.0, -0.25]) * base_axes

    def crescent_volume(scale: np.ndarray) -> np.ndarray:
        centre = anchor[:, None] * np.array([1.0, 0.0, 0.0]) + scale[:, None] * offset  # (T, 3)
        pts = centre[:, None, :] + scale[:, None, None] * ball[None] * base_axes  # (T, N, 3)
        in_lv = (pts[..., 0] ** 2 + pts[..., 1] ** 2) / epi_radius[:, None] ** 2 + (
            pts[..., 2] + lv_cut
        ) ** 2 / epi_long[:, None] ** 2 < 1.0
        kept = (pts[..., 2] <= 0) & ~in_lv
        return scale**3 * (4 / 3) * np.pi * np.prod(base_axes) * kept.mean(axis=1)

    low, high = np.full(len(rv_volume), 0.2), np.full(len(rv_volume), 3.0)
    for _ in range(22):
        mid = 0.5 * (low + high)
        small = crescent_volume(mid) < rv_volume
        low, high = np.where(small, mid, low), np.where(small, high, mid)
    return 0.5 * (low + high)


def sample_atria(
    design: Design,
    rng: np.random.Generator,
    phase: np.ndarray,
    es_phase: float,
    atrial_phase: float,
    epi_radius: float,
    rv_axes: np.ndarray,
) -> dict[str, list]:
    """Per-frame atrial ellipsoids: LA posterior on the LV side, RA on the RV side, both resting on the AV plane.

    Each atrium scales about its AV-plane footprint with its centre 0.6 z-semi-axes above the plane, so its volume
    above the plane is a fixed fraction (0.896) of the full ellipsoid and scales with the cube of the scale.

    Returns:
        ``la_centre``, ``la_axes``, ``ra_centre``, ``ra_axes``: lists of T tuples (mm, heart frame).
    """
    above_fraction = 0.896
    out: dict[str, list] = {}
    placements = {
        "la": (design.lavmax, design.laef, (-rng.uniform(0.1, 0.35) * epi_radius, -rng.uniform(0.35, 0.6) * epi_radius)),
        "ra": (design.ravmax, design.raef, (rng.uniform(0.7, 0.95) * rv_axes[0] + 0.2 * epi_radius, -rng.uniform(0.1, 0.3) * epi_radius)),
    }  # fmt: skip
    for name, (vmax, ef, (cx, cy)) in placements.items():
        shape = np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.3)])
        curve = atrial_curve(phase, es_phase, float(rng.uniform(0.45, 0.65)), atrial_phase)
        volume = 1e3 * vmax * (1 - ef / 100 * (1 - curve))
        unit_volume = above_fraction * 4 / 3 * np.pi * np.prod(shape)
        scale = (volume / unit_volume) ** (1 / 3)
        out[f"{name}_axes"] = [tuple(float(v) for v in s * shape) for s in scale]
        out[f"{name}_centre"] = [(float(cx), float(cy), float(0.6 * s * shape[2])) for s in scale]
    return out


def sample_body(rng: np.random.Generator, heart: Heart) -> Body:
    """Torso, lungs, liver, spine and great vessels around a heart whose LV sits near the scanner isocentre."""
    lv_mid = heart.to_world(np.array([0.0, 0.0, -40.0]))
    semi = (float(rng.uniform(140, 185)), float(rng.uniform(95, 130)))
    centre = (float(lv_mid[0] - rng.uniform(25, 45)), float(lv_mid[1] - rng.uniform(5, 25)))
    spine_y = centre[1] - semi[1] + rng.uniform(40, 50)
    top = float(lv_mid[2])
    lungs = (
        ((centre[0] + 0.5 * semi[0], centre[1] - 0.1 * semi[1], top + 40), (0.38 * semi[0], 0.7 * semi[1], 130.0)),
        ((centre[0] - 0.5 * semi[0], centre[1] - 0.1 * semi[1], top + 50), (0.42 * semi[0], 0.7 * semi[1], 130.0)),
    )
    liver = ((centre[0] - 0.3 * semi[0], centre[1] - 0.05 * semi[1], top - 150), (0.7 * semi[0], 0.75 * semi[1], 100.0))
    spine_xy = (centre[0], float(spine_y))
    vessels = great_vessels(rng, heart, spine_xy)
    return Body(
        centre_xy=centre,
        semi_axes_xy=semi,
        fat_thickness=float(rng.uniform(6, 25)),
        muscle_thickness=float(rng.uniform(8, 15)),
        lungs=tuple((tuple(map(float, c)), a) for c, a in lungs),
        liver=(tuple(map(float, liver[0])), liver[1]),
        spine_xy=spine_xy,
        spine_radius=float(rng.uniform(15, 20)),
        canal_xy=(centre[0], float(spine_y - 25)),
        vessels=vessels,
    )


def great_vessels(rng: np.random.Generator, heart: Heart, spine_xy: tuple[float, float]) -> tuple[Tube, ...]:
    """Aorta (root, ascending, arch, descending), pulmonary trunk with both branches, superior and inferior vena cava.

    The roots start 15 mm inside the ventricles, so the AV-plane descent never opens a gap; the ventricles are painted
    over the tubes.
    """
    f = heart.frames[0]
    up = np.array([0.0, 0.0, 1.0])
    ao_xy = np.array(heart.aortic_valve_xy)
    valve = heart.to_world(np.array([*ao_xy, 0.0]))
    ao_r = float(rng.uniform(12, 17))
    ascending = valve + 35 * unit(heart.axes[:, 2] + up + np.array([0.0, 0.4, 0.0]))
    arch_start = ascending + np.array([-5.0, 0.0, 35.0])
    desc_xy = np.array([spine_xy[0] + 25, spine_xy[1] + 25])
    arch_top = np.array([desc_xy[0] - 5, 0.5 * (arch_start[1] + desc_xy[1]), arch_start[2] + 20])
    desc_top = np.array([*desc_xy, arch_start[2]])
    aorta = Tube(
        np.stack([heart.to_world(np.array([*ao_xy, -15.0])), valve, ascending, arch_start, arch_top, desc_top, desc_top - [0, 0, 350]]),
        np.array([ao_r * 0.9, ao_r, ao_r, ao_r * 0.95, ao_r * 0.85, ao_r * 0.8, ao_r * 0.75]),
    )  # fmt: skip

    pa_angle = np.deg2rad(rng.uniform(65, 90))
    pa_xy = (f.epi_radius + 6) * np.array([np.cos(pa_angle), np.sin(pa_angle)])
    pa_root = heart.to_world(np.array([*pa_xy, -15.0]))
    trunk = heart.to_world(np.array([*pa_xy, 20.0])) + np.array([0.0, 10.0, 10.0])
    bifurcation = trunk + 25 * unit(up + np.array([0.0, -1.0, 0.0]))
    pa_r = float(rng.uniform(11, 15))
    pulmonary = Tube(np.stack([pa_root, trunk, bifurcation]), np.array([pa_r, pa_r, pa_r]))
    left_pa = Tube(np.stack([bifurcation, bifurcation + [45.0, -35.0, 0.0]]), np.array([pa_r * 0.75, pa_r * 0.65]))
    right_pa = Tube(np.stack([bifurcation, bifurcation + [-70.0, -20.0, -5.0]]), np.array([pa_r * 0.75, pa_r * 0.6]))

    ra_centre = heart.to_world(np.array(f.ra_centre))
    cava_r = float(rng.uniform(8, 11))
    svc = Tube(np.stack([ra_centre, ra_centre + [0.0, -5.0, 120.0]]), np.array([cava_r, cava_r]))
    ivc = Tube(np.stack([ra_centre, ra_centre + [0.0, -15.0, -160.0]]), np.array([cava_r * 1.2, cava_r * 1.2]))
    return aorta, pulmonary, left_pa, right_pa, svc, ivc


# ==================================================================================================
# Acquisition planning
# ==================================================================================================
@dataclass(frozen=True)
class PlaneStack:
    """One image file's geometry: a stack of S parallel slices of X x Y pixels.

    Attributes:
        name: file stem (``sa``, ``la_2ch``, ...).
        affine: (4, 4) voxel (i, j, k) -> world mm; column 2 has length = slice spacing.
        shape: (X, Y, S).
        thickness: slice thickness (mm) for the slice profile.
    """

    name: str
    affine: np.ndarray
    shape: tuple[int, int, int]
    thickness: float

    def sample_points(self, samples: int) -> np.ndarray:
        """World points (S, X, Y, samples, 3) float32: every pixel centre, spread across the slice thickness."""
        nx, ny, ns = self.shape
        i, j, k = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(ns), indexing="ij")
        voxels = np.stack([i, j, k, np.ones_like(i)], axis=-1).transpose(2, 0, 1, 3).astype(np.float64)
        centres = voxels @ self.affine.T[:, :3]  # (S, X, Y, 3)
        normal = unit(self.affine[:3, 2])
        offsets = (np.arange(samples) - samples // 2) / samples * self.thickness
        return (centres[..., None, :] + offsets[:, None] * normal).astype(np.float32)


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
    x_axis, y_axis, long_axis = heart.axes.T
    pixel = float(rng.uniform(1.6, 2.0))
    sa_matrix = TINY_MATRIX if tiny else int(rng.integers(80, 101)) * 2
    la_matrix = TINY_MATRIX if tiny else int(rng.integers(80, 101)) * 2
    thickness = 8.0
    spacing = float(rng.choice([8.0, 9.0, 10.0]))
    first_above = float(rng.uniform(0.0, 8.0))
    apex_depth = f.lv_cut + f.epi_long
    num_slices = int(np.clip(np.ceil((apex_depth + first_above + rng.uniform(0, 5)) / spacing) + 1, 8, 15))

    shift = rng.uniform(-10, 10, size=2)
    sa_e_i = rotate_about(x_axis, long_axis, rng.uniform(-0.3, 0.3))
    sa_e_j = np.cross(-long_axis, sa_e_i)  # so that e_i x e_j points to the apex: slice k runs base -> apex
    sa_centre = heart.to_world(np.array([0.0, 0.0, first_above])) + shift[0] * sa_e_i + shift[1] * sa_e_j
    planes = [
        PlaneStack("sa", plane_affine(sa_centre, sa_e_i, sa_e_j, pixel, spacing, sa_matrix), (sa_matrix, sa_matrix, num_slices), thickness)
    ]  # fmt: skip

    ao_angle = np.arctan2(heart.aortic_valve_xy[1], heart.aortic_valve_xy[0])
    angles = {"la_2ch": np.pi / 2 + rng.uniform(-0.15, 0.15), "la_3ch": ao_angle + rng.uniform(-0.08, 0.08)}
    angles["la_4ch"] = rng.uniform(-0.15, 0.15)
    la_centre_h = np.array([0.0, 0.0, -0.3 * apex_depth])
    for name in labels.LA_PLANES:
        e_i = rotate_about(x_axis, long_axis, angles[name])
        e_j = -long_axis  # rows run from the base towards the apex
        shift = rng.uniform(-10, 10, size=2)
        centre = heart.to_world(la_centre_h) + shift[0] * e_i + shift[1] * e_j
        planes.append(PlaneStack(name, plane_affine(centre, e_i, e_j, pixel, thickness, la_matrix), (la_matrix, la_matrix, 1), thickness))
    return planes
