"""Quality control of a subject's segmentations: flags a cardiologist can check, each with its view and its numbers.

:func:`quality_control` reads the per-plane segmentations as inference writes them (each in its own plane's grid and
affine) and their volume curves, and returns one flag ``{"view", "check", "reason"}`` per problem found; an empty
list means every check ran and passed. A check that cannot run because its view is missing is never silent: the
missing plane is flagged with the values and checks it leaves out.

Checks (``check``):

- ``missing_plane``: a plane of :data:`scripts.labels.ALL_PLANE_FILES` is not in the input.
- ``geometry``: a plane file with an identity affine, or planes sharing one affine (no scanner geometry).
- ``sa_coverage``: no LV blood pool in the SA stack; at end-diastole LV on the basal- or apical-most slice while the
  LA views label LV beyond the stack (without LA views: LV there over a large share of the largest slice's area): the
  stack may stop short of the base or apex; slices without LV between slices with it (slices missing from the
  segmentation).
- ``sa_la_agreement``: every LA plane crosses every SA slice along a line in world coordinates; the labels of both
  sampled along that line, at every frame, must agree. Dice per LA view (over its lines) and per SA slice (over the
  views' lines) below a threshold flags that view or those slices (a plane shifted, from another subject, labels
  missing on a slice).
- ``view_identity``: the 2-chamber plane crosses more of the SA stack's RV than the 4-chamber plane (the two files
  swapped), or the 4-chamber plane crosses almost none; a long-axis plane nearly parallel to the SA slices (an SA
  slice saved as a long-axis view).
- ``lv_ring``: in SA at end-diastole the LV blood pool is ringed by LV myocardium and the RV is not; LV and RV labels
  swapped reverse that.
- ``myocardial_drift``: the LV myocardial volume, incompressible tissue, departs from its median over the cycle by
  more than 10 %.
- ``ejections``: the LV volume curve has more than one ejection (more than one deep trough over the cycle).
- ``phase_signal``: the LV volume curve and the LV blood-pool signal of the SA images within the model's LV region
  (:mod:`scripts.blood_pool_signal`, where the phases are read) disagree over the cycle: the segmentation does not
  follow the blood pool the images show, so the phases, volumes and EF are uncertain.
- ``plausibility``: a measured phenotype outside wide plausibility bounds (:data:`PLAUSIBLE_RANGES`), or left empty
  although its views are present.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from scipy.ndimage import binary_dilation
from scipy.signal import find_peaks

from scripts.frames import nearest_cyclic_frames
from scripts.geometry import plane_axes, sa_slice_order, voxel_to_world, world_to_voxel
from scripts.labels import ALL_PLANE_FILES, CLASS_NAMES, LA_PLANES, PHENOTYPE_UNITS, SA_PLANE
from scripts.measures import (
    LVBP,
    LVMYO,
    PHENOTYPE_CLASSES,
    RVBP,
    phenotypes_from_volumes,
    pixel_spacing_mm,
    volume_curves_from_segmentations,
)
from scripts.phases import smooth_cyclic

#: a flag: ``{"view": plane stem or "subject", "check": a check name, "reason": what was measured and why it fails}``
Flag = dict[str, str]
#: the per-plane segmentations QC reads: file stem -> (labels (X, Y, S, T), affine (4, 4) voxel -> world mm)
Planes = Mapping[str, tuple[np.ndarray, np.ndarray]]

#: how far (mm) the LV of the LA views may reach beyond the SA stack's outer slice edge (about a pixel: the LV outline
#: drawn in another plane) before the stack is taken to stop short of the base or apex
MAX_LV_BEYOND_STACK_MM = 2.0
#: without LA views: an end slice of the SA stack whose LV area at ED is at least this share of the largest slice's
#: means the stack may stop inside the ventricle (the basal slice of a complete stack can hold a large, oblique LV)
MAX_END_SLICE_LV_SHARE = 0.35
#: least Dice of an LA view's labels against the SA stack's along all their intersection lines
MIN_VIEW_DICE = 0.75
#: least Dice of an SA slice's labels against the LA views' along its intersection lines with them
MIN_SLICE_DICE = 0.3
#: an SA slice enters the per-slice agreement only where its lines hold at least this much labelled heart (mm, mean
#: over frames, the longer of the two segmentations, summed over the LA views): the lines through the apical cap
#: cross a few pixels of myocardium, where a breath-hold offset of a few mm decides the Dice
MIN_SLICE_HEART_MM = 40.0
#: LA and SA planes closer to parallel than this (degrees) cross along no well-defined line
MIN_CROSSING_ANGLE_DEG = 20.0
#: least share of the LV blood pool's outline (its in-plane neighbours outside it) labelled LV myocardium at ED
MIN_LV_RING_MYOCARDIUM = 0.5
#: largest departure of the LV myocardial volume (its curve smoothed as the phases are read) from its median over the
#: cycle, as a share of the median; unsmoothed, the basal ring stepping between thick slices alone moves it ~10 %
MAX_MYOCARDIAL_DRIFT = 0.10
#: a trough of the LV volume curve counts as an ejection when it is at least this share of the curve's range deep
EJECTION_PROMINENCE = 0.3
#: least correlation over the cycle of the LV volume curve with the LV blood-pool signal (both smoothed as the phases
#: are read); the two follow the same blood pool where the segmentation tracks it
MIN_PHASE_SIGNAL_CORRELATION = 0.5
#: least RV length (mm, summed over the SA slices holding LV, at ED) a 4-chamber plane crosses
MIN_RV_CROSSED_4CH_MM = 10.0
#: a long-axis plane within this angle (deg) of parallel to the SA slices is flagged: long-axis views planned on the
#: SA stack lie near 90 deg from it, pilots planned on localisers within some 20 deg of that
MAX_LA_TO_SA_DEG = 30.0
#: Wide plausibility bounds (inclusive, in :data:`scripts.labels.PHENOTYPE_UNITS`) of adult phenotypes measured the
#: UK Biobank way. They are not normal ranges: the normal ranges of Petersen et al., "Reference ranges for cardiac
#: structure and function using cardiovascular magnetic resonance (CMR) in Caucasians from the UK Biobank population
#: cohort", J Cardiovasc Magn Reson 2017;19:18, lie well inside them, and dilated, hypertrophied or failing hearts do
#: too; a value outside them is a segmentation to look at, not a disease.
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "LVEDV": (30.0, 450.0),
    "LVESV": (5.0, 400.0),
    "LVEF": (5.0, 85.0),
    "LVM": (30.0, 350.0),
    "RVEDV": (30.0, 500.0),
    "RVESV": (5.0, 450.0),
    "RVEF": (5.0, 85.0),
    "LAVmax": (10.0, 250.0),
    "RAVmax": (10.0, 300.0),
}


def flag(view: str, check: str, reason: str) -> Flag:
    """One QC flag."""
    return {"view": view, "check": check, "reason": reason}


def missing_plane_flags(planes: Planes) -> list[Flag]:
    """A flag per plane of :data:`ALL_PLANE_FILES` absent from ``planes``, naming the phenotypes it leaves empty and
    the checks it leaves out."""
    measured_by = {
        SA_PLANE: "LV and RV volumes, EF and LV mass; SA coverage, LV ring, myocardial drift and ejection checks",
        "la_2ch": "the LA biplane volume (single plane from la_4ch); its SA-LA agreement",
        "la_3ch": "its SA-LA agreement",
        "la_4ch": "the RA volumes, the LA biplane volume (single plane from la_2ch); its SA-LA agreement",
    }
    flags = []
    for stem in ALL_PLANE_FILES:
        if stem not in planes:
            reason = f"{stem} is not in the input: not measured or checked: {measured_by[stem]}"
            if stem in ("la_2ch", "la_4ch") and not any(other in planes for other in ("la_2ch", "la_4ch")):
                reason += "; with la_2ch and la_4ch both missing the LA volumes are left empty"
            flags.append(flag(stem, "missing_plane", reason))
    return flags


def end_diastolic_frame(sa_labels: np.ndarray) -> int:
    """The frame of an SA stack (X, Y, S, T) with the most LV blood-pool voxels."""
    return int(np.argmax((sa_labels == LVBP).sum(axis=(0, 1, 2))))


def lv_beyond_stack_mm(planes: Planes, frame: int) -> tuple[float, float] | None:
    """How far (mm) the LV blood pool of the LA views reaches beyond the SA stack's outer slice edges, towards the
    base and towards the apex (negative: it stops that far inside), at SA frame ``frame`` (the LA frame at the same
    point of the cycle); the median over the LA views that label an LV, None where none does."""
    sa_labels, sa_affine = planes[SA_PLANE]
    num_slices, num_frames = sa_labels.shape[2], sa_labels.shape[3]
    slice_spacing_mm = float(np.linalg.norm(sa_affine[:3, 2]))
    base_is_last = sa_slice_order(sa_affine, sa_labels.shape)[0] == num_slices - 1
    reaches = []
    for stem in LA_PLANES:
        if stem not in planes:
            continue
        la_labels, la_affine = planes[stem]
        la_frame = nearest_cyclic_frames(la_labels.shape[3], num_frames)[frame]
        pixels = np.argwhere(la_labels[:, :, 0, la_frame] == LVBP)
        if len(pixels) == 0:
            continue
        # the LV pixels' positions along the stack, in slice units; the stack's slabs span -0.5 to S - 0.5
        depth = world_to_voxel(sa_affine, voxel_to_world(la_affine, np.c_[pixels, np.zeros(len(pixels))]))[:, 2]
        past_last, past_first = (depth.max() - (num_slices - 0.5)), (-0.5 - depth.min())
        reaches.append((past_last, past_first) if base_is_last else (past_first, past_last))
    if not reaches:
        return None
    base, apex = np.median(np.asarray(reaches), axis=0) * slice_spacing_mm
    return float(base), float(apex)


def geometry_flags(planes: Planes) -> list[Flag]:
    """Flags of plane files without scanner geometry: an identity affine (1 mm voxels at the origin, what a file saved
    without its DICOM geometry carries), or planes sharing one affine (their images cannot both lie there). Volumes,
    the heart centre and every cross-plane check then mean nothing."""
    flags = [
        flag(
            stem,
            "geometry",
            f"{stem} has an identity affine (1 mm voxels at the origin): the file carries no scanner geometry, so its "
            "volumes and its place among the other planes are meaningless; convert the study from DICOM "
            "(tools.convert_dicom) or keep the NIfTI header the scanner export wrote",
        )
        for stem, (_, affine) in planes.items()
        if np.allclose(affine, np.eye(4))
    ]
    stems = sorted(planes)
    shared = [(a, b) for i, a in enumerate(stems) for b in stems[i + 1 :] if np.allclose(planes[a][1], planes[b][1])]
    if shared:
        pairs = ", ".join(f"{a} and {b}" for a, b in shared)
        flags.append(flag("subject", "geometry", f"{pairs} share one affine: different planes cannot lie in one place"))
    return flags


def sa_coverage_flags(planes: Planes) -> list[Flag]:
    """SA coverage at ED: no LV in the SA stack at all; the LV cut at the base or apex, where the end slice holds LV
    and the LA views' LV reaches more than :data:`MAX_LV_BEYOND_STACK_MM` beyond the stack (without LA views: the
    end slice holds at least :data:`MAX_END_SLICE_LV_SHARE` of the largest slice's LV area); slices without LV
    between slices with it. Slices are named by their index in ``sa`` and ordered base to apex by
    :func:`scripts.geometry.sa_slice_order`."""
    sa_labels, sa_affine = planes[SA_PLANE]
    if not (sa_labels == LVBP).any():
        return [flag(SA_PLANE, "sa_coverage", "no LV blood pool labelled on any SA slice at any frame")]
    ed = end_diastolic_frame(sa_labels)
    order = sa_slice_order(sa_affine, sa_labels.shape)
    lv_area = (sa_labels[..., ed] == LVBP).sum(axis=(0, 1))[order]  # (S,) pixels, base to apex
    share = lv_area / lv_area.max()
    beyond = lv_beyond_stack_mm(planes, ed)
    flags = []
    for end, position, part in ((0, "basal", "base"), (len(order) - 1, "apical", "apex")):
        if beyond is not None and share[end] > 0 and beyond[end != 0] > MAX_LV_BEYOND_STACK_MM:
            evidence = (
                f"the LA views label LV {beyond[end != 0]:.1f} mm beyond its outer edge (median over the views; flag "
                f"above {MAX_LV_BEYOND_STACK_MM:g} mm)"
            )
        elif beyond is None and share[end] >= MAX_END_SLICE_LV_SHARE:
            evidence = f"no LA view labels an LV to tell how far it reaches (flag at {MAX_END_SLICE_LV_SHARE:.0%})"
        else:
            continue
        flags.append(
            flag(
                SA_PLANE,
                "sa_coverage",
                f"the {position}-most SA slice (index {order[end]}) holds LV blood pool at ED (frame {ed}) over "
                f"{share[end]:.0%} of the largest slice's LV area and {evidence}: the stack may not reach the "
                f"{part}, LV volumes would be underestimated",
            )
        )
    with_lv = np.flatnonzero(lv_area > 0)
    gaps = [order[i] for i in range(with_lv[0], with_lv[-1] + 1) if lv_area[i] == 0]
    if gaps:
        flags.append(
            flag(
                SA_PLANE,
                "sa_coverage",
                f"SA slice(s) {', '.join(map(str, gaps))} hold no LV blood pool at ED (frame {ed}) between slices that "
                "do: slices missing from the segmentation",
            )
        )
    return flags


def plane_normal_and_origin(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normal (3,) of a plane file's slices and the world position (3,) mm of voxel (0, 0, 0)."""
    return plane_axes(affine)[2], affine[:3, 3].astype(float)


def intersection_lines(
    la_affine: np.ndarray, sa_affine: np.ndarray, sa_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The world lines where an LA plane crosses each SA slice: points (S, 3) mm, each the point of its line nearest
    the slice's centre, and their common unit direction (3,); None where the planes are closer to parallel than
    :data:`MIN_CROSSING_ANGLE_DEG`."""
    la_normal, la_point = plane_normal_and_origin(la_affine)
    sa_normal, _ = plane_normal_and_origin(sa_affine)
    direction = np.cross(la_normal, sa_normal)
    if np.linalg.norm(direction) < math.sin(math.radians(MIN_CROSSING_ANGLE_DEG)):
        return None
    direction /= np.linalg.norm(direction)
    num_slices = sa_shape[2]
    centres = voxel_to_world(
        sa_affine,
        np.stack([np.full(num_slices, (sa_shape[0] - 1) / 2), np.full(num_slices, (sa_shape[1] - 1) / 2),
                  np.arange(num_slices, dtype=float)], axis=1),
    )  # fmt: skip
    # each line's point: on the LA plane, on its SA slice, and level with the slice centre along the line
    system = np.stack([la_normal, sa_normal, direction])
    right = np.stack([np.full(num_slices, la_normal @ la_point), centres @ sa_normal, centres @ direction], axis=1)
    return np.linalg.solve(system, right.T).T, direction


def sample_plane(labels: np.ndarray, affine: np.ndarray, world: np.ndarray, slice_index: np.ndarray) -> np.ndarray:
    """Nearest-voxel labels of a plane file (X, Y, S, T) at world points (N, 3) mm lying on slices ``slice_index``
    (N,); (N, T) int, -1 where a point falls outside the slice's grid."""
    voxels = np.rint(world_to_voxel(affine, world)).astype(np.int64)
    inside = np.all((voxels[:, :2] >= 0) & (voxels[:, :2] < np.asarray(labels.shape[:2])), axis=1)
    values = np.full((len(world), labels.shape[3]), -1, dtype=np.int64)
    values[inside] = labels[voxels[inside, 0], voxels[inside, 1], slice_index[inside]]
    return values


def line_samples(
    points: np.ndarray, direction: np.ndarray, sa_shape: tuple[int, ...], sa_affine: np.ndarray, step_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """World points (L x N, 3) mm every ``step_mm`` along L lines (``points`` (L, 3) and their unit ``direction``
    (3,)), N reaching across the whole SA field of view either way, and the line index (L x N,) of each point."""
    reach_mm = float(np.linalg.norm(np.asarray(sa_shape[:2]) * pixel_spacing_mm(sa_affine)))
    offsets = np.arange(-reach_mm, reach_mm + step_mm, step_mm)
    world = (points[:, None, :] + offsets[None, :, None] * direction).reshape(-1, 3)
    return world, np.repeat(np.arange(len(points)), len(offsets))


def intersection_samples(
    sa: tuple[np.ndarray, np.ndarray], la: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """Labels of an SA stack and an LA view at the same world points along their intersection lines, at every SA
    frame (the LA frames mapped onto them by cycle position).

    Args:
        sa: SA labels (X, Y, S, T) and affine (4, 4).
        la: LA labels (X, Y, 1, T') and affine (4, 4).

    Returns:
        SA labels (N, T) and LA labels (N, T) at N points (-1 outside a plane's grid), the SA slice of each point
        (N,), and the spacing of the points along a line (mm); None where the planes do not cross.
    """
    (sa_labels, sa_affine), (la_labels, la_affine) = sa, la
    lines = intersection_lines(la_affine, sa_affine, sa_labels.shape)
    if lines is None:
        return None
    points, direction = lines
    step_mm = 0.5 * min(*pixel_spacing_mm(sa_affine), *pixel_spacing_mm(la_affine))
    world, slice_of_sample = line_samples(points, direction, sa_labels.shape, sa_affine, step_mm)
    on_sa = sample_plane(sa_labels, sa_affine, world, slice_of_sample)
    on_la = sample_plane(la_labels, la_affine, world, np.zeros(len(world), dtype=np.int64))
    on_la = on_la[:, nearest_cyclic_frames(la_labels.shape[3], sa_labels.shape[3])]
    return on_sa, on_la, slice_of_sample, step_mm


def line_agreement(
    sa: tuple[np.ndarray, np.ndarray], la: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Labels of an SA stack and an LA view compared along their intersection lines, at every SA frame (the LA
    frames mapped onto them by cycle position).

    Args:
        sa: SA labels (X, Y, S, T) and affine (4, 4).
        la: LA labels (X, Y, 1, T') and affine (4, 4).

    Returns:
        Per SA slice, each (S,): voxels labelled the same foreground class in both, foreground voxels of the two
        together (Dice = 2 x first / second), and the labelled heart length (mm, mean over frames, the longer of the
        two); None where the planes do not cross.
    """
    sampled = intersection_samples(sa, la)
    if sampled is None:
        return None
    on_sa, on_la, slice_of_sample, step_mm = sampled
    sa_labels = sa[0]
    num_slices = sa_labels.shape[2]
    both = (on_sa >= 0) & (on_la >= 0)  # where the line lies inside both fields of view
    sa_heart, la_heart = both & (on_sa > 0), both & (on_la > 0)
    same = (sa_heart & (on_sa == on_la)).sum(1)
    foreground = sa_heart.sum(1) + la_heart.sum(1)
    heart_mm = np.maximum(sa_heart.sum(1), la_heart.sum(1)) * step_mm / sa_labels.shape[3]
    per_slice = [np.bincount(slice_of_sample, weights=w, minlength=num_slices) for w in (same, foreground, heart_mm)]
    return per_slice[0], per_slice[1], per_slice[2]


def sa_la_agreement_flags(planes: Planes) -> list[Flag]:
    """Flags of LA views whose labels disagree with the SA stack's along their intersection lines (Dice over all
    lines below :data:`MIN_VIEW_DICE`, or no labelled crossing at all), and of SA slices that disagree with the LA
    views (Dice over the views' lines below :data:`MIN_SLICE_DICE`, among slices whose lines cross at least
    :data:`MIN_SLICE_HEART_MM` of heart)."""
    if SA_PLANE not in planes:
        return []
    sa = planes[SA_PLANE]
    flags = []
    # per SA slice, summed over the LA views: same-class voxels, foreground voxels, labelled heart length (mm)
    slice_same, slice_foreground, slice_heart = (np.zeros(sa[0].shape[2]) for _ in range(3))
    for stem in LA_PLANES:
        if stem not in planes:
            continue
        agreement = line_agreement(sa, planes[stem])
        if agreement is None:
            flags.append(flag(stem, "sa_la_agreement", f"{stem} lies parallel to the SA slices: it crosses none"))
            continue
        same, foreground, heart_mm = agreement
        slice_same, slice_foreground, slice_heart = (
            slice_same + same,
            slice_foreground + foreground,
            slice_heart + heart_mm,
        )
        if foreground.sum() == 0:
            flags.append(
                flag(stem, "sa_la_agreement", f"{stem} crosses no labelled heart of the SA stack along its "
                     "intersection lines with the SA slices: it may be from another study or positioned wrongly")
            )  # fmt: skip
            continue
        dice = 2 * same.sum() / foreground.sum()
        if dice < MIN_VIEW_DICE:
            with np.errstate(divide="ignore", invalid="ignore"):
                per_line = np.where(foreground > 0, 2 * same / foreground, np.nan)
            worst = int(np.nanargmin(per_line))
            flags.append(
                flag(
                    stem,
                    "sa_la_agreement",
                    f"{stem} labels agree with the SA stack's along their intersection lines at Dice {dice:.2f} "
                    f"(all frames, {int((foreground > 0).sum())} SA slices; lowest {per_line[worst]:.2f} on slice "
                    f"{worst}), below {MIN_VIEW_DICE}: the view may be shifted, mislabelled or another subject's",
                )
            )
    counted = (slice_heart >= MIN_SLICE_HEART_MM) & (slice_foreground > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        slice_dice = np.where(counted, 2 * slice_same / slice_foreground, np.nan)
    low = np.flatnonzero(counted & (slice_dice < MIN_SLICE_DICE))
    if len(low):
        values = ", ".join(f"{z} ({slice_dice[z]:.2f})" for z in low)
        flags.append(
            flag(
                SA_PLANE,
                "sa_la_agreement",
                f"SA slice(s) {values} agree with the LA views along their intersection lines at Dice below "
                f"{MIN_SLICE_DICE} (all frames): labels missing, shifted or wrong on those slices",
            )
        )
    return flags


def rv_crossed_mm(sa: tuple[np.ndarray, np.ndarray], la_affine: np.ndarray) -> float | None:
    """Length (mm) of RV blood pool of the SA stack's end-diastolic frame along an LA plane's intersection lines with
    its slices holding LV, summed over those slices; None where the planes do not cross or no slice holds LV."""
    sa_labels, sa_affine = sa
    ed = end_diastolic_frame(sa_labels)
    lv_slices = np.flatnonzero((sa_labels[..., ed] == LVBP).any(axis=(0, 1)))
    lines = intersection_lines(la_affine, sa_affine, sa_labels.shape)
    if lines is None or len(lv_slices) == 0:
        return None
    points, direction = lines
    step_mm = 0.5 * min(pixel_spacing_mm(sa_affine))
    world, line = line_samples(points[lv_slices], direction, sa_labels.shape, sa_affine, step_mm)
    on_sa = sample_plane(sa_labels[..., ed : ed + 1], sa_affine, world, lv_slices[line])
    return float((on_sa == RVBP).sum() * step_mm)


def sa_parallel_flags(planes: Planes) -> list[Flag]:
    """Flags of long-axis planes within :data:`MAX_LA_TO_SA_DEG` of parallel to the SA slices: a long-axis view
    contains the LV long axis, which the SA slices cross, so such a plane is an SA slice (or another view) saved
    under a long-axis name, and the atrial volumes measured on it would be wrong."""
    if SA_PLANE not in planes:
        return []
    sa_normal = plane_normal_and_origin(planes[SA_PLANE][1])[0]
    flags = []
    for stem in LA_PLANES:
        if stem in planes:
            cos = abs(float(np.dot(sa_normal, plane_normal_and_origin(planes[stem][1])[0])))
            angle = math.degrees(math.acos(min(1.0, cos)))
            if angle < MAX_LA_TO_SA_DEG:
                flags.append(
                    flag(
                        stem,
                        "view_identity",
                        f"the {stem} plane lies {angle:.0f} deg from parallel to the SA slices (a long-axis view "
                        "crosses them near perpendicular): it may be an SA slice saved as a long-axis view",
                    )
                )
    return flags


def view_identity_flags(planes: Planes) -> list[Flag]:
    """Flags of 2- and 4-chamber views that look like each other's: a 4-chamber plane cuts the RV, a 2-chamber
    plane passes beside it. Measured on the SA stack's labels along each view's intersection lines at ED
    (:func:`rv_crossed_mm`), so a swapped pair of files (image and geometry) is caught by where its plane lies."""
    if SA_PLANE not in planes or not (planes[SA_PLANE][0] == RVBP).any():
        return []
    crossed = {
        stem: rv_crossed_mm(planes[SA_PLANE], planes[stem][1]) for stem in ("la_2ch", "la_4ch") if stem in planes
    }
    two, four = crossed.get("la_2ch"), crossed.get("la_4ch")
    if two is not None and four is not None and two > four:
        return [
            flag(
                "la_2ch",
                "view_identity",
                f"the la_2ch plane crosses {two:.0f} mm of the SA stack's RV, the la_4ch plane {four:.0f} mm: a "
                "4-chamber view cuts the RV and a 2-chamber view passes beside it, so the two files may be swapped",
            )
        ]
    if four is not None and four < MIN_RV_CROSSED_4CH_MM:
        return [
            flag(
                "la_4ch",
                "view_identity",
                f"the la_4ch plane crosses {four:.0f} mm of the SA stack's RV (at least {MIN_RV_CROSSED_4CH_MM:.0f} "
                "expected of a 4-chamber view): it may be another view",
            )
        ]
    return []


def ring_myocardium_share(sa_labels_ed: np.ndarray, label: int) -> float:
    """Share of the in-plane outline of class ``label`` (its 4-neighbour pixels outside it) that is LV myocardium,
    over all slices of an SA stack at one frame (X, Y, S); NaN where the class is absent."""
    inside = sa_labels_ed == label
    cross = np.zeros((3, 3, 1), dtype=bool)
    cross[1, :, 0] = cross[:, 1, 0] = True
    outline = binary_dilation(inside, structure=cross) & ~inside
    return float((sa_labels_ed[outline] == LVMYO).mean()) if outline.any() else float("nan")


def lv_ring_flags(sa_labels: np.ndarray) -> list[Flag]:
    """A flag where, in an SA stack (X, Y, S, T) at ED, the LV blood pool is not ringed by LV myocardium (under
    :data:`MIN_LV_RING_MYOCARDIUM` of its outline) or the RV is ringed more than the LV is (LV and RV swapped)."""
    at_ed = sa_labels[..., end_diastolic_frame(sa_labels)]
    lv_share, rv_share = ring_myocardium_share(at_ed, LVBP), ring_myocardium_share(at_ed, RVBP)
    if math.isnan(lv_share):
        return []  # no LV: the coverage check says so
    if lv_share >= MIN_LV_RING_MYOCARDIUM and not rv_share > lv_share:
        return []
    rv_text = "no RV labelled" if math.isnan(rv_share) else f"the RV's along {rv_share:.0%}"
    return [
        flag(
            SA_PLANE,
            "lv_ring",
            f"at ED the LV blood pool borders LV myocardium along {lv_share:.0%} of its outline (expected at least "
            f"{MIN_LV_RING_MYOCARDIUM:.0%}, and more than the RV), {rv_text}: LV and RV labels may be swapped, or the "
            "myocardium is missing",
        )
    ]


def myocardial_drift_flags(myocardium_ml: np.ndarray | None) -> list[Flag]:
    """A flag where the LV myocardial volume curve (T,) mL, cyclically smoothed
    (:func:`scripts.phases.smooth_cyclic`), departs from its median by more than :data:`MAX_MYOCARDIAL_DRIFT` of it
    at some frame."""
    if myocardium_ml is None or np.median(myocardium_ml) <= 0:
        return []  # no SA (flagged missing) or no myocardium (LVM flagged implausible)
    smooth = smooth_cyclic(myocardium_ml)
    median = float(np.median(smooth))
    departure = np.abs(smooth - median) / median
    frame = int(np.argmax(departure))
    if departure[frame] <= MAX_MYOCARDIAL_DRIFT:
        return []
    return [
        flag(
            SA_PLANE,
            "myocardial_drift",
            f"LV myocardial volume (smoothed over frames) {smooth[frame]:.1f} mL at frame {frame} departs "
            f"{departure[frame]:.0%} from its median {median:.1f} mL over the cycle (flag above "
            f"{MAX_MYOCARDIAL_DRIFT:.0%}): myocardium is incompressible, its segmentation varies between frames",
        )
    ]


def ejection_troughs(lv_volume_ml: np.ndarray) -> np.ndarray:
    """Frames (sorted) of the troughs of an LV volume curve (T,) mL, cyclically smoothed as the cardiac phases are
    (:func:`scripts.phases.smooth_cyclic`), at least :data:`EJECTION_PROMINENCE` of its range deep."""
    smooth = smooth_cyclic(lv_volume_ml)
    num_frames = len(smooth)
    # three cycles end to end so that a trough at frame 0 or T - 1 has its neighbours; the middle cycle's troughs
    troughs, _ = find_peaks(-np.tile(smooth, 3), prominence=EJECTION_PROMINENCE * np.ptp(smooth))
    return np.sort(troughs[(troughs >= num_frames) & (troughs < 2 * num_frames)] - num_frames)


def ejection_flags(lv_volume_ml: np.ndarray | None) -> list[Flag]:
    """A flag where the LV volume curve (T,) mL has more than one ejection (:func:`ejection_troughs`)."""
    if lv_volume_ml is None or np.ptp(lv_volume_ml) <= 0:
        return []  # no SA or no LV: flagged by the missing-plane or coverage check
    troughs = ejection_troughs(np.asarray(lv_volume_ml, dtype=float))
    if len(troughs) <= 1:
        return []
    return [
        flag(
            SA_PLANE,
            "ejections",
            f"the LV volume curve falls to {len(troughs)} separate minima over the cycle (frames "
            f"{', '.join(map(str, troughs))}, each at least {EJECTION_PROMINENCE:.0%} of its {np.ptp(lv_volume_ml):.1f}"
            " mL range deep): one cycle has one ejection; ED, ES and the EF may be misread",
        )
    ]


def phase_signal_flags(lv_volume_ml: np.ndarray | None, phase_signal: np.ndarray | None) -> list[Flag]:
    """A flag where the LV volume curve (T,) mL and the LV blood-pool signal (T,)
    (:func:`scripts.blood_pool_signal.lv_blood_pool_signal`), both cyclically smoothed
    (:func:`scripts.phases.smooth_cyclic`), correlate below :data:`MIN_PHASE_SIGNAL_CORRELATION`."""
    if lv_volume_ml is None or phase_signal is None or np.ptp(lv_volume_ml) <= 0 or np.ptp(phase_signal) <= 0:
        return []  # no LV curve (flagged by the missing-plane or coverage check) or no signal to compare
    correlation = float(np.corrcoef(smooth_cyclic(lv_volume_ml), smooth_cyclic(phase_signal))[0, 1])
    if correlation >= MIN_PHASE_SIGNAL_CORRELATION:
        return []
    return [
        flag(
            SA_PLANE,
            "phase_signal",
            f"the LV volume curve correlates {correlation:.2f} over the cycle with the LV blood pool the images show "
            f"within the segmented LV (flag below {MIN_PHASE_SIGNAL_CORRELATION:g}): the segmentation does not follow "
            "the cycle; the phases, LV volumes and EF are uncertain",
        )
    ]


def plausibility_flags(volumes: Mapping[str, np.ndarray | None]) -> list[Flag]:
    """Flags of measured phenotypes outside :data:`PLAUSIBLE_RANGES`, and of those left empty although every curve
    they are measured from is present (e.g. an RV larger at the LV's ES than at its ED)."""
    phenotypes = phenotypes_from_volumes(volumes)
    flags = []
    for name, (low, high) in PLAUSIBLE_RANGES.items():
        value, unit = phenotypes[name], PHENOTYPE_UNITS[name]
        view = SA_PLANE if name[:2] in ("LV", "RV") else "subject"
        if math.isfinite(value) and not low <= value <= high:
            flags.append(
                flag(view, "plausibility", f"{name} {value:.1f} {unit} lies outside the plausible {low:g}-{high:g} "
                     f"{unit} of adult hearts")
            )  # fmt: skip
        elif not math.isfinite(value) and all(volumes.get(c) is not None for c in curve_names(name)):
            flags.append(
                flag(view, "plausibility", f"{name} left empty although its views are present: the chamber's "
                     "smaller volume exceeds its larger one, or it is not labelled")
            )  # fmt: skip
    return flags


def curve_names(phenotype: str) -> list[str]:
    """The volume curves (chamber names) a phenotype is measured from."""
    return [CLASS_NAMES[c] for c in PHENOTYPE_CLASSES[phenotype]]


def quality_control(
    planes: Planes, volumes: Mapping[str, np.ndarray | None] | None = None, phase_signal: np.ndarray | None = None
) -> list[Flag]:
    """Every QC flag of one subject.

    Args:
        planes: file stem (``sa``, ``la_2ch``, ``la_3ch``, ``la_4ch``) -> (labels (X, Y, S, T) of the project's
            classes, affine (4, 4) voxel -> world mm), the segmentations as inference writes them; planes absent
            from the input are absent here.
        volumes: chamber -> (T,) volume curve (mL) or None, from
            :func:`scripts.measures.volume_curves_from_segmentations`; measured from ``planes`` where not given.
        phase_signal: (T,) :func:`scripts.blood_pool_signal.lv_blood_pool_signal` of the SA stack, where the images
            were at hand (the ``phase_signal`` check runs only then).

    Returns:
        The flags (see the module's checks), in check order; empty when every check passed.
    """
    if volumes is None:
        volumes = volume_curves_from_segmentations(planes)
    flags = missing_plane_flags(planes) + geometry_flags(planes)
    if SA_PLANE in planes:
        flags += sa_coverage_flags(planes)
        flags += sa_la_agreement_flags(planes)
        flags += sa_parallel_flags(planes)
        flags += view_identity_flags(planes)
        flags += lv_ring_flags(planes[SA_PLANE][0])
        flags += myocardial_drift_flags(volumes.get("LVMYO"))
        flags += ejection_flags(volumes.get("LVBP"))
        flags += phase_signal_flags(volumes.get("LVBP"), phase_signal)
    return flags + plausibility_flags(volumes)


#: the cohort-table columns of :func:`flag_summary`
QC_COLUMNS = ("qc_flags", "qc_summary")


def flag_summary(flags: list[Flag]) -> dict[str, int | str]:
    """The cohort-table cells of a subject's flags: ``qc_flags`` (how many) and ``qc_summary`` (``view:check``
    of each, ``;``-joined; empty when none)."""
    return {"qc_flags": len(flags), "qc_summary": "; ".join(f"{f['view']}:{f['check']}" for f in flags)}
