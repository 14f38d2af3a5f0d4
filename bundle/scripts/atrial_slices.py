"""SA slices that cut the atria, told apart by the long-axis views.

Scanners plan an SA stack from above the base, and at end-systole the base descends: the top slices then cut the
atria. Within one SA slice, atrial and ventricular blood look alike (blood inside a rim of tissue), and the network
labels both LV; the LV volume at ES then takes in atrial blood and the LVEF of the whole stack comes out low. The
long-axis views show the mitral valve plane. Where an LA view crosses an SA slice, each point of their intersection
line that the SA slice labels LV blood pool votes with the LA view's label at the same frame: LV or LA. An SA slice
at a frame whose LV is outvoted by the LA (summed over the LA views that cross it) cuts the atrium there, and its LV
blood pool is relabelled LA blood pool (:func:`relabel_atrial_sa_slices`). A stack without a crossing LA view is
left as it is.

Shapes: label maps (X, Y, S, T) uint8 with their affines (4, 4), as :mod:`scripts.writeback` writes every plane.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from scripts.labels import CLASS_NAMES, LA_PLANES, SA_PLANE
from scripts.quality_control import intersection_samples

LVBP, LABP = CLASS_NAMES.index("LVBP"), CLASS_NAMES.index("LABP")


def atrial_votes(
    sa: tuple[np.ndarray, np.ndarray], la: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Votes of one LA view on the SA stack's LV blood pool along their intersection lines.

    Args:
        sa: SA labels (X, Y, S, T) and affine (4, 4).
        la: LA labels (X, Y, 1, T') and affine (4, 4); its frames are mapped onto the SA's by cycle position.

    Returns:
        (S, T) counts of line points labelled LV blood pool in the SA slice and, in the LA view, LV blood pool (first)
        or LA blood pool (second); None where the planes do not cross.
    """
    sampled = intersection_samples(sa, la)
    if sampled is None:
        return None
    on_sa, on_la, slice_of_sample, _ = sampled
    sa_lv = on_sa == LVBP
    num_slices, num_frames = sa[0].shape[2], sa[0].shape[3]
    ventricle, atrium = np.zeros((num_slices, num_frames)), np.zeros((num_slices, num_frames))
    np.add.at(ventricle, slice_of_sample, sa_lv & (on_la == LVBP))
    np.add.at(atrium, slice_of_sample, sa_lv & (on_la == LABP))
    return ventricle, atrium


def atrial_slice_frames(planes: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """(S, T) bool: the SA slice-frames whose LV blood pool the crossing LA views label LA more often than LV; None
    without an SA stack or without an LA view crossing it."""
    if SA_PLANE not in planes:
        return None
    tallies = [atrial_votes(planes[SA_PLANE], planes[view]) for view in LA_PLANES if view in planes]
    tallies = [tally for tally in tallies if tally is not None]
    if not tallies:
        return None
    ventricle = sum(tally[0] for tally in tallies)
    atrium = sum(tally[1] for tally in tallies)
    return atrium > ventricle


def relabel_atrial_sa_slices(planes: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """The SA labels (X, Y, S, T) with the LV blood pool of :func:`atrial_slice_frames` relabelled LA blood pool;
    None where no LA view crosses the SA stack (nothing to tell the atria by)."""
    atrial = atrial_slice_frames(planes)
    if atrial is None:
        return None
    labels = planes[SA_PLANE][0].copy()
    labels[(labels == LVBP) & atrial[None, None]] = LABP
    return labels
