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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scripts import labels
from scripts.files import atomic_path, save_nifti_atomic, write_json_atomic
from scripts.measures import phenotypes_from_volumes

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

ES_PHASE_RANGE = (0.32, 0.38)
#: RV ellipsoid centre relative to its septal anchor, in units of its semi-axes: the anchor sits on the septal side of
#: the ellipsoid, the centre a little anterior (the RV wraps more of the anterior wall) and below the AV plane.
RV_CENTRE_OFFSET = np.array([0.97, 0.08, -0.25])


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
def truncated_ellipsoid_volume(radius: np.ndarray, semi_long: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Volume (mm^3) of a prolate ellipsoid of revolution cut by a plane ``cut`` mm above its centre, apex side kept.

    Args:
        radius: short semi-axis (mm), any shape.
        semi_long: long semi-axis (mm), same shape, larger than ``cut``.
        cut: distance from the centre to the cutting (base) plane (mm), same shape.
    """
    return np.pi * radius**2 * ((cut + semi_long) - (cut**3 + semi_long**3) / (3.0 * semi_long**2))


def solve_wall_thickness(
    radius: np.ndarray, semi_long: np.ndarray, cut: np.ndarray, apex_ratio: float, myo_volume: float
) -> np.ndarray:
    """Radial wall thickness (mm) per frame that keeps the LV myocardial volume at ``myo_volume`` (mm^3).

    The epicardium is the cavity ellipsoid grown by ``w`` radially and ``apex_ratio * w`` at the apex; the volume is
    monotone in ``w``, so bisection converges.

    Args:
        radius, semi_long: (T,) cavity semi-axes (mm).
        cut: (T,) centre-to-base distance (mm).
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
    """Normalised squared radius of an axis-aligned ellipsoid, < 1 inside. points (3, N) mm -> (N,)."""
    level = ((points[0] - centre[0]) / axes[0]) ** 2
    level += ((points[1] - centre[1]) / axes[1]) ** 2
    level += ((points[2] - centre[2]) / axes[2]) ** 2
    return level


def heart_tissue(points: np.ndarray, f: HeartFrame) -> np.ndarray:
    """Tissue of heart-frame points at one frame; :data:`AIR` (0) where no cardiac structure is.

    Structures are painted in order, later ones winning: epicardial fat, atrial walls, atria, RV wall, RV blood,
    LV myocardium, LV blood, papillary muscles. The LV shell over the RV ellipsoid is what makes the RV a crescent.
    Ventricles live at ``z <= 0`` and atria at ``z > 0``, so each is evaluated on its own half only.

    Args:
        points: (3, N) float32 heart-frame coordinates (mm), rows x, y, z.
        f: the frame's shape.

    Returns:
        (N,) uint8 tissue ids.
    """
    tissue = np.zeros(points.shape[1], dtype=np.uint8)
    z = points[2]
    atrial = np.flatnonzero(z > 0.0)
    if len(atrial):
        tissue[atrial] = atrial_tissue(points[:, atrial], f)
    ventricular = np.flatnonzero(z <= f.epifat)
    if len(ventricular):
        below = points[:, ventricular]
        tissue[ventricular] = np.where(below[2] <= 0.0, ventricular_tissue(below, f), tissue[ventricular])
        fat = epicardial_fat(below, f) & (tissue[ventricular] == AIR)
        tissue[ventricular[fat]] = EPIFAT
    return tissue


def epicardial_fat(points: np.ndarray, f: HeartFrame) -> np.ndarray:
    """Points (3, N) within ``epifat`` mm outside the LV epicardium or the RV wall -> (N,) bool."""
    x, y, z = points
    lv_fat = (x * x + y * y) / (f.epi_radius + f.epifat) ** 2 + (z + f.lv_cut) ** 2 / (f.epi_long + f.epifat) ** 2
    rv_fat = ellipsoid_level(points, f.rv_centre, tuple(a + f.rv_wall + f.epifat for a in f.rv_axes))
    return (lv_fat < 1.0) | (rv_fat < 1.0)


def ventricular_tissue(points: np.ndarray, f: HeartFrame) -> np.ndarray:
    """Tissue of points (3, N) below the AV plane: RV wall, RV blood, LV myocardium, LV blood, papillary muscles."""
    x, y, z = points
    tissue = np.zeros(points.shape[1], dtype=np.uint8)
    tissue[ellipsoid_level(points, f.rv_centre, tuple(a + f.rv_wall for a in f.rv_axes)) < 1.0] = WALL
    tissue[ellipsoid_level(points, f.rv_centre, f.rv_axes) < 1.0] = RVBP
    rho2 = x * x + y * y
    dz2 = (z + f.lv_cut) ** 2
    tissue[rho2 / f.epi_radius**2 + dz2 / f.epi_long**2 < 1.0] = LVMYO
    cavity = rho2 / f.lv_radius**2 + dz2 / f.lv_long**2 < 1.0
    tissue[cavity] = LVBP
    tissue[cavity & papillary_mask(points, f)] = PAPILLARY
    return tissue


def atrial_tissue(points: np.ndarray, f: HeartFrame) -> np.ndarray:
    """Tissue of points (3, N) above the AV plane: atrial walls and blood pools.

    Where the two ellipsoids overlap, a point belongs to the one it is deeper in; a thin band where both are about
    equally deep is the interatrial septum (wall).
    """
    tissue = np.zeros(points.shape[1], dtype=np.uint8)
    la_wall = ellipsoid_level(points, f.la_centre, tuple(a + f.atrial_wall for a in f.la_axes))
    ra_wall = ellipsoid_level(points, f.ra_centre, tuple(a + f.atrial_wall for a in f.ra_axes))
    tissue[(la_wall < 1.0) | (ra_wall < 1.0)] = WALL
    la_level = ellipsoid_level(points, f.la_centre, f.la_axes)
    ra_level = ellipsoid_level(points, f.ra_centre, f.ra_axes)
    septum = 0.12
    tissue[(la_level < 1.0) & (la_level < ra_level - septum)] = LABP
    tissue[(ra_level < 1.0) & (ra_level < la_level - septum)] = RABP
    return tissue


def papillary_mask(points: np.ndarray, f: HeartFrame) -> np.ndarray:
    """Two papillary muscles: cylinders parallel to the long axis in the mid-to-apical cavity. (3, N) -> (N,) bool."""
    x, y, z = points
    length = f.lv_cut + f.lv_long
    mask = np.zeros(len(x), dtype=bool)
    for px, py in f.papillary_xy:
        mask |= (x - px) ** 2 + (y - py) ** 2 < f.papillary_radius**2
    return mask & (z > -0.75 * length) & (z < -0.35 * length)


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
    """Points (3, N) within the tube's radius of its centreline, radius linear along each segment -> (N,) bool."""
    inside = np.zeros(points.shape[1], dtype=bool)
    for a, b, ra, rb in zip(tube.centreline[:-1], tube.centreline[1:], tube.radius[:-1], tube.radius[1:]):
        # Only points in the segment's bounding box can be inside, and the box test is cheap.
        reach = max(ra, rb)
        near_box = np.ones(points.shape[1], dtype=bool)
        for axis in range(3):
            near_box &= (points[axis] > min(a[axis], b[axis]) - reach) & (points[axis] < max(a[axis], b[axis]) + reach)
        near = np.flatnonzero(near_box)
        seg = b - a
        rel = points[:, near] - a[:, None].astype(np.float32)
        projection = seg[0] * rel[0] + seg[1] * rel[1] + seg[2] * rel[2]
        along = np.clip(projection / float(seg @ seg), 0.0, 1.0)
        dist2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2 - 2 * along * projection + along**2 * float(seg @ seg)
        inside[near[dist2 < (ra + (rb - ra) * along) ** 2]] = True
    return inside


def body_tissue(points: np.ndarray, body: Body) -> np.ndarray:
    """Tissue of world points (3, N) mm in the static anatomy (no heart), painted outside-in -> (N,) uint8."""
    x, y = points[0] - body.centre_xy[0], points[1] - body.centre_xy[1]
    a, b = body.semi_axes_xy

    def inside_torso(shrink: float) -> np.ndarray:
        return (x / (a - shrink)) ** 2 + (y / (b - shrink)) ** 2 < 1.0

    tissue = np.zeros(points.shape[1], dtype=np.uint8)
    tissue[inside_torso(0.0)] = FAT
    tissue[inside_torso(body.fat_thickness)] = MUSCLE
    interior = inside_torso(body.fat_thickness + body.muscle_thickness)
    tissue[interior] = SOFT
    for centre, axes in body.lungs:
        tissue[interior & (ellipsoid_level(points, centre, axes) < 1.0)] = LUNG
    tissue[interior & (ellipsoid_level(points, *body.liver) < 1.0)] = LIVER
    sx, sy = points[0] - body.spine_xy[0], points[1] - body.spine_xy[1]
    tissue[sx * sx + sy * sy < body.spine_radius**2] = BONE
    cx, cy = points[0] - body.canal_xy[0], points[1] - body.canal_xy[1]
    tissue[cx * cx + cy * cy < 49.0] = CSF
    for vessel in body.vessels:
        tissue[tube_mask(points, vessel)] = VESSEL
    return tissue


# ==================================================================================================
# Subject sampling
# ==================================================================================================
#: Uniform ranges of the :class:`Design` targets per category (mL, %, mm; slow rapid filling = impaired relaxation).
PHENOTYPE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "healthy": dict(
        lvedv=(100, 200),
        lvef=(55, 72),
        wall=(7, 10),
        rv_ratio=(0.95, 1.25),
        rvef=(50, 68),
        lavmax=(45, 90),
        laef=(50, 70),
        ravmax=(45, 100),
        raef=(40, 62),
        rapid_fill=(0.6, 0.8),
    ),
    "dilated": dict(
        lvedv=(210, 310),
        lvef=(18, 38),
        wall=(6, 9),
        rv_ratio=(0.8, 1.15),
        rvef=(28, 50),
        lavmax=(90, 150),
        laef=(18, 40),
        ravmax=(70, 140),
        raef=(25, 45),
        rapid_fill=(0.5, 0.8),
    ),
    "hypertrophic": dict(
        lvedv=(90, 150),
        lvef=(60, 76),
        wall=(12, 18),
        rv_ratio=(0.85, 1.15),
        rvef=(55, 70),
        lavmax=(70, 120),
        laef=(30, 52),
        ravmax=(50, 100),
        raef=(35, 55),
        rapid_fill=(0.4, 0.6),
    ),
    "low_ef": dict(
        lvedv=(140, 240),
        lvef=(28, 48),
        wall=(8, 11),
        rv_ratio=(0.9, 1.3),
        rvef=(32, 55),
        lavmax=(70, 120),
        laef=(25, 48),
        ravmax=(55, 120),
        raef=(30, 50),
        rapid_fill=(0.5, 0.7),
    ),
}
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
    return Design(category, **{key: float(rng.uniform(*bounds)) for key, bounds in PHENOTYPE_RANGES[category].items()})


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
    # The cut well above the centre narrows the base towards the mitral annulus; it stays a fixed fraction of the
    # long semi-axis so the ventricle keeps its shape while it shortens.
    sphericity = rng.uniform(0.4, 0.48) if design.category == "dilated" else rng.uniform(0.32, 0.4)
    cut_ratio = rng.uniform(0.45, 0.65)
    shape_factor = np.pi * sphericity**2 * (1 + cut_ratio) ** 2 * ((1 + cut_ratio) - (1 + cut_ratio**3) / 3)
    lv_long_ed = (lv_volume[0] / shape_factor) ** (1 / 3)
    # The AV plane descends in proportion to the ejected volume; the apex barely moves, so the cavity shortens.
    max_descent = rng.uniform(9.0, 16.0) * min(1.0, design.lvef / 60.0) ** 0.7
    descent = max_descent * (lv_volume[0] - lv_volume) / (lv_volume[0] - lv_volume.min())
    lv_long = lv_long_ed - 1.05 * descent / (1 + cut_ratio)
    lv_cut = cut_ratio * lv_long
    lv_radius = np.sqrt(lv_volume / truncated_ellipsoid_volume(1.0, lv_long, lv_cut))

    apex_ratio = float(rng.uniform(0.6, 0.85))
    myo_volume = float(
        truncated_ellipsoid_volume(lv_radius[0] + design.wall, lv_long[0] + apex_ratio * design.wall, lv_cut[0])
        - lv_volume[0]
    )
    wall = solve_wall_thickness(lv_radius, lv_long, lv_cut, apex_ratio, myo_volume)
    epi_radius, epi_long = lv_radius + wall, lv_long + apex_ratio * wall

    rv_es_phase = es_phase + float(rng.uniform(0.0, 0.03))
    rv_curve = ventricular_curve(phase, rv_es_phase, design.rapid_fill, atrial_phase)
    rv_volume = 1e3 * design.lvedv * design.rv_ratio * (1 - design.rvef / 100 * (1 - rv_curve))
    rv_base_axes = np.array([rng.uniform(0.85, 1.0), rng.uniform(1.25, 1.4), rng.uniform(0.62, 0.72)]) * np.array(
        [epi_radius[0], epi_radius[0], lv_cut[0] + epi_long[0]]
    )
    rv_anchor = -rng.uniform(0.3, 0.45) * epi_radius  # septal anchor of the RV ellipsoid's homothety, per frame
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
                lv_cut=float(lv_cut[t]),
                lv_radius=float(lv_radius[t]),
                lv_long=float(lv_long[t]),
                epi_radius=float(epi_radius[t]),
                epi_long=float(epi_long[t]),
                rv_centre=tuple(float(v) for v in rv_anchor[t] * np.array([1, 0, 0]) + RV_CENTRE_OFFSET * rv_axes),
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
    mid_cavity_depth = 0.5 * (lv_cut[0] + lv_long[0])
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
    lv_cut: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Scale s per frame so the RV crescent (RV ellipsoid below the AV plane, minus the LV) holds ``rv_volume``.

    The RV ellipsoid is the base ellipsoid scaled by s about a septal anchor point, so the family is nested and its
    volume grows with s; the crescent volume is estimated with fixed Monte-Carlo points in the unit ball.

    Args:
        rv_volume: (T,) target volumes (mm^3).
        base_axes: (3,) RV semi-axes at s = 1 (mm).
        anchor: (T,) x of the anchor (mm); epi_radius, epi_long: (T,) LV epicardium semi-axes (mm).
        lv_cut: (T,) LV centre-to-base distance (mm).

    Returns:
        (T,) scales.
    """
    ball = rng.normal(size=(4000, 3))
    ball *= (rng.uniform(size=(4000, 1)) ** (1 / 3)) / np.linalg.norm(ball, axis=1, keepdims=True)
    offset = RV_CENTRE_OFFSET * base_axes

    def crescent_volume(scale: np.ndarray) -> np.ndarray:
        centre = anchor[:, None] * np.array([1.0, 0.0, 0.0]) + scale[:, None] * offset  # (T, 3)
        pts = centre[:, None, :] + scale[:, None, None] * ball[None] * base_axes  # (T, N, 3)
        in_lv = (pts[..., 0] ** 2 + pts[..., 1] ** 2) / epi_radius[:, None] ** 2 + (
            pts[..., 2] + lv_cut[:, None]
        ) ** 2 / epi_long[:, None] ** 2 < 1.0
        kept = (pts[..., 2] <= 0) & ~in_lv
        return scale**3 * (4 / 3) * np.pi * np.prod(base_axes) * kept.mean(axis=1)

    low, high = np.full(len(rv_volume), 0.2), np.full(len(rv_volume), 3.0)
    for _ in range(18):
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
    # both atria sit behind the ventricles, near the plane through the LV axis and the RV that the 4ch view is planned
    # on (a technologist lays it through the mitral and tricuspid valves, so it shows both atria across their middle)
    la_xy = (-rng.uniform(0.1, 0.3) * epi_radius, -rng.uniform(0.15, 0.35) * epi_radius)
    ra_xy = (rng.uniform(0.5, 0.7) * rv_axes[0] + 0.3 * epi_radius, -rng.uniform(0.15, 0.35) * epi_radius)
    placements = {"la": (design.lavmax, design.laef, la_xy), "ra": (design.ravmax, design.raef, ra_xy)}
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
    # The root climbs along the long axis (so the 3-chamber view shows the outflow), then turns up and to the right.
    sinus = heart.to_world(np.array([*ao_xy, 25.0]))
    ascending = sinus + 30 * unit(up + np.array([-0.3, 0.3, 0.0]))
    arch_start = ascending + np.array([-5.0, 0.0, 30.0])
    desc_xy = np.array([spine_xy[0] + 25, spine_xy[1] + 25])
    arch_top = np.array([desc_xy[0] - 5, 0.5 * (arch_start[1] + desc_xy[1]), arch_start[2] + 20])
    desc_top = np.array([*desc_xy, arch_start[2]])
    root = heart.to_world(np.array([*ao_xy, -15.0]))
    aorta = Tube(
        np.stack([root, valve, sinus, ascending, arch_start, arch_top, desc_top, desc_top - [0, 0, 350]]),
        ao_r * np.array([0.9, 1.0, 1.1, 1.0, 0.95, 0.85, 0.8, 0.75]),
    )

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
        """World points (S, Y, X, samples, 3) float32: every pixel centre, spread across the slice thickness.

        The (S, Y, X) order is the reverse of NIfTI's (X, Y, S), so C-ordered arrays of it are NIfTI's Fortran order.
        """
        nx, ny, ns = self.shape
        k, j, i = np.meshgrid(np.arange(ns), np.arange(ny), np.arange(nx), indexing="ij")
        voxels = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(np.float64)
        centres = voxels @ self.affine.T[:, :3]  # (S, Y, X, 3)
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


# ==================================================================================================
# Ground-truth volumes and phenotypes from the 3D model
# ==================================================================================================
def ellipsoid_box(centre: tuple[float, ...], axes: tuple[float, ...], margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounding box (lo (3,), hi (3,)) mm of an ellipsoid grown by ``margin`` mm."""
    c, a = np.asarray(centre), np.asarray(axes) + margin
    return c - a, c + a


def structure_boxes(f: HeartFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Heart-frame bounding boxes (mm) of the RV, the atria and the whole heart (with walls and fat) at one frame."""
    lv_lo = np.array([-f.epi_radius, -f.epi_radius, -(f.lv_cut + f.epi_long)]) - f.epifat
    lv_hi = np.array([f.epi_radius, f.epi_radius, 0.0]) + f.epifat
    rv_lo, rv_hi = ellipsoid_box(f.rv_centre, f.rv_axes, 0.0)
    la_lo, la_hi = ellipsoid_box(f.la_centre, f.la_axes, 0.0)
    ra_lo, ra_hi = ellipsoid_box(f.ra_centre, f.ra_axes, 0.0)
    rv_outer = ellipsoid_box(f.rv_centre, f.rv_axes, f.rv_wall + f.epifat)
    wall = f.atrial_wall
    lows = [lv_lo, rv_outer[0], la_lo - wall, ra_lo - wall]
    highs = [lv_hi, rv_outer[1], la_hi + wall, ra_hi + wall]
    return {
        "rv": (rv_lo, np.minimum(rv_hi, [np.inf, np.inf, 0.0])),
        "atria": (np.maximum(np.minimum(la_lo, ra_lo), [-np.inf, -np.inf, 0.0]), np.maximum(la_hi, ra_hi)),
        "heart": (np.min(lows, axis=0), np.max(highs, axis=0)),
    }


def grid_points(lo: np.ndarray, hi: np.ndarray, spacing: float) -> np.ndarray:
    """Cell centres of a regular grid over the box [lo, hi] (mm) -> (3, N) float32."""
    ticks = [np.arange(a + spacing / 2, b, spacing, dtype=np.float32) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*ticks, indexing="ij")).reshape(3, -1)


def model_volumes(heart: Heart, spacing: float = PHENOTYPE_GRID_MM) -> dict[str, np.ndarray]:
    """Per-frame volumes (mL) of LVBP, LVMYO, RVBP, LABP and RABP integrated from the 3D model.

    The LV cavity and shell are painted last, so nothing overrides them and their volumes are the exact truncated-
    ellipsoid integrals. The RV and the atria are counted on a ``spacing`` mm grid over their own bounding boxes with
    the same :func:`heart_tissue` that labels the images.

    Returns:
        Class name -> (T,) float64 volumes in mL.
    """
    volumes: dict[str, list[float]] = {name: [] for name in labels.CLASS_NAMES[1:]}
    cell_ml = spacing**3 / 1e3
    for f in heart.frames:
        cavity = truncated_ellipsoid_volume(f.lv_radius, f.lv_long, f.lv_cut)
        shell = truncated_ellipsoid_volume(f.epi_radius, f.epi_long, f.lv_cut) - cavity
        volumes["LVBP"].append(cavity / 1e3)
        volumes["LVMYO"].append(shell / 1e3)
        boxes = structure_boxes(f)
        rv_classes = TISSUE_TO_CLASS[heart_tissue(grid_points(*boxes["rv"], spacing), f)]
        volumes["RVBP"].append(np.count_nonzero(rv_classes == 3) * cell_ml)
        atria_classes = TISSUE_TO_CLASS[heart_tissue(grid_points(*boxes["atria"], spacing), f)]
        volumes["LABP"].append(np.count_nonzero(atria_classes == 4) * cell_ml)
        volumes["RABP"].append(np.count_nonzero(atria_classes == 5) * cell_ml)
    return {name: np.asarray(v, dtype=np.float64) for name, v in volumes.items()}


# ==================================================================================================
# Image formation
# ==================================================================================================
@dataclass(frozen=True)
class Contrast:
    """Per-subject appearance.

    Attributes:
        intensity: (NUM_TISSUES,) relative bSSFP signal per tissue (blood ~1).
        blur_px: Gaussian point-spread sigma in pixels.
        noise_sigma: Rician noise sigma relative to blood.
        scale: int16 value of unit signal.
        ghost: amplitude of the N/2 phase-encoding ghost (0 = none).
        band_depth: depth of an off-resonance dark band (0 = none).
    """

    intensity: np.ndarray
    blur_px: float
    noise_sigma: float
    scale: float
    ghost: float
    band_depth: float


def sample_contrast(rng: np.random.Generator) -> Contrast:
    """bSSFP-like contrast: bright blood and fat, grey myocardium, dark lungs; artefacts in about a quarter each."""
    blood, myo, fat = rng.uniform(0.85, 1.0), rng.uniform(0.22, 0.34), rng.uniform(0.7, 0.95)
    intensity = np.zeros(NUM_TISSUES, dtype=np.float32)
    intensity[[SOFT, MUSCLE, LUNG, LIVER, BONE, CSF]] = [
        rng.uniform(0.3, 0.45),
        rng.uniform(0.2, 0.3),
        rng.uniform(0.03, 0.1),
        rng.uniform(0.28, 0.42),
        rng.uniform(0.2, 0.35),
        rng.uniform(0.6, 0.9),
    ]
    intensity[[FAT, EPIFAT]] = fat
    intensity[[WALL, LVMYO, PAPILLARY]] = myo
    intensity[[LVBP, RVBP]] = blood * np.array([1.0, rng.uniform(0.93, 1.0)])
    intensity[[LABP, RABP, VESSEL]] = blood * rng.uniform(0.85, 1.0, size=3)
    return Contrast(
        intensity=intensity,
        blur_px=float(rng.uniform(0.4, 0.8)),
        noise_sigma=float(1.0 / rng.uniform(12, 35)),
        scale=float(rng.uniform(300, 1200)),
        ghost=float(rng.uniform(0.04, 0.12)) if rng.uniform() < 0.25 else 0.0,
        band_depth=float(rng.uniform(0.6, 0.9)) if rng.uniform() < 0.25 else 0.0,
    )


def coil_bias(world: np.ndarray, body: Body, rng: np.random.Generator) -> np.ndarray:
    """Smooth receive-coil sensitivity at world points (N, 3) mm: anterior and posterior coil elements -> (N,)."""
    cx, cy = body.centre_xy
    a, b = body.semi_axes_xy
    centre_z = float(np.median(world[:, 2]))
    bias = np.full(len(world), 0.35, dtype=np.float32)
    for side in (1.0, -1.0):
        for lateral in (-0.35, 0.35):
            element = np.array([cx + lateral * a, cy + side * b, centre_z + rng.uniform(-60, 60)])
            width = rng.uniform(110, 180)
            gain = rng.uniform(0.5, 1.0)
            bias += gain * np.exp(-np.sum((world - element) ** 2, axis=1) / (2 * width**2)).astype(np.float32)
    return bias / np.median(bias)


def off_resonance_band(world: np.ndarray, heart: Heart, depth: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative (N,) factor with a dark curved bSSFP band, where a smooth field map crosses a band frequency.

    The band passes within ~30 mm of the heart, where the susceptibility of the lung-heart interface puts it.
    """
    through = heart.to_world(np.array([0.0, 0.0, -40.0])) + rng.normal(0, 20, 3)
    normal = unit(rng.normal(size=3))
    rel = world - through
    field = rel @ normal + np.sum(rel**2, axis=1) / (2 * rng.uniform(150, 400))
    width = rng.uniform(2.0, 4.0)
    return (1.0 - depth * np.exp(-((field / width) ** 2))).astype(np.float32)


def render(
    heart: Heart, body: Body, planes: list[PlaneStack], contrast: Contrast, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Image every plane stack over the cycle.

    Static anatomy is evaluated once; per frame only pixels whose slice profile can touch the heart are re-evaluated.

    Returns:
        Per stack, ``(image int16 (X, Y, S, T), label uint8 (X, Y, S, T))``.
    """
    samples, centre = SLICE_PROFILE_SAMPLES, SLICE_PROFILE_SAMPLES // 2
    frames = len(heart.frames)
    points = [plane.sample_points(samples).reshape(-1, samples, 3) for plane in planes]
    world = np.concatenate(points)  # (pixels, samples, 3)
    static = body_tissue(np.ascontiguousarray(world.reshape(-1, 3).T), body).reshape(world.shape[:2])
    local = heart.to_heart(world).astype(np.float32)

    boxes = [structure_boxes(f)["heart"] for f in heart.frames]
    lo = np.min([b[0] for b in boxes], axis=0) - [0.0, 0.0, float(heart.descent.max())] - 1.0
    hi = np.max([b[1] for b in boxes], axis=0) + 1.0
    region = np.any(np.all((local >= lo) & (local <= hi), axis=-1), axis=-1)
    region_local, region_static = np.ascontiguousarray(local[region].reshape(-1, 3).T), static[region]

    image = np.repeat(contrast.intensity[static].mean(axis=1)[None], frames, axis=0)  # (T, pixels)
    label = np.repeat(TISSUE_TO_CLASS[static[:, centre]][None], frames, axis=0)
    for t, f in enumerate(heart.frames):
        shifted = region_local.copy()
        shifted[2] += heart.descent[t]
        tissue = heart_tissue(shifted, f).reshape(region_static.shape)
        tissue = np.where(tissue == AIR, region_static, tissue)
        image[t, region] = contrast.intensity[tissue].mean(axis=1)
        label[t, region] = TISSUE_TO_CLASS[tissue[:, centre]]

    pixel_centres = world[:, centre]
    gain = coil_bias(pixel_centres, body, rng)
    if contrast.band_depth:
        gain *= off_resonance_band(pixel_centres, heart, contrast.band_depth, rng)
    image *= gain

    out, start = [], 0
    for plane in planes:
        nx, ny, ns = plane.shape
        stop = start + nx * ny * ns
        stack = image[:, start:stop].reshape(frames, ns, ny, nx)
        stack_label = label[:, start:stop].reshape(frames, ns, ny, nx)
        start = stop
        out.append((finish_image(stack, contrast, rng), stack_label.transpose(3, 2, 1, 0)))
    return out


def blur_in_plane(stack: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian point-spread blur over the last two axes of (..., Y, X) with a 3-tap kernel (sigma < 1 px)."""
    side = float(np.exp(-0.5 / sigma**2))
    centre_weight, side_weight = 1.0 / (1.0 + 2.0 * side), side / (1.0 + 2.0 * side)
    for axis in (-2, -1):
        source = stack
        stack = source * np.float32(centre_weight)
        head = [slice(None)] * stack.ndim
        tail = [slice(None)] * stack.ndim
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        stack[tuple(head)] += np.float32(side_weight) * source[tuple(tail)]
        stack[tuple(tail)] += np.float32(side_weight) * source[tuple(head)]
    return stack


class RicianNoise:
    """Complex Gaussian noise of standard deviation ``sigma`` whose magnitude is taken (Rician statistics).

    Drawing ~25 M normals per subject dominated the run time, so every slice reads its real and imaginary parts at
    random offsets of one bank of normals; slices and frames still get independent-looking noise.
    """

    BANK_SIZE = 1 << 21

    def __init__(self, sigma: float, plane_size: int, rng: np.random.Generator) -> None:
        self.bank = rng.standard_normal(self.BANK_SIZE + plane_size, dtype=np.float32) * np.float32(sigma)
        self.rng = rng

    def __call__(self, slices: np.ndarray) -> np.ndarray:
        """Noisy magnitude of (S, Y, X) float32 signal -> (S, Y, X) float32."""
        plane = slices.shape[1] * slices.shape[2]
        flat = slices.reshape(len(slices), plane)
        out = np.empty_like(flat)
        for n, (real_start, imaginary_start) in enumerate(self.rng.integers(0, self.BANK_SIZE, size=(len(flat), 2))):
            real = flat[n] + self.bank[real_start : real_start + plane]
            imaginary = self.bank[imaginary_start : imaginary_start + plane]
            out[n] = real * real + imaginary * imaginary
        return np.sqrt(out, out=out).reshape(slices.shape)


def finish_image(stack: np.ndarray, contrast: Contrast, rng: np.random.Generator) -> np.ndarray:
    """Point-spread blur, optional phase-encoding ghost, Rician noise and int16 scaling.

    Frame by frame, so the temporaries stay in cache instead of page-faulting fresh memory for the whole cine.

    Args:
        stack: (T, S, Y, X) noiseless signal (blood ~1).

    Returns:
        (X, Y, S, T) int16, a Fortran-ordered view (what NIfTI stores, so nibabel writes it without a copy).
    """
    frames, _, ny, nx = stack.shape
    out = np.empty(stack.shape, dtype=np.int16)
    noise = RicianNoise(contrast.noise_sigma, ny * nx, rng)
    for t in range(frames):
        frame = blur_in_plane(stack[t], contrast.blur_px)
        if contrast.ghost:
            # Periodic cardiac motion replicates the image half a field of view along phase encoding (rows).
            frame += np.float32(contrast.ghost) * np.roll(frame, ny // 2, axis=-2)
        magnitude = noise(frame)
        magnitude *= np.float32(contrast.scale)
        magnitude += np.float32(0.5)  # round half up on the cast below (values are non-negative)
        np.minimum(magnitude, np.iinfo(np.int16).max, out=magnitude)
        out[t] = magnitude
    return out.transpose(3, 2, 1, 0)


# ==================================================================================================
# Files
# ==================================================================================================
# ==================================================================================================
# Subjects and cohorts
# ==================================================================================================
def subject_name(index: int) -> str:
    """Folder name of the index-th subject."""
    return f"subject_{index:04d}"


def subject_rng(seed: int, index: int) -> np.random.Generator:
    """Independent stream per (cohort seed, subject index): another seed gives other subjects, workers don't matter."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index,)))


@dataclass
class Subject:
    """Everything sampled for one subject (before imaging)."""

    design: Design
    heart: Heart
    phases: dict[str, float]
    body: Body
    planes: list[PlaneStack]
    contrast: Contrast
    rng: np.random.Generator


def sample_subject(seed: int, index: int, frames: int = DEFAULT_FRAMES, tiny: bool = False) -> Subject:
    """Draw one subject's heart, body, acquisition plan and contrast; deterministic in (seed, index)."""
    rng = subject_rng(seed, index)
    design = sample_design(rng)
    heart, phases = build_heart(design, rng, frames)
    body = sample_body(rng, heart)
    planes = plan_acquisition(heart, rng, tiny)
    return Subject(design, heart, phases, body, planes, sample_contrast(rng), rng)


def synthesize_subject(out_dir: str | Path, seed: int, index: int, frames: int, tiny: bool) -> dict[str, float]:
    """Render one subject into ``out_dir/subject_NNNN/`` and return its ground-truth phenotypes."""
    subject = sample_subject(seed, index, frames, tiny)
    folder = Path(out_dir) / subject_name(index)
    folder.mkdir(parents=True, exist_ok=True)
    frame_seconds = float(subject.rng.uniform(0.8, 1.1)) / frames  # one RR interval over the frames
    rendered = render(subject.heart, subject.body, subject.planes, subject.contrast, subject.rng)
    for plane, (image, label) in zip(subject.planes, rendered):
        save_nifti_atomic(image, plane.affine, folder / f"{plane.name}.nii.gz", frame_seconds * 1000)
        save_nifti_atomic(label, plane.affine, folder / f"seg_{plane.name}.nii.gz", frame_seconds * 1000)
    sidecar = {"label_map": "project", "annotated_classes": list(range(1, labels.NUM_CLASSES))}
    write_json_atomic(sidecar, folder / "subject.json")
    return phenotypes_from_volumes(model_volumes(subject.heart))


def split_counts(num_subjects: int, fractions: tuple[float, float, float]) -> list[int]:
    """Training / validation / test sizes: largest-remainder rounding, then one or more per non-zero fraction."""
    weights = np.asarray(fractions, dtype=np.float64) / np.sum(fractions)
    counts = np.floor(weights * num_subjects).astype(int)
    for i in np.argsort(-(weights * num_subjects - counts))[: num_subjects - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((counts == 0) & (weights > 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


def make_datalist(names: list[str], seed: int, fractions: tuple[float, float, float]) -> dict[str, list[dict]]:
    """Random training / validation / test split of subject folder names, deterministic in ``seed``."""
    order = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(2**31,))).permutation(len(names))
    counts = split_counts(len(names), fractions)
    bounds = np.cumsum([0] + counts)
    return {
        key: [{"subject": names[i]} for i in sorted(order[bounds[k] : bounds[k + 1]])]
        for k, key in enumerate(("training", "validation", "test"))
    }


def synthesize_cohort(
    out_dir: str | Path,
    num_subjects: int,
    seed: int,
    frames: int = DEFAULT_FRAMES,
    tiny: bool = False,
    workers: int = 1,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> list[str]:
    """Write a synthetic cohort: subject folders, ``phenotypes.csv`` and ``datalist.json``.

    Args:
        out_dir: dataset folder (created).
        num_subjects: how many subjects.
        seed: cohort seed; the same seed reproduces identical arrays, another seed gives other subjects.
        frames: frames per cycle (``tiny`` caps it at :data:`TINY_FRAMES`).
        tiny: small matrix (:data:`TINY_MATRIX` px) and few frames, for tests.
        workers: parallel processes.
        split: training / validation / test fractions.

    Returns:
        The subject folder names.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = min(frames, TINY_FRAMES) if tiny else frames
    names = [subject_name(i) for i in range(num_subjects)]
    jobs = [(out, seed, i, frames, tiny) for i in range(num_subjects)]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(synthesize_subject, *zip(*jobs)))
    else:
        rows = [synthesize_subject(*job) for job in jobs]

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["subject", *labels.PHENOTYPE_NAMES])
            for name, row in zip(names, rows):
                writer.writerow([name] + [f"{row[key]:.3f}" for key in labels.PHENOTYPE_NAMES])

    with atomic_path(out / "phenotypes.csv") as temp_path:
        write_csv(temp_path)
    write_json_atomic(make_datalist(names, seed, split), out / "datalist.json")
    return names
