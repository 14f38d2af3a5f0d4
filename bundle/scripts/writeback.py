"""Canonical predictions written back onto each input plane file's own pixels and frames.

A canonical prediction covers P planes of T frames of H x W pixels (see :mod:`scripts.canonical`); each plane was cut
from one slice of one input file (X, Y, S, T_source), as the sample's ``geometry`` records (centre in mm, in-plane
axes ``u``, ``v``, spacing in mm). Writing back maps every pixel of that slice to its canonical position (a float
pixel coordinate ``i``, ``j``) and every acquired frame to its place on the canonical cycle (:mod:`scripts.frames`):
labels by nearest neighbour (:func:`canonical_to_planes`), class probabilities bilinearly and cyclic-linearly in time
and then the most probable class (:func:`probabilities_to_plane_labels`). Source pixels outside the canonical crop
are class 0 by default; SA slices that no canonical plane cut are ``UNLABELLED`` (255).
"""

from __future__ import annotations

from typing import Any, Collection, Iterator, Mapping, Sequence

import numpy as np
import torch

from scripts.frames import cyclic_linear_frames, nearest_cyclic_frames
from scripts.geometry import voxel_to_world
from scripts.labels import UNLABELLED
from scripts.sample_geometry import parse_geometry

#: Above this share of positions between canonical pixels of different classes, written-back labels interpolate every
#: class everywhere (one grid_sample) rather than blend position by position: at small, 0.5 s against 2.1 s a subject
#: for an untrained network (55 % of neighbouring canonical pixels differ), 0.6 s against 0.12 s for the shipped one
#: (1.5 %).
DENSE_BLEND_FRACTION = 0.15


def canonical_positions(
    record: Mapping[str, Any], affine: np.ndarray, size_x: int, size_y: int, crop_size: int, spacing_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical pixel coordinates (i along H, j along W; float (X, Y) each) of every pixel of the source slice of
    plane ``record`` (a ``geometry["planes"]`` entry) in a file of in-plane size (``size_x``, ``size_y``) and
    ``affine`` (4, 4)."""
    grid = np.stack(np.meshgrid(np.arange(size_x), np.arange(size_y), indexing="ij"), axis=-1).astype(float)
    slice_column = np.full((size_x, size_y, 1), float(record["slice"]))
    offset = voxel_to_world(affine, np.concatenate([grid, slice_column], axis=-1)) - np.array(record["centre_mm"])
    i = offset @ np.array(record["u"]) / spacing_mm + (crop_size - 1) / 2
    j = offset @ np.array(record["v"]) / spacing_mm + (crop_size - 1) / 2
    return i, j


def _source_planes(
    geometry: Mapping[str, Any], stems: Collection[str] | None
) -> Iterator[tuple[str, Mapping[str, Any], np.ndarray, list[tuple[int, Mapping[str, Any]]]]]:
    """Each plane file of a parsed ``geometry`` (only ``stems`` when given): its stem, its ``sources`` record, its
    affine (4, 4) and the canonical planes cut from it as (index, ``planes`` record)."""
    for stem, source in geometry["sources"].items():
        if stems is None or stem in stems:
            planes = [(index, record) for index, record in enumerate(geometry["planes"]) if record["source"] == stem]
            yield stem, source, np.array(source["affine"]), planes


def canonical_to_planes(
    pred: np.ndarray | torch.Tensor,
    geometry: str | Mapping[str, Any],
    outside_value: float = 0,
    uncovered_value: float = UNLABELLED,
    stems: Collection[str] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a canonical prediction back onto every input plane file (nearest neighbour in space and time).

    Args:
        pred: canonical labels (P, T, H, W), or per-channel maps such as probabilities (C, P, T, H, W).
        geometry: the sample's ``geometry``.
        outside_value: value of source pixels of a covered slice that fall outside the canonical crop.
        uncovered_value: value of SA slices not in the canonical stack (merge several passes, see
            :func:`scripts.canonical.plan_sa_passes`); for float maps pass e.g. ``np.nan``.
        stems: only these plane files (e.g. ``["sa"]``); None: all of the geometry's.

    Returns:
        file stem -> (array, affine): array of the plane file's shape (X, Y, S, T) (channels first: (C, X, Y, S, T)),
        dtype of ``pred``; affine (4, 4) of the file.
    """
    geometry = parse_geometry(geometry)
    values = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    has_channels = values.ndim == 5
    if not has_channels:
        values = values[None]
    num_channels, num_planes, num_frames, crop_size, _ = values.shape
    if num_planes != len(geometry["planes"]):
        raise ValueError(f"pred has {num_planes} planes, geometry {len(geometry['planes'])}")

    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for stem, source, affine, planes in _source_planes(geometry, stems):
        size_x, size_y, _, source_frames = source["shape"]
        output = np.full([num_channels] + list(source["shape"]), uncovered_value, dtype=values.dtype)
        nearest_frame = nearest_cyclic_frames(num_frames, source_frames)
        for index, record in planes:
            i, j = canonical_positions(record, affine, size_x, size_y, crop_size, geometry["spacing_mm"])
            i, j = np.rint(i).astype(np.int64), np.rint(j).astype(np.int64)
            inside = (i >= 0) & (i < crop_size) & (j >= 0) & (j < crop_size)
            slice_values = np.full((num_channels, size_x, size_y, source_frames), outside_value, dtype=values.dtype)
            plane_values = values[:, index][:, nearest_frame]  # (C, T_source, H, W)
            slice_values[:, inside] = plane_values[:, :, i[inside], j[inside]].transpose(0, 2, 1)
            output[:, :, :, record["slice"]] = slice_values
        outputs[stem] = (output if has_channels else output[0], affine)
    return outputs


def most_probable_class(scores: torch.Tensor) -> torch.Tensor:
    """uint8 index of the largest of ``scores`` (C, ...) along C (the first on ties; probabilities or logits), by a
    running maximum: torch's argmax over the class axis of a large map is 7-20x slower (1 s against 0.14 s for one
    subject's logits at small)."""
    best, labels = scores[0], torch.zeros(scores.shape[1:], dtype=torch.uint8, device=scores.device)
    for c in range(1, scores.shape[0]):
        better = scores[c] > best
        best = torch.where(better, scores[c], best)
        labels = torch.where(better, c, labels)
    return labels


def _bilinear_labels(cuts: Sequence[tuple[torch.Tensor, np.ndarray, np.ndarray]]) -> torch.Tensor:
    """Most probable class (X, Y, T) uint8 of the mean of the class probabilities of several ``cuts`` through one
    source slice, each (probabilities (C, T, H, W), canonical positions ``i``, ``j`` (X, Y)) interpolated bilinearly
    at its positions (beyond the outermost pixel centres: the edge value, as grid_sample's ``border`` padding).

    Where the canonical pixels around a position (four per cut) all agree on the class, so does any convex
    combination of their probabilities (``p_c >= p_k`` in each implies it in the sum), so only positions between
    pixels of different classes are interpolated: a few percent of them with trained weights, ~5x faster than
    interpolating every class everywhere.
    """
    positions_shape = np.shape(cuts[0][1])
    num_frames = cuts[0][0].shape[1]
    stencils = []  # per cut: its probabilities with pixels flattened, the 4 corners' pixel indices and weights
    corner_labels = []  # 4 per cut, each (X * Y, T)
    for plane, i, j in cuts:
        _, _, height, width = plane.shape
        i = np.clip(i, 0, height - 1).reshape(-1)
        j = np.clip(j, 0, width - 1).reshape(-1)
        i0, j0 = np.floor(i).astype(np.int64), np.floor(j).astype(np.int64)
        i1, j1 = np.minimum(i0 + 1, height - 1), np.minimum(j0 + 1, width - 1)
        wi, wj = (i - i0).astype(np.float32), (j - j0).astype(np.float32)
        corners = [torch.from_numpy(a * width + b) for a, b in ((i0, j0), (i0, j1), (i1, j0), (i1, j1))]
        weights = [torch.from_numpy(w) for w in ((1 - wi) * (1 - wj), (1 - wi) * wj, wi * (1 - wj), wi * wj)]
        stencils.append((plane.reshape(plane.shape[0], num_frames, height * width), corners, weights))
        # pixels as rows (H * W, T): a corner's gather copies whole rows of frames
        grid_labels = most_probable_class(plane).reshape(num_frames, height * width).T.contiguous()
        corner_labels += [grid_labels[corner] for corner in corners]
    labels = corner_labels[0]
    mixed = torch.zeros_like(labels, dtype=torch.bool)
    for other in corner_labels[1:]:
        mixed |= labels != other
    if float(mixed.float().mean()) > DENSE_BLEND_FRACTION:
        # boundaries nearly everywhere (an untrained model, or a scan far from the training data): one grid_sample of
        # every class is cheaper than gathering that many positions one by one
        return most_probable_class(sum(_grid_sample_positions(plane, i, j) for plane, i, j in cuts)).T.reshape(
            *positions_shape, num_frames
        )
    pixel, frame = torch.nonzero(mixed, as_tuple=True)
    if len(pixel):
        blend = sum(
            w[pixel] * flat[:, frame, corner[pixel]]
            for flat, corners, weights in stencils
            for corner, w in zip(corners, weights)
        )  # (C, K)
        labels[pixel, frame] = most_probable_class(blend)
    return labels.reshape(*positions_shape, num_frames)


def _grid_sample_positions(plane: torch.Tensor, i: np.ndarray, j: np.ndarray) -> torch.Tensor:
    """(C, T, X * Y) probabilities ``plane`` (C, T, H, W) interpolated bilinearly at canonical positions ``i``, ``j``
    (X, Y), edge values beyond the outermost pixel centres."""
    num_channels, num_frames, height, width = plane.shape
    grid = np.stack([(2 * j + 1) / width - 1, (2 * i + 1) / height - 1], axis=-1).reshape(1, 1, -1, 2)
    return torch.nn.functional.grid_sample(
        plane.reshape(1, num_channels * num_frames, height, width),
        torch.from_numpy(grid.astype(np.float32)),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    ).reshape(num_channels, num_frames, -1)


def _on_source_frames(plane: torch.Tensor, source_frames: int) -> torch.Tensor:
    """Canonical probabilities ``plane`` (C, T, H, W) interpolated cyclic-linearly onto ``source_frames`` frames
    -> (C, T_source, H, W) (the inverse of :func:`scripts.frames.resample_time`)."""
    num_frames = plane.shape[1]
    if source_frames == num_frames:  # e.g. 50 frames acquired, 50 canonical: nothing to blend
        return plane
    before, after, weight = cyclic_linear_frames(num_frames, source_frames)
    weight = torch.from_numpy(weight)[None, :, None, None]
    return (1 - weight) * plane[:, before] + weight * plane[:, after]


def probabilities_to_plane_labels(
    passes: Sequence[tuple[torch.Tensor, str | Mapping[str, Any]]],
    stems: Collection[str] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labels of every input plane file from the canonical class probabilities of one or more passes over a subject:
    interpolated linearly in space (bilinear) and cyclically in time onto the file's own pixels and frames, averaged
    over the passes that cut the same source slice, then the most probable class.

    Labels back-projected by nearest neighbour snap every boundary to the 1.8 mm canonical grid; the probabilities
    carry where between two canonical pixels a boundary lies, which matters most where the file's pixels are finer
    than the grid and for thin structures (the myocardium). Passes are the extra SA stacks
    (:func:`scripts.canonical.plan_sa_passes`, each slice cut once) and test-time shifts of the crop
    (``centre_shift_px``, the same slice cut again).

    Args:
        passes: (probabilities (C, P, T, H, W) of any float dtype on a canonical grid, that sample's ``geometry``)
            per pass; all of one subject's files.
        stems: only these plane files; None: all of the geometry's.

    Returns:
        file stem -> (labels uint8 (X, Y, S, T), affine (4, 4)), as :func:`canonical_to_planes` gives for labels:
        source pixels outside every pass's canonical crop are class 0, SA slices that no pass cut ``UNLABELLED``.
    """
    passes = [(probabilities, parse_geometry(geometry)) for probabilities, geometry in passes]
    for probabilities, geometry in passes:
        if probabilities.shape[1] != len(geometry["planes"]):
            raise ValueError(f"probabilities have {probabilities.shape[1]} planes, geometry {len(geometry['planes'])}")
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for stem, source, affine, _ in _source_planes(passes[0][1], stems):
        size_x, size_y, _, source_frames = source["shape"]
        output = np.full(source["shape"], UNLABELLED, dtype=np.uint8)
        # slice -> (probabilities, canonical plane index, plane record, geometry) of every pass that cut it
        cut_by: dict[int, list[tuple[torch.Tensor, int, Mapping[str, Any], Mapping[str, Any]]]] = {}
        for probabilities, geometry in passes:
            for index, record in enumerate(geometry["planes"]):
                if record["source"] == stem:
                    cut_by.setdefault(record["slice"], []).append((probabilities, index, record, geometry))
        for source_slice, slice_passes in cut_by.items():
            cuts, inside = [], np.zeros((size_x, size_y), dtype=bool)
            for probabilities, index, record, geometry in slice_passes:
                crop_size = probabilities.shape[3]
                plane = _on_source_frames(probabilities[:, index].float().cpu(), source_frames)  # (C, T_source, H, W)
                i, j = canonical_positions(record, affine, size_x, size_y, crop_size, geometry["spacing_mm"])
                cuts.append((plane, i, j))
                # the crop's edge as nearest neighbour draws it: beyond half a canonical pixel is outside
                inside |= (np.rint(i) >= 0) & (np.rint(i) < crop_size) & (np.rint(j) >= 0) & (np.rint(j) < crop_size)
            labels = _bilinear_labels(cuts).numpy()  # (X, Y, T_source)
            labels[~inside] = 0
            output[:, :, source_slice] = labels
        outputs[stem] = (output, affine)
    return outputs
