"""What real chest scans show around the heart beyond the classic body (the "wide" variety), in world mm.

A smooth random warp of the whole body; subcutaneous fat of varying thickness; ribs under the chest wall; a domed
diaphragm with the liver (and its veins) under the heart and the stomach (fluid and gas) and spleen on the left;
vertebral bodies with marrow and discs and the muscles beside them; vessels in the lungs; fat in the mediastinum;
breasts and arms in some subjects. Lung and liver vessels are where two smooth random fields are both near zero,
which draws a network of branching tubes without a vessel tree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from scripts.synthetic_body import Body, body_tissue
from scripts.synthetic_geometry import PlaneWaves, ShearWarp, ellipsoid_level, sample_plane_waves, sample_shear_warp
from scripts.synthetic_heart import Heart
from scripts.synthetic_tissues import Tissue

Ellipsoid = tuple[tuple[float, float, float], tuple[float, float, float]]


@dataclass(frozen=True)
class Arm:
    """An arm beside the torso: an elliptic cylinder along world z with skin fat, muscle and the humerus (mm)."""

    centre_xy: tuple[float, float]
    semi_axes_xy: tuple[float, float]
    fat: float
    bone_radius: float


@dataclass(frozen=True)
class BodyDetail:
    """Per-subject parameters of the detailed body (world mm).

    Attributes:
        warp: volume-preserving warp applied to world points before any tissue is looked up.
        extra_fat, fat_waves: subcutaneous fat is thicker by ``max(0, extra_fat + fat_waves)``.
        rib_period, rib_slope, rib_phase, rib_depth: ribs every ``rib_period`` mm along z, sloping down anteriorly by
            ``rib_slope`` mm, ``rib_depth`` mm deep under the chest wall muscle.
        diaphragm: dome (x, y, z) and curvature (1/mm): the diaphragm surface is
            ``z = dome_z - curvature * ((x - dome_x)^2 + 0.5 (y - dome_y)^2)``.
        stomach: ellipsoid, wall thickness and the height of the gas-fluid level (gas above).
        spleen: ellipsoid.
        disc_period, disc_thickness, disc_phase: intervertebral discs along z.
        lung_vessels, liver_vessels: two fields each and the half-width of their common zero band.
        mediastinal_fat: field and threshold above which mediastinal soft tissue is fat.
        breasts: zero or two ellipsoids; gland: field of the glandular tissue within them.
        arms: zero or two arms.
    """

    warp: ShearWarp
    extra_fat: float
    fat_waves: PlaneWaves
    rib_period: float
    rib_slope: float
    rib_phase: float
    rib_depth: float
    diaphragm: tuple[float, float, float, float]
    stomach: tuple[Ellipsoid, float, float]
    spleen: Ellipsoid
    disc_period: float
    disc_thickness: float
    disc_phase: float
    lung_vessels: tuple[PlaneWaves, PlaneWaves, float]
    liver_vessels: tuple[PlaneWaves, PlaneWaves, float]
    mediastinal_fat: tuple[PlaneWaves, float]
    breasts: tuple[Ellipsoid, ...]
    gland: PlaneWaves
    arms: tuple[Arm, ...]

    def diaphragm_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """World z (mm) of the diaphragm above points with world x, y (N,) -> (N,)."""
        dome_x, dome_y, dome_z, curvature = self.diaphragm
        return dome_z - curvature * ((x - dome_x) ** 2 + 0.5 * (y - dome_y) ** 2)


def heart_bottom(heart: Heart) -> np.ndarray:
    """World point (3,) mm of the lowest ventricular surface at end-diastole (the diaphragmatic wall)."""
    f = heart.frames[0]
    polar, azimuth = np.meshgrid(np.linspace(0, np.pi, 19), np.linspace(0, 2 * np.pi, 37), indexing="ij")
    sphere = np.stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], -1)
    lv = sphere.reshape(-1, 3) * [f.epi_radius, f.epi_radius, f.epi_long] + [0.0, 0.0, -f.lv_cut]
    rv = sphere.reshape(-1, 3) * (np.array(f.rv_axes) + f.rv_wall) + np.array(f.rv_centre)
    surface = np.concatenate([lv, rv])
    world = heart.to_world(surface[surface[:, 2] <= 0.0])
    return world[np.argmin(world[:, 2])]


def sample_wide_body(rng: np.random.Generator, body: Body, heart: Heart) -> tuple[Body, BodyDetail]:
    """Detail for a classic body: the liver moved under the diaphragm, which lies just under the heart."""
    cx, cy = body.centre_xy
    a, b = body.semi_axes_xy
    bottom = heart_bottom(heart)
    # the right dome sits under the right heart, a little higher than the left one
    diaphragm = (float(bottom[0] - rng.uniform(20, 60)), float(bottom[1]), float(bottom[2] - rng.uniform(0, 10)))
    curvature = float(rng.uniform(0.0012, 0.003))
    liver_axes = (0.7 * a, 0.75 * b, float(rng.uniform(90, 120)))
    liver_xy = np.array([cx - 0.3 * a, cy - 0.05 * b])
    dome_drop = curvature * ((liver_xy[0] - diaphragm[0]) ** 2 + 0.5 * (liver_xy[1] - diaphragm[1]) ** 2)
    liver_top = diaphragm[2] - dome_drop - rng.uniform(0, 5)
    body = replace(body, liver=((float(liver_xy[0]), float(liver_xy[1]), float(liver_top - liver_axes[2])), liver_axes))

    def below_dome(x: float, y: float, axes: tuple[float, float, float], gap: float) -> tuple[float, float, float]:
        top = diaphragm[2] - curvature * ((x - diaphragm[0]) ** 2 + 0.5 * (y - diaphragm[1]) ** 2) - gap
        return (float(x), float(y), float(top - axes[2]))

    stomach_axes = (float(rng.uniform(40, 65)), float(rng.uniform(35, 55)), float(rng.uniform(45, 70)))
    stomach_centre = below_dome(cx + rng.uniform(0.2, 0.45) * a, cy + rng.uniform(-0.1, 0.35) * b, stomach_axes, 3.0)
    gas_level = stomach_centre[2] + stomach_axes[2] * (rng.uniform(0.3, 0.8) if rng.uniform() < 0.6 else 2.0)
    spleen_axes = (float(rng.uniform(20, 35)), float(rng.uniform(40, 60)), float(rng.uniform(40, 60)))
    spleen_centre = below_dome(cx + rng.uniform(0.5, 0.65) * a, cy - rng.uniform(0.15, 0.45) * b, spleen_axes, 5.0)
    detail = BodyDetail(
        warp=sample_shear_warp(rng, float(rng.uniform(3.0, 10.0)), (100.0, 300.0)),
        extra_fat=float(rng.uniform(-5.0, 15.0)),
        fat_waves=sample_plane_waves(rng, 4, (60.0, 250.0), float(rng.uniform(3.0, 10.0))),
        rib_period=float(rng.uniform(24, 34)),
        rib_slope=float(rng.uniform(20, 50)),
        rib_phase=float(rng.uniform(0, 2 * np.pi)),
        rib_depth=float(rng.uniform(6, 10)),
        diaphragm=(*diaphragm, curvature),
        stomach=((stomach_centre, stomach_axes), float(rng.uniform(3, 5)), float(gas_level)),
        spleen=(spleen_centre, spleen_axes),
        disc_period=float(rng.uniform(26, 32)),
        disc_thickness=float(rng.uniform(5, 8)),
        disc_phase=float(rng.uniform(0, 2 * np.pi)),
        lung_vessels=(
            *(sample_plane_waves(rng, 4, (20.0, 70.0), 1.0) for _ in range(2)),
            float(rng.uniform(0.06, 0.1)),
        ),
        liver_vessels=(
            *(sample_plane_waves(rng, 4, (30.0, 90.0), 1.0) for _ in range(2)),
            float(rng.uniform(0.04, 0.07)),
        ),
        mediastinal_fat=(sample_plane_waves(rng, 4, (30.0, 100.0), 1.0), float(rng.uniform(-0.1, 0.35))),
        breasts=sample_breasts(rng, body, heart) if rng.uniform() < 0.45 else (),
        gland=sample_plane_waves(rng, 5, (10.0, 40.0), 1.0),
        arms=sample_arms(rng, body) if rng.uniform() < 0.75 else (),
    )
    return body, detail


def sample_breasts(rng: np.random.Generator, body: Body, heart: Heart) -> tuple[Ellipsoid, ...]:
    """Two ellipsoids on the anterior chest wall at the level of the heart."""
    cx, cy = body.centre_xy
    a, b = body.semi_axes_xy
    level = float(heart.to_world(np.array([0.0, 0.0, -40.0]))[2] + rng.uniform(-60, 10))
    axes = (float(rng.uniform(45, 70)), float(rng.uniform(25, 65)), float(rng.uniform(45, 65)))
    breasts = []
    for side in (-1.0, 1.0):
        x = cx + side * rng.uniform(55, 95)
        surface_y = cy + b * np.sqrt(max(0.0, 1.0 - ((x - cx) / a) ** 2))
        breasts.append(((float(x), float(surface_y + rng.uniform(-10, 5)), level), axes))
    return tuple(breasts)


def sample_arms(rng: np.random.Generator, body: Body) -> tuple[Arm, ...]:
    """Two arms lying beside the torso."""
    cx, cy = body.centre_xy
    a, _ = body.semi_axes_xy
    arms = []
    for side in (-1.0, 1.0):
        semi = (float(rng.uniform(38, 52)), float(rng.uniform(42, 58)))
        x = cx + side * (a + rng.uniform(5, 50) + semi[0])
        arms.append(Arm((float(x), float(cy + rng.uniform(-40, 20))), semi, float(rng.uniform(4, 15)), 11.0))
    return tuple(arms)


def detailed_body_tissue(points: np.ndarray, body: Body, detail: BodyDetail) -> np.ndarray:
    """Tissue of world points (3, N) mm in the detailed static anatomy (no heart) -> (N,) uint8.

    The classic body on warped points, then, painted over it: thicker subcutaneous fat, ribs, the abdomen under the
    diaphragm, vessels, mediastinal fat, the spine's marrow and discs, and outside the torso breasts and arms.
    """
    warped = detail.warp(points)
    tissue = body_tissue(warped, body)
    x, y = warped[0] - body.centre_xy[0], warped[1] - body.centre_xy[1]
    a, b = body.semi_axes_xy
    radius = np.sqrt(x * x + y * y)
    # depth below the skin along the ray from the torso axis (mm; negative outside the torso)
    depth = radius * (1.0 / np.sqrt((x / a) ** 2 + (y / b) ** 2 + np.float32(1e-9)) - 1.0)
    paint_chest_wall(tissue, warped, depth, body, detail)
    paint_abdomen(tissue, warped, depth, body, detail)
    paint_vessels_and_fat(tissue, warped, detail)
    paint_spine(tissue, warped, depth, body, detail)
    outside = np.flatnonzero(tissue == Tissue.AIR)
    tissue[outside] = limbs_and_breasts(warped[:, outside], detail)
    return tissue


def paint_chest_wall(tissue: np.ndarray, points: np.ndarray, depth: np.ndarray, body: Body, detail: BodyDetail) -> None:
    """Thicker subcutaneous fat where the fat field says so; ribs (bone around marrow) in intercostal muscle under the
    chest wall muscle. In place."""
    muscle = np.flatnonzero(tissue == Tissue.MUSCLE)
    extra = np.maximum(detail.extra_fat + detail.fat_waves(points[:, muscle]), 0.0)
    tissue[muscle[depth[muscle] < body.fat_thickness + extra]] = Tissue.FAT
    wall = body.fat_thickness + body.muscle_thickness
    band = np.flatnonzero((depth > wall) & (depth < wall + detail.rib_depth))
    band = band[np.isin(tissue[band], (Tissue.SOFT_TISSUE, Tissue.LUNG, Tissue.MUSCLE))]
    x, y = points[0, band] - body.centre_xy[0], points[1, band] - body.centre_xy[1]
    anterior = y / np.sqrt(x * x + y * y + np.float32(1e-6))  # ribs slope down towards the sternum
    rib = np.cos(2 * np.pi * (points[2, band] + detail.rib_slope * anterior) / detail.rib_period + detail.rib_phase)
    centre_depth = np.abs(depth[band] - wall - 0.5 * detail.rib_depth) / (0.5 * detail.rib_depth)
    tissue[band] = Tissue.MUSCLE  # intercostal muscle: the lung meets a smooth wall, not the gaps between ribs
    tissue[band[rib > 0.6]] = Tissue.BONE
    tissue[band[(rib > 0.8) & (centre_depth < 0.5)]] = Tissue.MARROW


def paint_abdomen(tissue: np.ndarray, points: np.ndarray, depth: np.ndarray, body: Body, detail: BodyDetail) -> None:
    """Under the diaphragm no lung but abdominal soft tissue, the stomach (wall, fluid, gas) and spleen. In place."""
    interior = depth > body.fat_thickness + body.muscle_thickness
    below = np.flatnonzero(interior & (points[2] < detail.diaphragm_height(points[0], points[1])))
    below = below[np.isin(tissue[below], (Tissue.SOFT_TISSUE, Tissue.LUNG))]
    tissue[below] = Tissue.SOFT_TISSUE
    inner = points[:, below]
    tissue[below[ellipsoid_level(inner, *detail.spleen) < 1.0]] = Tissue.SPLEEN
    (centre, axes), wall, gas_level = detail.stomach
    tissue[below[ellipsoid_level(inner, centre, axes) < 1.0]] = Tissue.STOMACH_WALL
    lumen = ellipsoid_level(inner, centre, tuple(axis - wall for axis in axes)) < 1.0
    tissue[below[lumen]] = Tissue.GASTRIC_CONTENT
    tissue[below[lumen & (inner[2] > gas_level)]] = Tissue.AIR


def paint_vessels_and_fat(tissue: np.ndarray, points: np.ndarray, detail: BodyDetail) -> None:
    """Vessels in the lungs and liver (where two fields are both near zero) and mediastinal fat. In place."""
    for organ, (first, second, width), vessel in (
        (Tissue.LUNG, detail.lung_vessels, Tissue.LUNG_VESSEL),
        (Tissue.LIVER, detail.liver_vessels, Tissue.VESSEL),
    ):
        inside = np.flatnonzero(tissue == organ)
        near = inside[np.abs(first(points[:, inside])) < width]
        tissue[near[np.abs(second(points[:, near])) < width]] = vessel
    field, threshold = detail.mediastinal_fat
    soft = np.flatnonzero(tissue == Tissue.SOFT_TISSUE)
    tissue[soft[field(points[:, soft]) > threshold]] = Tissue.FAT


def paint_spine(tissue: np.ndarray, points: np.ndarray, depth: np.ndarray, body: Body, detail: BodyDetail) -> None:
    """Vertebral bodies (cortex around marrow) with discs, and the paraspinal muscles behind them. In place."""
    sx, sy = points[0] - body.spine_xy[0], points[1] - body.spine_xy[1]
    r2 = sx * sx + sy * sy
    vertebra = np.flatnonzero(tissue == Tissue.BONE)
    vertebra = vertebra[r2[vertebra] < body.spine_radius**2]
    disc = np.cos(2 * np.pi * points[2, vertebra] / detail.disc_period + detail.disc_phase)
    tissue[vertebra[r2[vertebra] < (body.spine_radius - 2.5) ** 2]] = Tissue.MARROW
    tissue[vertebra[disc > np.cos(np.pi * detail.disc_thickness / detail.disc_period)]] = Tissue.DISC
    replaceable = np.isin(tissue, (Tissue.SOFT_TISSUE, Tissue.LUNG, Tissue.FAT)) & (depth > body.fat_thickness)
    for side in (-1.0, 1.0):
        muscle = ((sx - side * 32.0) / 26.0) ** 2 + ((sy + 32.0) / 22.0) ** 2 < 1.0
        tissue[muscle & replaceable] = Tissue.MUSCLE


def limbs_and_breasts(points: np.ndarray, detail: BodyDetail) -> np.ndarray:
    """Tissue of points (3, N) outside the torso: breasts (fat around glandular tissue), arms, else air -> (N,)."""
    tissue = np.zeros(points.shape[1], dtype=np.uint8)
    for centre, axes in detail.breasts:
        level = ellipsoid_level(points, centre, axes)
        tissue[level < 1.0] = Tissue.FAT
        gland = np.flatnonzero(level < 0.5)
        tissue[gland[detail.gland(points[:, gland]) > 0.1]] = Tissue.BREAST_GLAND
    for arm in detail.arms:
        x, y = points[0] - arm.centre_xy[0], points[1] - arm.centre_xy[1]
        (ax, ay), fat = arm.semi_axes_xy, arm.fat
        tissue[(x / ax) ** 2 + (y / ay) ** 2 < 1.0] = Tissue.FAT
        tissue[(x / (ax - fat)) ** 2 + (y / (ay - fat)) ** 2 < 1.0] = Tissue.MUSCLE
        r2 = (x - 0.1 * ax) ** 2 + y * y
        tissue[r2 < arm.bone_radius**2] = Tissue.BONE
        tissue[r2 < (arm.bone_radius - 3.0) ** 2] = Tissue.MARROW
    return tissue
