"""Project-wide vocabulary: plane names, segmentation classes, label maps of other sources, phenotypes.

Everything that names a plane, a class or a phenotype imports it from here, so the data layer, the
network, the workflows and the reports agree on one order.
"""

from __future__ import annotations

from typing import Mapping

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
#: A value absent from a map becomes background; ``"*"`` applies to every plane.
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


def map_labels(label: np.ndarray, label_map: str | Mapping[int, int], plane: str = "sa") -> np.ndarray:
    """Map a label array of another convention to the project's classes.

    Args:
        label: integer label array of any shape.
        label_map: a name of :data:`LABEL_MAPS` or an explicit ``{source value: project class}`` mapping.
        plane: the plane file stem the array belongs to (``sa``, ``la_2ch``, ...), for per-view maps.

    Returns:
        ``uint8`` array of the same shape; :data:`UNLABELLED` voxels stay unlabelled, unmapped values become 0.
    """
    if isinstance(label_map, str):
        if label_map not in LABEL_MAPS:
            raise ValueError(f"unknown label map {label_map!r}; choose one of {sorted(LABEL_MAPS)} or pass a dict")
        per_plane = LABEL_MAPS[label_map]
        mapping = per_plane.get(plane, per_plane.get("*", {}))
    else:
        mapping = dict(label_map)
    lut = np.zeros(256, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[int(src)] = int(dst)
    lut[UNLABELLED] = UNLABELLED
    values = np.asarray(label)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError(f"label values must lie in 0..255, got {values.min()}..{values.max()}")
    return lut[values.astype(np.int64)]


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
