"""The long-axis views tell the SA slices that cut the atria: on the ground truth of tiny synthetic subjects, an SA
stack whose atrial slices were labelled LV (the network's error at end-systole) gets them back as LA."""

from __future__ import annotations

import numpy as np
from conftest import load_tool

from scripts.atrial_slices import relabel_atrial_sa_slices
from scripts.labels import CLASS_NAMES, LA_PLANES, SA_PLANE

qc_benchmark = load_tool("qc_benchmark")
LVBP, LABP = CLASS_NAMES.index("LVBP"), CLASS_NAMES.index("LABP")


def test_atrial_sa_slices_labelled_lv_are_given_back_to_the_atrium(tiny_cohort):
    restored_voxels, corrupted_voxels, kept_lv, true_lv = 0, 0, 0, 0
    for folder in sorted(p for p in tiny_cohort.iterdir() if (p / "sa.nii.gz").is_file()):
        planes = qc_benchmark.read_segmentations(folder)
        truth, affine = planes[SA_PLANE]
        # every slice-frame that cuts the LA and not the LV, its LA labelled LV
        atrial = (truth == LABP).any(axis=(0, 1)) & ~(truth == LVBP).any(axis=(0, 1))  # (S, T)
        corrupted = truth.copy()
        corrupted[(truth == LABP) & atrial[None, None]] = LVBP
        relabelled = relabel_atrial_sa_slices({**planes, SA_PLANE: (corrupted, affine)})
        assert relabelled is not None
        was_atrium = (truth == LABP) & atrial[None, None]
        corrupted_voxels += int(was_atrium.sum())
        restored_voxels += int((relabelled[was_atrium] == LABP).sum())
        true_lv += int((truth == LVBP).sum())
        kept_lv += int((relabelled[truth == LVBP] == LVBP).sum())
        assert np.array_equal(relabelled[corrupted != LVBP], corrupted[corrupted != LVBP]), "only the LV changes"
    assert corrupted_voxels > 0, "the tiny hearts' SA stacks start above the base"
    assert restored_voxels >= 0.9 * corrupted_voxels, (restored_voxels, corrupted_voxels)
    assert kept_lv >= 0.95 * true_lv, (kept_lv, true_lv)


def test_without_a_crossing_long_axis_view_the_stack_is_left_alone(tiny_cohort):
    folder = next(p for p in sorted(tiny_cohort.iterdir()) if (p / "sa.nii.gz").is_file())
    planes = qc_benchmark.read_segmentations(folder)
    assert relabel_atrial_sa_slices({SA_PLANE: planes[SA_PLANE]}) is None
    assert relabel_atrial_sa_slices({view: planes[view] for view in LA_PLANES if view in planes}) is None
