"""Clinical measures: the 17 phenotypes of :data:`labels.PHENOTYPE_NAMES` from per-plane segmentations.

The conventions are those of UK Biobank analyses (Bai et al. 2018, Petersen et al. 2017):

- ventricles: the SA stack by summation of slices (Simpson's method): volume per frame = voxels of a class x voxel
  volume, where the voxel's depth is the slice-to-slice distance of the stack;
- ED / ES: the frames of largest / smallest LV volume; the RV is read at the same frames;
- LV mass: ED myocardial volume x 1.05 g/mL;
- atria: area-length from the long-axis views, V = 8 / (3 pi) x A1 x A2 / L (biplane, LA from 2ch and 4ch; single
  plane A^2 / L where one view is missing, RA from 4ch), L the atrium's long axis in the view (the shorter of the two
  for the biplane form); maximum and minimum over the cycle;
- EF = (EDV - ESV) / EDV in %; where the smaller volume exceeds the larger one (a segmentation that finds a
  ventricle at ES but barely at ED, or the RV out of phase with the LV's frames) stroke volume and EF are NaN, since
  a negative EF is not a measurement.

Everything is in physical units from the NIfTI affines; a measure needing a missing view is NaN, never guessed.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

from scripts.frames import nearest_cyclic_frames
from scripts.labels import CLASS_NAMES, MYOCARDIUM_DENSITY_G_PER_ML, PHENOTYPE_NAMES, PHENOTYPE_UNITS

#: area-length constant 8 / (3 pi) ~ 0.85: exact for an ellipsoid cut through its long axis
AREA_LENGTH_FACTOR = 8.0 / (3.0 * math.pi)
LVBP, LVMYO, RVBP, LABP, RABP = (CLASS_NAMES.index(name) for name in ("LVBP", "LVMYO", "RVBP", "LABP", "RABP"))


#: the classes each phenotype is measured from (the LV blood pool also fixes ED and ES for the ventricles)
PHENOTYPE_CLASSES: dict[str, tuple[int, ...]] = {
    **{name: (LVBP,) for name in ("LVEDV", "LVESV", "LVSV", "LVEF")},
    "LVM": (LVBP, LVMYO),
    **{name: (LVBP, RVBP) for name in ("RVEDV", "RVESV", "RVSV", "RVEF")},
    **{f"LA{suffix}": (LABP,) for suffix in ("Vmax", "Vmin", "SV", "EF")},
    **{f"RA{suffix}": (RABP,) for suffix in ("Vmax", "Vmin", "SV", "EF")},
}


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume (mL) of one voxel of a NIfTI affine (4, 4): for an SA stack the depth is the slice-to-slice distance."""
    return abs(float(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0


def pixel_spacing_mm(affine: np.ndarray) -> tuple[float, float]:
    """In-plane pixel sizes (mm) along the array's first two axes."""
    axes = np.asarray(affine, dtype=float)[:3, :2]
    return float(np.linalg.norm(axes[:, 0])), float(np.linalg.norm(axes[:, 1]))


def stack_volume_curves_ml(segmentation: np.ndarray, affine: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame volume (mL) of every foreground class in an SA stack by summation of slices.

    Args:
        segmentation: (X, Y, Z, T) integer labels of the project's classes.
        affine: (4, 4) of the stack.

    Returns:
        class name -> (T,) volumes in mL.
    """
    if segmentation.ndim != 4:
        raise ValueError(f"an SA segmentation is (X, Y, Z, T), got shape {segmentation.shape}")
    frames = segmentation.reshape(-1, segmentation.shape[-1])
    voxel_ml = voxel_volume_ml(affine)
    return {CLASS_NAMES[c]: (frames == c).sum(0) * voxel_ml for c in range(1, len(CLASS_NAMES))}


def long_axis_length_mm(mask: np.ndarray, spacing_mm: tuple[float, float]) -> float:
    """Length (mm) of a 2D region along its principal axis: the extent of its pixel centres along the major
    eigenvector of their covariance, plus one pixel. 0 for an empty region."""
    points = np.argwhere(mask).astype(float) * np.asarray(spacing_mm)
    if len(points) < 2:
        return float(len(points)) * min(spacing_mm)
    centred = points - points.mean(0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    projection = centred @ vectors[:, -1]
    return float(projection.max() - projection.min()) + float(np.mean(spacing_mm))


def area_length_curves(segmentation: np.ndarray, affine: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame area (mm^2) and long-axis length (mm) of ``label`` in a long-axis view (X, Y, 1, T) or (X, Y, T)."""
    frames = segmentation.reshape(segmentation.shape[0], segmentation.shape[1], -1)
    spacing = pixel_spacing_mm(affine)
    masks = frames == label
    areas = masks.sum((0, 1)) * spacing[0] * spacing[1]
    lengths = np.array([long_axis_length_mm(masks[:, :, t], spacing) for t in range(masks.shape[2])])
    return areas.astype(float), lengths


def resample_cycle(curve: np.ndarray, num_frames: int) -> np.ndarray:
    """Nearest-frame resampling of a per-frame curve over one cardiac cycle to ``num_frames`` frames."""
    index = nearest_cyclic_frames(len(curve), num_frames)
    return curve[index]


def atrial_volume_curve_ml(views: Mapping[str, tuple[np.ndarray, np.ndarray]], label: int) -> np.ndarray | None:
    """Area-length volume (mL) per frame of atrium ``label`` from the views given (biplane with two, else single);
    None when no view shows it. Frames follow the first view given."""
    curves = []
    for segmentation, affine in views.values():
        areas, lengths = area_length_curves(segmentation, affine, label)
        curves.append((areas, lengths))
    if not curves:
        return None
    num_frames = len(curves[0][0])
    curves = [(resample_cycle(a, num_frames), resample_cycle(length, num_frames)) for a, length in curves]
    if len(curves) == 1:
        area_a, length = curves[0]
        area_b = area_a
    else:
        (area_a, length_a), (area_b, length_b) = curves[:2]
        length = np.minimum(length_a, length_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        volume_mm3 = np.where(length > 0, AREA_LENGTH_FACTOR * area_a * area_b / length, 0.0)
    return volume_mm3 / 1000.0


#: (prefix, larger volume, smaller volume) of each chamber's stroke volume and ejection fraction
EJECTION_PAIRS = (
    ("LV", "LVEDV", "LVESV"),
    ("RV", "RVEDV", "RVESV"),
    ("LA", "LAVmax", "LAVmin"),
    ("RA", "RAVmax", "RAVmin"),
)


def implausible_ejections(phenotypes: Mapping[str, float]) -> list[str]:
    """The chambers (``LV``, ``RV``, ``LA``, ``RA``) whose two volumes are known but whose EF was left NaN because
    the smaller volume exceeded the larger one (see :func:`phenotypes_from_volumes`)."""
    return [
        prefix
        for prefix, big, small in EJECTION_PAIRS
        if math.isfinite(phenotypes[big])
        and math.isfinite(phenotypes[small])
        and phenotypes[big] > 0
        and not math.isfinite(phenotypes[f"{prefix}EF"])
    ]


def ejection_fraction_percent(larger_ml: float, smaller_ml: float) -> float:
    """EF (%) = (larger - smaller) / larger of a chamber's two volumes (mL); NaN when the larger is not positive."""
    return 100.0 * (larger_ml - smaller_ml) / larger_ml if larger_ml > 0 else math.nan


def phenotypes_from_volumes(volumes: Mapping[str, np.ndarray | None]) -> dict[str, float]:
    """The 17 phenotypes (:data:`labels.PHENOTYPE_NAMES`; mL, %, g) from per-frame volume curves (mL).

    ``volumes`` maps LVBP, LVMYO, RVBP, LABP, RABP to (T,) curves; a missing or None curve makes its phenotypes NaN.
    ED / ES are the frames of largest / smallest LV volume; the RV is read at the same frames (UK Biobank); atrial
    maximum and minimum are taken over the cycle. SV and EF are NaN where the smaller volume exceeds the larger.
    """
    nan = float("nan")
    out = dict.fromkeys(PHENOTYPE_NAMES, nan)
    lv, myo, rv = (volumes.get(name) for name in ("LVBP", "LVMYO", "RVBP"))
    if lv is not None and np.max(lv) > 0:
        ed, es = int(np.argmax(lv)), int(np.argmin(lv))
        out.update(LVEDV=lv[ed], LVESV=lv[es])
        if myo is not None:
            out["LVM"] = myo[ed] * MYOCARDIUM_DENSITY_G_PER_ML
        if rv is not None:
            out.update(RVEDV=rv[ed], RVESV=rv[es])
    for prefix, name in (("LA", "LABP"), ("RA", "RABP")):
        curve = volumes.get(name)
        if curve is not None:
            out.update({f"{prefix}Vmax": np.max(curve), f"{prefix}Vmin": np.min(curve)})
    for prefix, big, small in EJECTION_PAIRS:
        if out[big] > 0 and out[small] <= out[big]:
            out[f"{prefix}SV"] = out[big] - out[small]
            out[f"{prefix}EF"] = ejection_fraction_percent(out[big], out[small])
    return {name: float(out[name]) for name in PHENOTYPE_NAMES}


def volume_curves_from_segmentations(
    planes: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, np.ndarray | None]:
    """Per-frame volume curves (mL) of the five chambers from per-plane segmentations.

    Args:
        planes: file stem (``sa``, ``la_2ch``, ``la_3ch``, ``la_4ch``) -> (labels (X, Y, Z, T), affine (4, 4)), the
            arrays that inference writes as ``seg_<stem>.nii.gz``.

    Returns:
        LVBP, LVMYO, RVBP (SA summation; absent without an SA stack), LABP, RABP (area-length; None without the
        views they need) -> (T,) volumes in mL.
    """
    volumes: dict[str, np.ndarray | None] = {}
    if "sa" in planes:
        volumes.update(
            {k: v for k, v in stack_volume_curves_ml(*planes["sa"]).items() if k in ("LVBP", "LVMYO", "RVBP")}
        )
    left_views = {stem: planes[stem] for stem in ("la_4ch", "la_2ch") if stem in planes}
    volumes["LABP"] = atrial_volume_curve_ml(left_views, LABP)
    volumes["RABP"] = atrial_volume_curve_ml({"la_4ch": planes["la_4ch"]} if "la_4ch" in planes else {}, RABP)
    return volumes


#: the plane files each chamber's measures are taken on (the LA biplane from both views, or from the one present)
CHAMBER_PLANES = {"LV": ("sa",), "RV": ("sa",), "LA": ("la_2ch", "la_4ch"), "RA": ("la_4ch",)}


def phenotype_planes(segmented: Iterable[str]) -> dict[str, list[str]]:
    """The plane files each phenotype is measured on, given the plane files ``segmented`` (``sa``, ``la_2ch``, ...):
    phenotype name -> the planes of :data:`CHAMBER_PLANES` among them; empty where its views are missing (its value
    is then NaN)."""
    present = set(segmented)
    return {name: [stem for stem in CHAMBER_PLANES[name[:2]] if stem in present] for name in PHENOTYPE_NAMES}


def phenotypes_from_segmentations(planes: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """The 17 phenotypes of a subject from its per-plane segmentations (``planes`` as in
    :func:`volume_curves_from_segmentations`): phenotype name -> value (mL, %, g); NaN where the view a measure needs
    is missing."""
    return phenotypes_from_volumes(volume_curves_from_segmentations(planes))


#: quantile levels (0 = smallest frame, 1 = largest) at which the ventricular volume curves enter the measures
CURVE_QUANTILES = tuple(float(q) for q in np.linspace(0.0, 1.0, 10))
#: the ventricular curves summarised in the measures
CURVE_CLASSES = ("LVBP", "LVMYO", "RVBP")
#: what :func:`measure_features` returns, in order: the 17 phenotypes, then each curve's quantiles
MEASURE_FEATURE_NAMES: tuple[str, ...] = tuple(PHENOTYPE_NAMES) + tuple(
    f"{name}_q{round(100 * q)}" for name in CURVE_CLASSES for q in CURVE_QUANTILES
)


def measure_features(volumes: Mapping[str, np.ndarray | None]) -> np.ndarray:
    """What the measure head (:class:`scripts.heads.MeasureHead`) reads from a subject's segmentation.

    Args:
        volumes: chamber -> (T,) volume curve (mL), as from :func:`volume_curves_from_segmentations`.

    Returns:
        (F,) float64 in the order of :data:`MEASURE_FEATURE_NAMES`: the 17 measured phenotypes and the quantiles of
        the LV blood pool, myocardium and RV blood pool curves over the cycle (the whole curve, not only its ED and
        ES frames, whose choice is noisy on a segmentation); NaN where a view is missing.
    """
    curves = []
    for name in CURVE_CLASSES:
        curve = volumes.get(name)
        curves.append(
            np.quantile(curve, CURVE_QUANTILES) if curve is not None else np.full(len(CURVE_QUANTILES), np.nan)
        )
    phenotypes = phenotypes_from_volumes(volumes)
    return np.concatenate([[phenotypes[name] for name in PHENOTYPE_NAMES], *curves]).astype(np.float64)


def unmeasurable_phenotypes(volumes: Mapping[str, np.ndarray | None]) -> list[str]:
    """The phenotypes whose chambers have no volume curve (the view that measures them is missing): a head that
    regresses them from the other measures would be inventing them."""
    return [
        name for name in PHENOTYPE_NAMES if any(volumes.get(CLASS_NAMES[c]) is None for c in PHENOTYPE_CLASSES[name])
    ]


def implausible_values(phenotypes: Mapping[str, float]) -> list[str]:
    """The phenotypes whose value no heart has: a negative volume, stroke volume or mass, an EF outside 0-100 %, or a
    stroke volume above its chamber's largest volume (what a linear head gives far outside the data it was fit on;
    it regresses each phenotype on its own, so only such rules keep them consistent)."""
    # each chamber's stroke volume and its largest volume (the pairs the measured SV and EF come from)
    largest_volume_of = {f"{prefix}SV": big for prefix, big, _ in EJECTION_PAIRS}
    out = []
    for name in PHENOTYPE_NAMES:
        value = phenotypes.get(name, float("nan"))
        if not math.isfinite(value):
            continue
        largest = phenotypes.get(largest_volume_of.get(name, ""), float("nan"))
        if value < 0 or (PHENOTYPE_UNITS[name] == "%" and value > 100) or value > largest:
            out.append(name)
    return out
