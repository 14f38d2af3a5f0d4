"""What real hearts show beyond the analytic chambers (the "wide" variety): a smooth random warp of the whole heart,
trabeculae and a moderator band in the blood pools, epicardial fat thickest in the grooves, coronary arteries in the
atrioventricular groove, the pericardium and pericardial fat outside it.

None of it changes a class volume: the warp is exactly volume-preserving
(:class:`~scripts.synthetic_geometry.ShearWarp`), trabeculae replace blood with tissue of the same class (UK Biobank
contours include them in the blood pool), and fat, vessels and pericardium only replace background, so
:func:`scripts.synthetic_heart.model_volumes` stays the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scripts.synthetic_geometry import PlaneWaves, ShearWarp, ellipsoid_level, sample_plane_waves, sample_shear_warp
from scripts.synthetic_heart import HeartFrame, heart_tissue
from scripts.synthetic_tissues import Tissue

#: Largest classic epicardial fat thickness (``HeartFrame.epifat``, mm).
MAX_EPIFAT_MM = 4.0
#: The first-order distance to an ellipsoid underestimates the true one away from its surface, by less than this
#: factor within the few centimetres around the heart where fat and pericardium are drawn.
DISTANCE_SAFETY = 1.3


@dataclass(frozen=True)
class HeartDetail:
    """Per-subject parameters of the detailed heart (lengths in mm, angles in radians, heart frame).

    Attributes:
        warp: volume-preserving warp applied to ED heart-frame points before the systolic descent.
        lv_trabeculae_depth, rv_trabeculae_depth: how far trabeculae reach into the cavity from the wall.
        lv_trabeculae_count, rv_trabeculae_count: strands around the circumference.
        trabeculae_phases: (4,) phases of the strand patterns.
        moderator_band: (angle on the septum from x, fraction of the LV length below the base, radius) or None.
        groove_fat: extra epicardial fat in the atrioventricular groove.
        fat_waves: smooth variation (mm) of the epicardial fat thickness.
        pericardium: pericardial thickness.
        pericardial_fat: mean thickness of the fat outside the pericardium (negative: patchy).
        pericardial_fat_waves: smooth variation (mm) of that thickness.
        coronary_radius: radius of the arteries in the atrioventricular groove.
    """

    warp: ShearWarp
    lv_trabeculae_depth: float
    rv_trabeculae_depth: float
    lv_trabeculae_count: int
    rv_trabeculae_count: int
    trabeculae_phases: np.ndarray
    moderator_band: tuple[float, float, float] | None
    groove_fat: float
    fat_waves: PlaneWaves
    pericardium: float
    pericardial_fat: float
    pericardial_fat_waves: PlaneWaves
    coronary_radius: float

    @property
    def reach(self) -> np.ndarray:
        """(3,) largest distance (mm) along x, y, z from the classic heart box at which the beating heart has tissue."""
        return self.warp.reach + DISTANCE_SAFETY * (MAX_EPIFAT_MM + self.groove_fat + self.fat_waves.bound)

    @property
    def sac_reach(self) -> np.ndarray:
        """(3,) largest distance (mm) along x, y, z from the classic heart's box at which the sac has tissue."""
        outer = MAX_EPIFAT_MM + self.groove_fat + self.fat_waves.bound + self.pericardium
        outer += max(0.0, self.pericardial_fat) + self.pericardial_fat_waves.bound
        return self.warp.reach + DISTANCE_SAFETY * outer


def sample_heart_detail(rng: np.random.Generator) -> HeartDetail:
    """Draw one subject's warp, trabeculae, fat and pericardium."""
    return HeartDetail(
        warp=sample_shear_warp(rng, float(rng.uniform(2.0, 6.0)), (70.0, 180.0)),
        lv_trabeculae_depth=float(rng.uniform(1.0, 3.5)),
        rv_trabeculae_depth=float(rng.uniform(2.0, 5.0)),
        lv_trabeculae_count=int(rng.integers(6, 14)),
        rv_trabeculae_count=int(rng.integers(6, 12)),
        trabeculae_phases=rng.uniform(0, 2 * np.pi, 4),
        moderator_band=(
            (float(rng.uniform(-0.3, 0.3)), float(rng.uniform(0.55, 0.75)), float(rng.uniform(1.5, 3.0)))
            if rng.uniform() < 0.7
            else None
        ),
        groove_fat=float(rng.uniform(2.0, 8.0)),
        fat_waves=sample_plane_waves(rng, 4, (40.0, 120.0), float(rng.uniform(0.5, 3.0))),
        pericardium=float(rng.uniform(1.0, 2.5)),
        pericardial_fat=float(rng.uniform(-6.0, 10.0)),
        pericardial_fat_waves=sample_plane_waves(rng, 4, (60.0, 160.0), float(rng.uniform(2.0, 8.0))),
        coronary_radius=float(rng.uniform(1.2, 2.2)),
    )


def ellipsoid_distance(points: np.ndarray, centre: tuple[float, ...], axes: tuple[float, ...]) -> np.ndarray:
    """Signed distance (mm, < 0 inside) of points (3, N) to an ellipsoid surface, to first order: (L - 1) / |grad L|.

    Exact on the surface and close within a few mm of it, which is where fat and pericardium are drawn.
    """
    rel = [(points[axis] - np.float32(centre[axis])) / np.float32(axes[axis]) for axis in range(3)]
    level = rel[0] * rel[0] + rel[1] * rel[1] + rel[2] * rel[2]
    gradient = sum((r / np.float32(a)) ** 2 for r, a in zip(rel, axes))
    return (level - 1.0) / (2.0 * np.sqrt(gradient) + np.float32(1e-6))


def distance_to_heart(points: np.ndarray, f: HeartFrame) -> np.ndarray:
    """Approximate signed distance (mm) of points (3, N) to the outer surface of the heart -> (N,) float32.

    The ventricles are the LV epicardium and the outer RV wall cut at the AV plane (z = 0), the atria their outer walls;
    the distance to a union is the minimum, to a cut shape the maximum of the shape's and the plane's distances.
    """
    lv = ellipsoid_distance(points, (0.0, 0.0, -f.lv_cut), (f.epi_radius, f.epi_radius, f.epi_long))
    rv = ellipsoid_distance(points, f.rv_centre, tuple(a + f.rv_wall for a in f.rv_axes))
    ventricles = np.maximum(np.minimum(lv, rv), points[2])
    la = ellipsoid_distance(points, f.la_centre, tuple(a + f.atrial_wall for a in f.la_axes))
    ra = ellipsoid_distance(points, f.ra_centre, tuple(a + f.atrial_wall for a in f.ra_axes))
    atria = np.maximum(np.minimum(la, ra), -points[2])
    return np.minimum(ventricles, atria)


def detailed_heart_tissue(points: np.ndarray, f: HeartFrame, detail: HeartDetail) -> np.ndarray:
    """Tissue of (already warped) heart-frame points at one frame: the classic heart, trabeculae, epicardial fat
    and the coronary arteries in the atrioventricular groove.

    Args:
        points: (3, N) float32 heart-frame coordinates (mm).

    Returns:
        (N,) uint8 tissue codes; :data:`Tissue.AIR` outside the heart and its epicardial fat.
    """
    tissue = heart_tissue(points, f)
    lv = np.flatnonzero(tissue == Tissue.LV_BLOOD)
    tissue[lv[lv_trabeculae(points[:, lv], f, detail)]] = Tissue.LV_TRABECULAE
    rv = np.flatnonzero(tissue == Tissue.RV_BLOOD)
    tissue[rv[rv_trabeculae(points[:, rv], f, detail)]] = Tissue.RV_TRABECULAE
    outside = np.flatnonzero((tissue == Tissue.AIR) | (tissue == Tissue.EPICARDIAL_FAT))
    if len(outside):
        around = points[:, outside]
        distance = distance_to_heart(around, f)
        fat = distance < epicardial_thickness(around, f, detail)
        tissue[outside] = np.where(fat, Tissue.EPICARDIAL_FAT, Tissue.AIR)
        # the circumflex and right coronary arteries run in the groove around the base, just outside the ventricles
        rho = np.sqrt(around[0] ** 2 + around[1] ** 2)
        ring = (rho - f.epi_radius - 4.0) ** 2 + (around[2] + 2.0) ** 2 < detail.coronary_radius**2
        tissue[outside[ring & fat & (distance > 0.5)]] = Tissue.VESSEL
    return tissue


def epicardial_thickness(points: np.ndarray, f: HeartFrame, detail: HeartDetail) -> np.ndarray:
    """Epicardial fat thickness (mm) at points (3, N): thickest in the atrioventricular groove (z ~ 0) -> (N,)."""
    groove = detail.groove_fat * np.exp(-((points[2] / 12.0) ** 2))
    return np.maximum(f.epifat + groove + detail.fat_waves(points), 0.5)


def pericardial_sac(points: np.ndarray, f: HeartFrame, detail: HeartDetail) -> np.ndarray:
    """Static tissue of the sac around the heart at points (3, N) (warped ED heart frame) -> (N,) uint8.

    The sac hardly moves over the cycle (the heart's total volume is nearly constant), so it is drawn once from the
    end-diastolic heart: inside it epicardial fat (what shows where the beating heart withdraws), then the
    pericardium, then pericardial fat; :data:`Tissue.AIR` beyond.
    """
    distance = distance_to_heart(points, f)
    inner = epicardial_thickness(points, f, detail)
    pericardium = inner + detail.pericardium
    outer = pericardium + np.maximum(detail.pericardial_fat + detail.pericardial_fat_waves(points), 0.0)
    tissue = np.zeros(points.shape[1], dtype=np.uint8)
    tissue[distance < outer] = Tissue.PERICARDIAL_FAT
    tissue[distance < pericardium] = Tissue.PERICARDIUM
    tissue[distance < inner] = Tissue.EPICARDIAL_FAT
    return tissue


def lv_trabeculae(points: np.ndarray, f: HeartFrame, detail: HeartDetail) -> np.ndarray:
    """Which LV blood points (3, N) are trabeculae: longitudinal strands of varying reach along the wall -> (N,) bool.

    Strands are drawn in the cavity's normalised coordinates, so they move and shorten with the wall; they reach
    deeper towards the apex, where real LVs are most trabeculated.
    """
    x, y, z = points
    length = f.lv_cut + f.lv_long
    normalised = np.sqrt((x * x + y * y) / f.lv_radius**2 + (z + f.lv_cut) ** 2 / f.lv_long**2)
    depth = (1.0 - normalised) * f.lv_radius  # ~ mm from the endocardium
    apical = np.clip(-z / length, 0.0, 1.0)
    near = depth < detail.lv_trabeculae_depth * (0.3 + apical)
    strands = np.zeros(len(x), dtype=bool)
    if near.any():
        angle = np.arctan2(y[near], x[near])
        z_near = z[near] / np.float32(length)
        phase = detail.trabeculae_phases
        ridge = np.cos(detail.lv_trabeculae_count * angle + 3.0 * z_near + phase[0])
        reach = 0.55 + 0.45 * np.cos(9.0 * z_near + 3 * angle + phase[1])
        strands[near] = (ridge > 0.8) & (depth[near] < detail.lv_trabeculae_depth * (0.3 + apical[near]) * reach)
    return strands


def rv_trabeculae(points: np.ndarray, f: HeartFrame, detail: HeartDetail) -> np.ndarray:
    """Which RV blood points (3, N) are trabeculae along the free wall or the moderator band -> (N,) bool."""
    level = ellipsoid_level(points, f.rv_centre, f.rv_axes)
    depth = (1.0 - np.sqrt(level)) * min(f.rv_axes)
    near = depth < detail.rv_trabeculae_depth
    strands = np.zeros(points.shape[1], dtype=bool)
    if near.any():
        x, y, z = (points[axis, near] - f.rv_centre[axis] for axis in range(3))
        angle = np.arctan2(y, x)
        z_norm = z / np.float32(f.rv_axes[2])
        phase = detail.trabeculae_phases
        ridge = np.cos(detail.rv_trabeculae_count * angle + 4.0 * z_norm + phase[2])
        reach = 0.5 + 0.5 * np.cos(7.0 * z_norm + 2 * angle + phase[3])
        strands[near] = (ridge > 0.7) & (depth[near] < detail.rv_trabeculae_depth * reach)
    if detail.moderator_band is not None:
        strands |= moderator_band(points, f, detail.moderator_band)
    return strands


def moderator_band(points: np.ndarray, f: HeartFrame, band: tuple[float, float, float]) -> np.ndarray:
    """Points (3, N) within the band's radius of the segment from the septum to the RV free wall -> (N,) bool.

    The band leaves the LV epicardium at ``band[1]`` of the LV length below the base and crosses the RV along x.
    """
    angle, depth_fraction, radius = band
    z = -depth_fraction * (f.lv_cut + f.epi_long)
    septal = np.array([f.epi_radius * np.cos(angle), f.epi_radius * np.sin(angle), z])
    height = (z - f.rv_centre[2]) / f.rv_axes[2]
    if abs(height) >= 0.95:
        return np.zeros(points.shape[1], dtype=bool)
    free_wall = np.array(f.rv_centre) + np.array([f.rv_axes[0], 0.3 * f.rv_axes[1], 0.0]) * np.sqrt(1 - height**2)
    free_wall[2] = z
    segment = free_wall - septal
    rel = points - septal[:, None].astype(np.float32)
    along = np.clip((segment @ rel) / float(segment @ segment), 0.0, 1.0)
    distance2 = np.sum((rel - along * segment[:, None].astype(np.float32)) ** 2, axis=0)
    return distance2 < radius**2
