"""Static anatomy of the synthetic cohort around the heart: torso, lungs, liver, spine and great vessels (world mm).

The classic body is an elliptic cylinder torso with a fat and a muscle layer, ellipsoid lungs and liver, a round spine
and tubes for the great vessels; :mod:`scripts.synthetic_body_detail` adds what real scans show besides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scripts.synthetic_geometry import Tube, ellipsoid_level, tube_mask, unit
from scripts.synthetic_heart import Heart
from scripts.synthetic_tissues import Tissue


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


def body_tissue(points: np.ndarray, body: Body) -> np.ndarray:
    """Tissue of world points (3, N) mm in the static anatomy (no heart), painted outside-in -> (N,) uint8."""
    x, y = points[0] - body.centre_xy[0], points[1] - body.centre_xy[1]
    a, b = body.semi_axes_xy

    def inside_torso(shrink: float) -> np.ndarray:
        return (x / (a - shrink)) ** 2 + (y / (b - shrink)) ** 2 < 1.0

    tissue = np.zeros(points.shape[1], dtype=np.uint8)
    tissue[inside_torso(0.0)] = Tissue.FAT
    tissue[inside_torso(body.fat_thickness)] = Tissue.MUSCLE
    interior = inside_torso(body.fat_thickness + body.muscle_thickness)
    tissue[interior] = Tissue.SOFT_TISSUE
    for centre, axes in body.lungs:
        tissue[interior & (ellipsoid_level(points, centre, axes) < 1.0)] = Tissue.LUNG
    tissue[interior & (ellipsoid_level(points, *body.liver) < 1.0)] = Tissue.LIVER
    sx, sy = points[0] - body.spine_xy[0], points[1] - body.spine_xy[1]
    tissue[sx * sx + sy * sy < body.spine_radius**2] = Tissue.BONE
    cx, cy = points[0] - body.canal_xy[0], points[1] - body.canal_xy[1]
    tissue[cx * cx + cy * cy < 49.0] = Tissue.CSF
    for vessel in body.vessels:
        tissue[tube_mask(points, vessel)] = Tissue.VESSEL
    return tissue


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
