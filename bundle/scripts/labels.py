"""Project-wide vocabulary: plane names, segmentation classes, label maps of other sources, phenotypes.

Everything that names a plane, a class or a phenotype imports it from here, so the data layer, the
network, the workflows and the reports agree on one order.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

# --- planes ---------------------------------------------------------------------------------------
#: File stems of a subject folder (UK Biobank style): ``<stem>.nii.gz`` and ``seg_<stem>.nii.gz``.
SA_PLANE = "sa"
LA_PLANES = ("la_2ch", "la_3ch", "la_4ch")
ALL_PLANE_FILES = (SA_PLANE,) + LA_PLANES


def canonical_plane_names(num_sa_slices: int) -> list[str]:
    """Names of the planes of the canonical stack, in stack order: SA slices base to apex, then LA views."""
    return [f"sa_{i}" for i in range(num_sa_slices)] + list(LA_PLANES)


# --- segmentation classes -------------------------------------------------------------------------
CLASS_NAMES = ("background", "LVBP", "LVMYO", "RVBP", "LABP", "RABP")
NUM_CLASSES = len(CLASS_NAMES)
#: Voxel value in a label map meaning "not annotated" (ignored by losses and metrics).
UNLABELLED = 255

#: Label conventions of other sources, per plane file stem, mapped to the project's classes.
#: ``"*"`` applies to every plane. A label file holding a value that its map does not name (other than 0 and 255)
#: is refused when read (:func:`undefined_label_values`), not turned into background.
LABEL_MAPS: dict[str, dict[str, dict[int, int]]] = {
    "project": {"*": {i: i for i in range(NUM_CLASSES)}},
    # UK Biobank (Bai et al. 2018): SA 1 LV, 2 MYO, 3 RV; 2ch 1 LA; 4ch 1 LA, 2 RA.
    "ukbb": {
        "sa": {1: 1, 2: 2, 3: 3},
        "la_2ch": {1: 4},
        "la_3ch": {1: 4},
        "la_4ch": {1: 4, 2: 5},
    },
    "acdc": {"*": {1: 3, 2: 2, 3: 1}},
    "mnms2": {"*": {1: 1, 2: 2, 3: 3}},
}


def custom_label_map(label_map: Any) -> dict[int, int]:
    """A ``{source value: project class}`` label map given as a mapping (keys may be strings, as JSON writes them),
    checked: source values 0..254, classes 0..5 or :data:`UNLABELLED`.

    Raises:
        ValueError: not such a mapping, saying what is wrong and what a map looks like.
    """
    example = '{"1": 1, "2": 2, "3": 3} (source value: project class, 1 LVBP 2 LVMYO 3 RVBP 4 LABP 5 RABP)'
    try:
        mapping = {int(source): int(target) for source, target in dict(label_map).items()}
    except (TypeError, ValueError) as err:
        raise ValueError(f"label map {label_map!r} is not a mapping of whole numbers, e.g. {example}") from err
    classes = set(range(NUM_CLASSES)) | {UNLABELLED}
    wrong = {s: c for s, c in mapping.items() if not 0 <= s < UNLABELLED or c not in classes}
    if wrong:
        raise ValueError(
            f"label map entries {wrong} map a value outside 0..254 or to no project class (0..{NUM_CLASSES - 1}, "
            f"{UNLABELLED} unlabelled), e.g. {example}"
        )
    return mapping


def _plane_mapping(label_map: str | Mapping[int, int], plane: str) -> dict[int, int]:
    """``{source value: project class}`` of ``label_map`` (a :data:`LABEL_MAPS` name or a mapping) for ``plane``."""
    if not isinstance(label_map, str):
        return custom_label_map(label_map)
    if label_map not in LABEL_MAPS:
        raise ValueError(f"unknown label map {label_map!r}; choose one of {sorted(LABEL_MAPS)} or pass a dict")
    per_plane = LABEL_MAPS[label_map]
    return per_plane.get(plane, per_plane.get("*", {}))


def map_labels(label: np.ndarray, label_map: str | Mapping[int, int], plane: str = "sa") -> np.ndarray:
    """Map a label array of another convention to the project's classes.

    Args:
        label: integer label array of any shape.
        label_map: a name of :data:`LABEL_MAPS` or an explicit ``{source value: project class}`` mapping.
        plane: the plane file stem the array belongs to (``sa``, ``la_2ch``, ...), for per-view maps.

    Returns:
        ``uint8`` array of the same shape; :data:`UNLABELLED` voxels stay unlabelled, unmapped values become 0.
    """
    mapping = _plane_mapping(label_map, plane)
    lut = np.zeros(256, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[int(src)] = int(dst)
    lut[UNLABELLED] = UNLABELLED
    values = np.asarray(label)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError(f"label values must lie in 0..255, got {values.min()}..{values.max()}")
    return lut[values.astype(np.int64)]


def undefined_label_values(values: np.ndarray, label_map: str | Mapping[int, int], plane: str = "sa") -> list[int]:
    """The values of an integer label array that ``label_map`` does not define for ``plane`` (neither one of its
    source values, nor 0 background, nor :data:`UNLABELLED`): a label file of another convention than the one
    named, whose classes :func:`map_labels` would silently make background."""
    mapping = _plane_mapping(label_map, plane)
    defined = {0, UNLABELLED} | {int(src) for src in mapping}
    values = np.asarray(values)
    if values.dtype == np.uint8:  # a histogram of the 256 values is ~10x faster than sorting a cine's labels
        present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    else:
        present = np.unique(values)
    return [int(v) for v in present if int(v) not in defined]


# --- phenotypes -----------------------------------------------------------------------------------
#: Phenotype names (UK Biobank conventions) and their units; the regression head predicts all at once.
PHENOTYPE_UNITS: dict[str, str] = {
    "LVEDV": "mL",
    "LVESV": "mL",
    "LVSV": "mL",
    "LVEF": "%",
    "LVM": "g",
    "RVEDV": "mL",
    "RVESV": "mL",
    "RVSV": "mL",
    "RVEF": "%",
    "LAVmax": "mL",
    "LAVmin": "mL",
    "LASV": "mL",
    "LAEF": "%",
    "RAVmax": "mL",
    "RAVmin": "mL",
    "RASV": "mL",
    "RAEF": "%",
}
PHENOTYPE_NAMES = tuple(PHENOTYPE_UNITS)
#: Myocardial density used for LV mass (g/mL).
MYOCARDIUM_DENSITY_G_PER_ML = 1.05
