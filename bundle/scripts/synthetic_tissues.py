"""Tissue codes of the synthetic anatomy: what a sample point is made of, which decides its intensity and its class.

Tissue codes are not segmentation classes (those are :data:`scripts.labels.CLASS_NAMES`): several tissues map to one
class, e.g. papillary muscles and trabeculae belong to their blood pool (UK Biobank convention) and every tissue
outside the four chambers and the LV myocardium is background.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    """Tissue code of a sample point (uint8 in tissue arrays). The first 17 are all the classic variety draws."""

    AIR = 0
    SOFT_TISSUE = 1  # mediastinum and other tissue without its own code
    FAT = 2  # subcutaneous, mediastinal and arm fat
    MUSCLE = 3
    LUNG = 4
    LIVER = 5
    BONE = 6
    CSF = 7
    VESSEL = 8  # blood in the great vessels and the liver's veins
    EPICARDIAL_FAT = 9
    CARDIAC_WALL = 10  # RV free wall, atrial walls and the interatrial septum (background class)
    LV_BLOOD = 11
    LV_MYOCARDIUM = 12
    RV_BLOOD = 13
    LA_BLOOD = 14
    RA_BLOOD = 15
    PAPILLARY = 16
    LV_TRABECULAE = 17
    RV_TRABECULAE = 18  # trabeculae and the moderator band
    PERICARDIUM = 19
    PERICARDIAL_FAT = 20
    LUNG_VESSEL = 21
    STOMACH_WALL = 22
    GASTRIC_CONTENT = 23
    SPLEEN = 24
    BREAST_GLAND = 25
    MARROW = 26
    DISC = 27


NUM_TISSUES = len(Tissue)

#: Project class of each tissue; papillary muscles and trabeculae belong to their blood pool (UK Biobank convention).
TISSUE_TO_CLASS = np.zeros(NUM_TISSUES, dtype=np.uint8)
TISSUE_TO_CLASS[[Tissue.LV_BLOOD, Tissue.PAPILLARY, Tissue.LV_TRABECULAE]] = 1
TISSUE_TO_CLASS[Tissue.LV_MYOCARDIUM] = 2
TISSUE_TO_CLASS[[Tissue.RV_BLOOD, Tissue.RV_TRABECULAE]] = 3
TISSUE_TO_CLASS[Tissue.LA_BLOOD] = 4
TISSUE_TO_CLASS[Tissue.RA_BLOOD] = 5

#: Tissues holding flowing blood (flow voids and pulsatile ghosts act on them).
BLOOD_TISSUES = (Tissue.LV_BLOOD, Tissue.RV_BLOOD, Tissue.LA_BLOOD, Tissue.RA_BLOOD, Tissue.VESSEL)
