"""The analytic 3D+T heart of the synthetic cohort: cardiac cycle, geometry, tissue at points, true volumes.

Heart frame: origin at the centre of the atrioventricular (AV) plane, ``z`` along the LV long axis from apex to base
(ventricles at ``z <= 0``, atria at ``z > 0``), ``x`` from the LV axis towards the septum/RV, ``y`` perpendicular and
pointing anteriorly. In systole the AV plane descends towards the apex; the heart frame moves with it. Structures are
implicit functions (truncated ellipsoids), evaluated only where the imaging planes sample space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scripts import labels
from scripts.synthetic_geometry import ellipsoid_box, ellipsoid_level, grid_points, rotate_about, unit
from scripts.synthetic_tissues import TISSUE_TO_CLASS, Tissue

#: Grid spacing (mm) of the volume integration that yields the ground-truth phenotypes.
PHENOTYPE_GRID_MM = 1.6

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


def heart_tissue(points: np.ndarray, f: HeartFrame) -> np.ndarray:
    """Tissue of heart-frame points at one frame; :data:`Tissue.AIR` (0) where no cardiac structure is.

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
        fat = epicardial_fat(below, f) & (tissue[ventricular] == Tissue.AIR)
        tissue[ventricular[fat]] = Tissue.EPICARDIAL_FAT
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
    tissue[ellipsoid_level(points, f.rv_centre, tuple(a + f.rv_wall for a in f.rv_axes)) < 1.0] = Tissue.CARDIAC_WALL
    tissue[ellipsoid_level(points, f.rv_centre, f.rv_axes) < 1.0] = Tissue.RV_BLOOD
    rho2 = x * x + y * y
    dz2 = (z + f.lv_cut) ** 2
    tissue[rho2 / f.epi_radius**2 + dz2 / f.epi_long**2 < 1.0] = Tissue.LV_MYOCARDIUM
    cavity = rho2 / f.lv_radius**2 + dz2 / f.lv_long**2 < 1.0
    tissue[cavity] = Tissue.LV_BLOOD
    tissue[cavity & papillary_mask(points, f)] = Tissue.PAPILLARY
    return tissue


def atrial_tissue(points: np.ndarray, f: HeartFrame) -> np.ndarray:
    """Tissue of points (3, N) above the AV plane: atrial walls and blood pools.

    Where the two ellipsoids overlap, a point belongs to the one it is deeper in; a thin band where both are about
    equally deep is the interatrial septum (wall).
    """
    tissue = np.zeros(points.shape[1], dtype=np.uint8)
    la_wall = ellipsoid_level(points, f.la_centre, tuple(a + f.atrial_wall for a in f.la_axes))
    ra_wall = ellipsoid_level(points, f.ra_centre, tuple(a + f.atrial_wall for a in f.ra_axes))
    tissue[(la_wall < 1.0) | (ra_wall < 1.0)] = Tissue.CARDIAC_WALL
    la_level = ellipsoid_level(points, f.la_centre, f.la_axes)
    ra_level = ellipsoid_level(points, f.ra_centre, f.ra_axes)
    septum = 0.12
    tissue[(la_level < 1.0) & (la_level < ra_level - septum)] = Tissue.LA_BLOOD
    tissue[(ra_level < 1.0) & (ra_level < la_level - septum)] = Tissue.RA_BLOOD
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
# Sampling a heart: disease category, targets, per-frame shape
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

    One chain of derivations (volume curve -> LV length and radius -> wall -> RV and atria), each step using the
    previous ones' arrays; split into functions it would hand a dozen intermediate arrays around, so it stays whole.

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


# ==================================================================================================
# Ground-truth volumes and phenotypes from the 3D model
# ==================================================================================================
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


def model_volumes(heart: Heart, spacing: float = PHENOTYPE_GRID_MM) -> dict[str, np.ndarray]:
    """Per-frame volumes (mL) of the classes LVBP, LVMYO, RVBP, LABP and RABP integrated from the 3D model.

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
