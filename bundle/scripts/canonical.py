"""The canonical plane stack: from a subject's cine planes to the network's tensor, and back.

Geometry. Every canonical plane is a 2-D grid in world millimetres: centre ``c``, in-plane unit vectors ``u`` and
``v`` taken from the source plane's affine (columns 0 and 1, ``v`` orthogonalised against ``u``) so orientation is
preserved, spacing ``s`` and ``n x n`` pixels. Canonical pixel ``[i, j]`` (array axes H, W) lies at
``c + (i - (n - 1) / 2) s u + (j - (n - 1) / 2) s v``; it is sampled from the source slice bilinearly (labels: nearest
neighbour). Outside the source field of view the image is 0 and the label 255 (not annotated).

Heart centre, without any segmentation (recorded as ``geometry["centre_method"]``):
``la_intersection``: the LV long axis is the common line of the long-axis planes (least squares over their plane
equations); its intersection with the middle slice of the SA stack is the centre. ``image_centre``: without two
usable long-axis planes, the centre of the middle SA slices (a technologist centres the SA field of view on the
heart). A motion localiser (centroid of the temporal standard deviation) was tried and removed: on the 3 Sunnybrook
studies it landed 50-118 mm from the contoured LV (flow and fat artefacts move too), the image centre 7-15 mm.
Every canonical plane is centred on the heart centre projected onto that plane.

SA slices, base to apex, by geometry only: slices are ordered by their position along RAS ``(1, -1, 1)`` (the base
lies right/posterior/superior of the apex), then ``num_sa_slices`` of them are taken evenly spaced over the stack.
A shorter stack fills spread-out positions and leaves the others missing (zero image, 255 label, plane_mask False).

Time: cyclic linear resampling of any acquired frame count to ``num_frames`` (frame 0 stays frame 0); labels take
the nearest frame. Intensity: per source plane file, percentiles 1 and 99.5 map to [0, 1], clipped, then quantised
to 256 levels (multiples of 1/255), so a cached sample is bit-identical to a fresh one.

Sample keys (``LoadCineSubjectd``): ``image`` float32 (1, P, T, H, W), ``plane_mask`` bool (P,), ``label`` uint8
(1, P, T, H, W), ``class_mask`` bool (6,), ``phenotypes`` float32 (17,), ``geometry`` (JSON string, so it collates
as a list of strings under MONAI ``list_data_collate``; :func:`canonical_to_planes` takes it as is), ``id`` and
``problems`` (one string, one problem per line, "" if none: lists of different lengths do not collate).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import zlib
from pathlib import Path
from typing import Any, Collection, Hashable, Iterator, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

from scripts.files import atomic_path
from scripts.labels import LA_PLANES, NUM_CLASSES, PHENOTYPE_NAMES, SA_PLANE, UNLABELLED, canonical_plane_names
from scripts.subject import Plane, Subject, load_subject, subject_files

logger = logging.getLogger(__name__)

GEOMETRY_VERSION = 1
CACHE_VERSION = 1
#: RAS direction from apex to base (right, posterior, superior): base slices project most positively on it.
BASE_DIRECTION_RAS = np.array([1.0, -1.0, 1.0]) / np.sqrt(3.0)
INTENSITY_PERCENTILES = (1.0, 99.5)
#: At most this many voxels per plane file enter the percentile estimate (strided subsample, deterministic).
PERCENTILE_SAMPLE_SIZE = 500_000
#: Two long-axis planes are "distinct" if the second singular value of their normals exceeds this (~6 degrees).
MIN_LA_NORMAL_SPREAD = 0.1
CENTRE_METHODS = ("la_intersection", "image_centre")
#: Above this share of positions between canonical pixels of different classes, written-back labels interpolate every
#: class everywhere (one grid_sample) rather than blend position by position: at small, 0.5 s against 2.1 s a subject
#: for an untrained network (55 % of neighbouring canonical pixels differ), 0.6 s against 0.12 s for the shipped one
#: (1.5 %).
DENSE_BLEND_FRACTION = 0.15


# --- geometry -------------------------------------------------------------------------------------


def plane_axes(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-plane unit vectors ``u`` (voxel axis 0), ``v`` (axis 1, orthogonalised) and the unit normal, each (3,)."""
    u = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    v = affine[:3, 1] - (affine[:3, 1] @ u) * u
    v = v / np.linalg.norm(v)
    return u, v, np.cross(u, v)


def voxel_to_world(affine: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """(..., 3) voxel coordinates -> (..., 3) world mm."""
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def world_to_voxel(affine: np.ndarray, world: np.ndarray) -> np.ndarray:
    """(..., 3) world mm -> (..., 3) voxel coordinates."""
    return (world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T


def slice_centre(affine: np.ndarray, shape: Sequence[int], slice_index: float) -> np.ndarray:
    """World position (3,) of the in-plane centre of slice ``slice_index`` of a (X, Y, S, ...) volume."""
    return voxel_to_world(affine, np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, slice_index]))


def sa_slice_order(affine: np.ndarray, shape: Sequence[int]) -> list[int]:
    """Source slice indices of an SA stack ordered base to apex (decreasing projection on RAS (1, -1, 1))."""
    positions = [slice_centre(affine, shape, z) @ BASE_DIRECTION_RAS for z in range(shape[2])]
    return [int(z) for z in np.argsort(positions, kind="stable")[::-1]]


def select_sa_slices(order: Sequence[int], num_sa_slices: int, sa_slice_indices: Sequence[int] | None = None) -> list:
    """Source slice index (or None = missing) for each canonical SA plane, base to apex.

    Args:
        order: source slice indices base to apex (:func:`sa_slice_order`).
        num_sa_slices: M, the canonical SA plane count.
        sa_slice_indices: explicit source slices to use (any order; at most M); None picks M evenly spaced slices.

    Returns:
        list of M entries. With fewer than M chosen slices they keep their base-to-apex order at evenly spread
        canonical positions (a single slice goes to the middle); the other positions are None.
    """
    if sa_slice_indices is not None:
        chosen = [int(z) for z in sa_slice_indices]
        if len(chosen) > num_sa_slices or len(set(chosen)) != len(chosen) or not set(chosen) <= set(order):
            raise ValueError(
                f"sa_slice_indices {chosen} must be at most {num_sa_slices} distinct slices of the stack "
                f"{sorted(order)}"
            )
        chosen = sorted(chosen, key=list(order).index)
    elif len(order) >= num_sa_slices:
        # spacing (S - 1) / (M - 1) >= 1, so rounding never repeats an index
        picks = np.rint(np.linspace(0, len(order) - 1, num_sa_slices)).astype(int)
        chosen = [order[k] for k in picks]
    else:
        chosen = list(order)
    if len(chosen) == 1:
        positions = [(num_sa_slices - 1) // 2]
    else:
        positions = np.rint(np.linspace(0, num_sa_slices - 1, len(chosen))).astype(int).tolist()
    selection: list[int | None] = [None] * num_sa_slices
    for position, z in zip(positions, chosen):
        selection[position] = z
    return selection


def plan_sa_passes(geometry: str | Mapping[str, Any], covered: Collection[int] = ()) -> list[list[int]]:
    """Groups of source SA slices that together cover the stack (but ``covered``), each spread base to apex.

    Pass ``k`` takes every ``n``-th remaining slice of the base-to-apex order starting at ``k`` (``n`` = number of
    passes); run the transform with ``sa_slice_indices`` = each group and merge the outputs of
    :func:`probabilities_to_plane_labels` (or :func:`canonical_to_planes`; 255 marks slices a pass did not cover).
    """
    geometry = parse_geometry(geometry)
    remaining = [z for z in geometry["sa_slice_order"] if z not in set(covered)]
    num_passes = math.ceil(len(remaining) / geometry["num_sa_slices"])
    return [remaining[k::num_passes] for k in range(num_passes)]


def _long_axis_centre(subject: Subject, sa_order: list[int]) -> np.ndarray | None:
    """Heart centre from the long-axis planes' common line (and the SA middle slice), or None if undetermined."""
    la_planes = [subject.planes[stem] for stem in LA_PLANES if stem in subject.planes]
    if len(la_planes) < 2:
        return None
    normals = np.stack([plane_axes(p.affine)[2] for p in la_planes])
    points = np.stack([slice_centre(p.affine, p.image.shape, 0) for p in la_planes])
    singular_values, right_vectors = np.linalg.svd(normals)[1:]
    if singular_values[1] < MIN_LA_NORMAL_SPREAD:
        return None
    long_axis = right_vectors[-1]
    rows, offsets = list(normals), list(np.einsum("ij,ij->i", normals, points))
    sa = subject.planes.get(SA_PLANE)
    if sa is not None:
        sa_normal = plane_axes(sa.affine)[2]
        if abs(sa_normal @ long_axis) < 0.2:  # long axis (nearly) within the SA planes: no usable intersection
            return None
        mid_slice = slice_centre(sa.affine, sa.image.shape, sa_order[len(sa_order) // 2])
        rows.append(sa_normal)
        offsets.append(sa_normal @ mid_slice)
    else:
        rows.append(long_axis)
        offsets.append(long_axis @ points.mean(axis=0))
    centre = np.linalg.lstsq(np.stack(rows), np.array(offsets), rcond=None)[0]
    if sa is not None:  # the intersection must fall inside the SA field of view, else the geometry is inconsistent
        x, y, _ = world_to_voxel(sa.affine, centre)
        if not (0 <= x <= sa.image.shape[0] - 1 and 0 <= y <= sa.image.shape[1] - 1):
            return None
    return centre


def heart_centre(subject: Subject) -> tuple[np.ndarray, str]:
    """World position (3,) of the heart centre and the method that found it (one of ``CENTRE_METHODS``).

    Uses no segmentation. Found once per read subject and kept in ``subject.centre``: inference builds a subject's
    canonical stack once per pass (extra SA stacks, test-time shifts) from the same files. The fallback
    (``image_centre``) is logged as a warning.
    """
    if subject.centre is None:
        subject.centre = _find_heart_centre(subject)
    centre, method = subject.centre
    return centre.copy(), method


def _find_heart_centre(subject: Subject) -> tuple[np.ndarray, str]:
    sa = subject.planes.get(SA_PLANE)
    sa_order = sa_slice_order(sa.affine, sa.image.shape) if sa is not None else []
    centre = _long_axis_centre(subject, sa_order)
    if centre is not None:
        return centre, "la_intersection"
    if sa is not None:
        third = len(sa_order) // 3
        reference, slices = sa, sa_order[third : len(sa_order) - third] or sa_order
    else:
        reference = next(subject.planes[stem] for stem in LA_PLANES if stem in subject.planes)
        slices = [0]
    centre = slice_centre(reference.affine, reference.image.shape, float(np.mean(slices)))
    method = "image_centre"
    logger.warning(
        "subject %s: heart centre by %s (no two usable long-axis planes cutting the SA stack)", subject.id, method
    )
    return centre, method


def canonical_grid(centre: np.ndarray, u: np.ndarray, v: np.ndarray, crop_size: int, spacing_mm: float) -> np.ndarray:
    """World positions (H, W, 3) of the canonical pixels of a plane (H along ``u``, W along ``v``)."""
    offsets = (np.arange(crop_size) - (crop_size - 1) / 2) * spacing_mm
    return centre + offsets[:, None, None] * u + offsets[None, :, None] * v


def _sample_image(frames: np.ndarray, voxel_xy: np.ndarray) -> np.ndarray:
    """Bilinear sampling of a source slice (X, Y, T) at voxel positions (H, W, 2) -> (T, H, W); outside = 0."""
    size_x, size_y = frames.shape[:2]
    source = torch.from_numpy(np.ascontiguousarray(frames.transpose(2, 0, 1)))[None]  # (1, T, X, Y)
    # grid_sample's last grid axis is (W_in, H_in) = (y, x); align_corners=False maps index k to (2k + 1) / size - 1
    grid = np.stack([(2 * voxel_xy[..., 1] + 1) / size_y - 1, (2 * voxel_xy[..., 0] + 1) / size_x - 1], axis=-1)
    grid_tensor = torch.from_numpy(grid.astype(np.float32))[None]
    sampled = torch.nn.functional.grid_sample(
        source, grid_tensor, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return sampled[0].numpy()


def _sample_label(frames: np.ndarray, voxel_xy: np.ndarray) -> np.ndarray:
    """Nearest-neighbour sampling of a label slice (X, Y, T) at voxel positions (H, W, 2) -> (T, H, W); outside 255."""
    nearest = np.rint(voxel_xy).astype(np.int64)
    inside = (
        (nearest[..., 0] >= 0)
        & (nearest[..., 0] < frames.shape[0])
        & (nearest[..., 1] >= 0)
        & (nearest[..., 1] < frames.shape[1])
    )
    sampled = np.full(voxel_xy.shape[:2] + (frames.shape[2],), UNLABELLED, dtype=np.uint8)
    sampled[inside] = frames[nearest[inside][:, 0], nearest[inside][:, 1]]
    return sampled.transpose(2, 0, 1)


def resample_time(frames: np.ndarray, num_frames: int, nearest: bool = False) -> np.ndarray:
    """Cyclic resampling (T_source, ...) -> (num_frames, ...); frame 0 stays frame 0; linear or nearest frame."""
    source_count = frames.shape[0]
    if source_count == num_frames:
        return frames
    positions = np.arange(num_frames) * source_count / num_frames
    if nearest:
        return frames[np.floor(positions + 0.5).astype(np.int64) % source_count]
    before = np.floor(positions).astype(np.int64)
    weight = (positions - before).astype(np.float32).reshape((-1,) + (1,) * (frames.ndim - 1))
    return (1 - weight) * frames[before] + weight * frames[(before + 1) % source_count]


def intensity_range(image: np.ndarray) -> tuple[float, float]:
    """Robust (low, high) intensities of a plane file (percentiles ``INTENSITY_PERCENTILES`` of a subsample)."""
    flat = image.ravel(order="K")  # nibabel arrays are Fortran-ordered: "K" avoids a copy
    stride = max(1, flat.size // PERCENTILE_SAMPLE_SIZE)
    low, high = np.percentile(flat[::stride], INTENSITY_PERCENTILES)
    if high <= low:  # mostly-constant image: fall back to the full range
        low, high = float(flat.min()), float(flat.max())
    return float(low), float(high)


# --- subject -> canonical sample ------------------------------------------------------------------


def build_canonical(
    subject: Subject,
    num_sa_slices: int = 6,
    num_frames: int = 50,
    crop_size: int = 128,
    spacing_mm: float = 1.8,
    sa_slice_indices: Sequence[int] | None = None,
    centre_shift_px: Sequence[float] = (0.0, 0.0),
) -> dict[str, Any]:
    """The canonical stack of a loaded subject, as numpy arrays.

    ``centre_shift_px`` moves the heart centre by that many canonical pixels along the in-plane axes (u, v) of the SA
    stack (of the first LA view without one), so every crop moves by the shift's part in its plane: inference's
    test-time shifts (see :func:`scripts.inference.segment_input_planes`).

    Returns:
        dict with ``image_u8`` uint8 (1, P, T, H, W) (intensity x 255), ``label`` uint8 (1, P, T, H, W),
        ``plane_mask`` bool (P,), ``class_mask`` bool (6,), ``geometry`` (JSON string) and ``problems`` (list of
        strings), with P = num_sa_slices + 3 in ``labels.canonical_plane_names`` order.
    """
    names = canonical_plane_names(num_sa_slices)
    num_planes = len(names)
    image = np.zeros((1, num_planes, num_frames, crop_size, crop_size), dtype=np.uint8)
    label = np.full(image.shape, UNLABELLED, dtype=np.uint8)
    plane_mask = np.zeros(num_planes, dtype=bool)
    problems = list(subject.problems)

    sa = subject.planes.get(SA_PLANE)
    sa_order = sa_slice_order(sa.affine, sa.image.shape) if sa is not None else []
    sa_selection = select_sa_slices(sa_order, num_sa_slices, sa_slice_indices) if sa is not None else []
    if sa is not None and None in sa_selection and sa_slice_indices is None:
        problems.append(f"SA stack has {len(sa_order)} slices < {num_sa_slices}: some canonical SA planes are missing")
    centre, centre_method = heart_centre(subject)
    if any(centre_shift_px):
        reference = sa if sa is not None else next(subject.planes[s] for s in LA_PLANES if s in subject.planes)
        u, v, _ = plane_axes(reference.affine)
        centre = centre + spacing_mm * (float(centre_shift_px[0]) * u + float(centre_shift_px[1]) * v)

    # (canonical index, source plane, source slice) of every canonical plane that exists
    sources: list[tuple[int, Plane, int]] = [(k, sa, z) for k, z in enumerate(sa_selection) if z is not None]
    sources += [(num_sa_slices + k, subject.planes[s], 0) for k, s in enumerate(LA_PLANES) if s in subject.planes]

    ranges = {stem: intensity_range(plane.image) for stem, plane in subject.planes.items()}
    plane_records: list[dict[str, Any]] = [{"name": name, "source": None} for name in names]
    for index, plane, z in sources:
        u, v, normal = plane_axes(plane.affine)
        plane_point = voxel_to_world(plane.affine, np.array([0.0, 0.0, z]))
        plane_centre = centre - ((centre - plane_point) @ normal) * normal
        voxel_xy = world_to_voxel(plane.affine, canonical_grid(plane_centre, u, v, crop_size, spacing_mm))[..., :2]

        low, high = ranges[plane.name]
        frames = np.clip((plane.image[:, :, z, :] - low) / (high - low), 0.0, 1.0)
        sampled = resample_time(_sample_image(frames, voxel_xy), num_frames)
        image[0, index] = np.rint(np.clip(sampled, 0.0, 1.0) * 255).astype(np.uint8)
        if plane.label is not None:
            label[0, index] = resample_time(_sample_label(plane.label[:, :, z, :], voxel_xy), num_frames, nearest=True)
        plane_mask[index] = True
        plane_records[index] = {
            "name": names[index],
            "source": plane.name,
            "slice": int(z),
            "centre_mm": plane_centre.tolist(),
            "u": u.tolist(),
            "v": v.tolist(),
        }

    class_mask = np.zeros(NUM_CLASSES, dtype=bool)
    class_mask[list(subject.annotated_classes)] = True
    geometry = {
        "version": GEOMETRY_VERSION,
        "subject": subject.id,
        "num_sa_slices": num_sa_slices,
        "num_frames": num_frames,
        "crop_size": crop_size,
        "spacing_mm": float(spacing_mm),
        "centre_mm": centre.tolist(),
        "centre_method": centre_method,
        "centre_shift_px": [float(x) for x in centre_shift_px],
        "sa_slice_order": sa_order,
        "planes": plane_records,
        "sources": {
            stem: {"shape": list(plane.image.shape), "affine": plane.affine.tolist(), "path": str(plane.path)}
            for stem, plane in subject.planes.items()
        },
    }
    return {
        "image_u8": image,
        "label": label,
        "plane_mask": plane_mask,
        "class_mask": class_mask,
        "geometry": json.dumps(geometry),
        "problems": problems,
    }


def parse_geometry(geometry: str | Mapping[str, Any]) -> dict[str, Any]:
    """The geometry record as a dict (accepts the JSON string stored in samples)."""
    return json.loads(geometry) if isinstance(geometry, str) else dict(geometry)


# --- canonical -> source planes -------------------------------------------------------------------


def _canonical_positions(
    record: Mapping[str, Any], affine: np.ndarray, size_x: int, size_y: int, crop_size: int, spacing_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical pixel coordinates (i along H, j along W; float (X, Y) each) of every pixel of the source slice of
    plane ``record`` (a ``geometry["planes"]`` entry) in a file of in-plane size (``size_x``, ``size_y``)."""
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
            :func:`plan_sa_passes`); for float maps pass e.g. ``np.nan``.
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
        nearest_frame = np.floor(np.arange(source_frames) * num_frames / source_frames + 0.5).astype(int) % num_frames
        for index, record in planes:
            i, j = _canonical_positions(record, affine, size_x, size_y, crop_size, geometry["spacing_mm"])
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


def probabilities_to_plane_labels(
    passes: Sequence[tuple[torch.Tensor, str | Mapping[str, Any]]],
    stems: Collection[str] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labels of every input plane file from the canonical class probabilities of one or more passes over a subject:
    interpolated linearly in space (bilinear) and cyclically in time onto the file's own pixels and frames, averaged
    over the passes that cut the same source slice, then the most probable class.

    Labels back-projected by nearest neighbour snap every boundary to the 1.8 mm canonical grid; the probabilities
    carry where between two canonical pixels a boundary lies, which matters most where the file's pixels are finer
    than the grid and for thin structures (the myocardium). Passes are the extra SA stacks (:func:`plan_sa_passes`,
    each slice cut once) and test-time shifts of the crop (``centre_shift_px``, the same slice cut again).

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
                i, j = _canonical_positions(record, affine, size_x, size_y, crop_size, geometry["spacing_mm"])
                cuts.append((plane, i, j))
                # the crop's edge as nearest neighbour draws it: beyond half a canonical pixel is outside
                inside |= (np.rint(i) >= 0) & (np.rint(i) < crop_size) & (np.rint(j) >= 0) & (np.rint(j) < crop_size)
            labels = _bilinear_labels(cuts).numpy()  # (X, Y, T_source)
            labels[~inside] = 0
            output[:, :, source_slice] = labels
        outputs[stem] = (output, affine)
    return outputs


def _on_source_frames(plane: torch.Tensor, source_frames: int) -> torch.Tensor:
    """Canonical probabilities ``plane`` (C, T, H, W) linearly interpolated (cyclically) onto ``source_frames``
    frames: source frame k lies at canonical frame k * T / T_source (the inverse of resample_time)."""
    num_frames = plane.shape[1]
    if source_frames == num_frames:  # e.g. 50 frames acquired, 50 canonical: nothing to blend
        return plane
    position = np.arange(source_frames) * num_frames / source_frames
    before = np.floor(position).astype(np.int64)
    weight = torch.from_numpy((position - before).astype(np.float32))[None, :, None, None]
    return (1 - weight) * plane[:, before] + weight * plane[:, (before + 1) % num_frames]


# --- cache ----------------------------------------------------------------------------------------


def cache_key(folder: str | os.PathLike, parameters: Mapping[str, Any]) -> str:
    """Hash of the subject's input files (path, size, mtime) and the transform parameters."""
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in subject_files(folder)]
    content = json.dumps({"version": CACHE_VERSION, "files": stats, "parameters": parameters}, sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()[:20]


def save_cached(path: Path, built: Mapping[str, Any]) -> None:
    """Store a :func:`build_canonical` result atomically: raw uint8 image, zlib labels, metadata (npz, no pickle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    label = built["label"]
    arrays = {
        "image_u8": built["image_u8"],
        "label_zlib": np.frombuffer(zlib.compress(label.tobytes(), 1), dtype=np.uint8),
        "label_shape": np.array(label.shape),
        "plane_mask": built["plane_mask"],
        "class_mask": built["class_mask"],
        "geometry": np.array(built["geometry"]),
        "problems": np.array(json.dumps(built["problems"])),
    }
    with atomic_path(path) as temp_path:
        np.savez(temp_path, **arrays)


def load_cached(path: Path) -> dict[str, Any]:
    """Read a cache file written by :func:`save_cached` (same keys as :func:`build_canonical`)."""
    with np.load(path, allow_pickle=False) as stored:
        label_shape = tuple(int(n) for n in stored["label_shape"])
        label = np.frombuffer(zlib.decompress(stored["label_zlib"].tobytes()), dtype=np.uint8).reshape(label_shape)
        return {
            "image_u8": stored["image_u8"],
            "label": label,
            "plane_mask": stored["plane_mask"],
            "class_mask": stored["class_mask"],
            "geometry": str(stored["geometry"]),
            "problems": json.loads(str(stored["problems"])),
        }


# --- MONAI transform ------------------------------------------------------------------------------


class LoadCineSubjectd(MapTransform):
    """Load a subject folder into the canonical sample (keys of ``docs/CONTRACTS.md``).

    Input: a :func:`scripts.subject.load_datalist` item; ``d[key]`` is the subject folder (use one key),
    ``d["id"]`` and ``d["phenotypes"]`` are optional. Output adds ``image`` float32 (1, P, T, H, W) torch,
    ``plane_mask`` bool (P,), ``label`` uint8 (1, P, T, H, W), ``class_mask`` bool (6,), ``phenotypes`` float32
    (17,), ``geometry`` (JSON string), ``id`` and ``problems`` (one string, a problem per line).

    Args:
        keys: the key holding the subject folder.
        num_sa_slices, num_frames, crop_size, spacing_mm: the canonical grid (M, T, H = W, mm per pixel).
        label_map: label convention of the label files (the subject's ``subject.json`` overrides it).
        sa_slice_indices: explicit source SA slices (see :func:`plan_sa_passes`); None = evenly spaced.
        centre_shift_px: (u, v) canonical pixels to move the heart centre by (see :func:`build_canonical`).
        cache_dir: folder for preprocessed samples (keyed on input file stats and these parameters), or None.
    """

    def __init__(
        self,
        keys: KeysCollection = "subject",
        num_sa_slices: int = 6,
        num_frames: int = 50,
        crop_size: int = 128,
        spacing_mm: float = 1.8,
        label_map: str | Mapping[int, int] = "project",
        sa_slice_indices: Sequence[int] | None = None,
        centre_shift_px: Sequence[float] = (0.0, 0.0),
        cache_dir: str | os.PathLike | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_sa_slices = int(num_sa_slices)
        self.num_frames = int(num_frames)
        self.crop_size = int(crop_size)
        self.spacing_mm = float(spacing_mm)
        self.label_map = label_map if isinstance(label_map, str) else {int(k): int(v) for k, v in label_map.items()}
        self.sa_slice_indices = None if sa_slice_indices is None else [int(z) for z in sa_slice_indices]
        if len(centre_shift_px) != 2:
            raise ValueError(f"centre_shift_px must be (u, v) canonical pixels, got {centre_shift_px}")
        self.centre_shift_px = [float(x) for x in centre_shift_px]
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

    def parameters(self) -> dict[str, Any]:
        """The transform parameters that change the sample (part of the cache key)."""
        parameters = {
            "num_sa_slices": self.num_sa_slices,
            "num_frames": self.num_frames,
            "crop_size": self.crop_size,
            "spacing_mm": self.spacing_mm,
            "label_map": self.label_map,
            "sa_slice_indices": self.sa_slice_indices,
        }
        if any(self.centre_shift_px):  # unshifted samples keep the keys of caches written before shifts existed
            parameters["centre_shift_px"] = self.centre_shift_px
        return parameters

    def read_files(self, data: Mapping[Hashable, Any]) -> Subject | None:
        """The subject's files (``data[key]``, one key), read once to build several of its samples from (the SA
        passes of inference: reading the NIfTI files costs more than building a sample); None when a cache is set,
        which then serves each sample and reads the files only on a miss."""
        if self.cache_dir is not None:
            return None
        return load_subject(data[self.first_key(data)], self.label_map)

    def build(self, folder: str | os.PathLike, subject: Subject | None = None) -> dict[str, Any]:
        """The :func:`build_canonical` result of a subject folder, through the cache when one is set; ``subject``
        (the folder's files, already read) spares reading them again."""
        cache_path = None
        if self.cache_dir is not None:
            cache_path = self.cache_dir / f"{Path(folder).name}-{cache_key(folder, self.parameters())}.npz"
            if cache_path.is_file():
                try:
                    return load_cached(cache_path)
                except Exception as err:  # a damaged cache file is rebuilt, never trusted
                    logger.warning("cache file %s unreadable (%s); rebuilding", cache_path, err)
        if subject is None:
            subject = load_subject(folder, self.label_map)
        built = build_canonical(
            subject,
            self.num_sa_slices,
            self.num_frames,
            self.crop_size,
            self.spacing_mm,
            self.sa_slice_indices,
            self.centre_shift_px,
        )
        if cache_path is not None:
            save_cached(cache_path, built)
        return built

    def __call__(self, data: Mapping[Hashable, Any], subject: Subject | None = None) -> dict[Hashable, Any]:
        """``subject``: the files of ``data[key]`` already read (:meth:`read_files`), to build from."""
        d = dict(data)
        for key in self.key_iterator(d):
            folder = Path(d[key])
            built = self.build(folder, subject)
            d["image"] = torch.from_numpy(built["image_u8"].astype(np.float32) * np.float32(1 / 255))
            d["label"] = torch.from_numpy(np.array(built["label"]))
            d["plane_mask"] = torch.from_numpy(np.array(built["plane_mask"], dtype=bool))
            d["class_mask"] = torch.from_numpy(np.array(built["class_mask"], dtype=bool))
            phenotypes = d.get("phenotypes")
            if phenotypes is None:
                phenotypes = np.full(len(PHENOTYPE_NAMES), np.nan, dtype=np.float32)
            d["phenotypes"] = torch.as_tensor(np.asarray(phenotypes, dtype=np.float32))
            d["geometry"] = built["geometry"]
            d["id"] = str(d.get("id") or folder.name)
            d["problems"] = "\n".join(built["problems"])
        return d


class RandSAStackd(LoadCineSubjectd, RandomizableTransform):
    """Training loader: with probability ``prob`` the SA planes are one of the stacks that inference's extra passes
    use (:func:`plan_sa_passes` of the slices the canonical stack leaves out) instead of the canonical one.

    Inference segments every slice of the stack, but the canonical choice trains on the same 6 slices of a subject
    every epoch, so a slice it skips (e.g. the second from the base, where the atria meet the ventricles) is never a
    training target. Same arguments as :class:`LoadCineSubjectd`, plus ``prob``; both stacks go through the cache.
    """

    def __init__(self, *args: Any, prob: float = 0.0, **kwargs: Any) -> None:
        LoadCineSubjectd.__init__(self, *args, **kwargs)
        RandomizableTransform.__init__(self, prob)
        if self.sa_slice_indices is not None:
            raise ValueError("RandSAStackd chooses the SA slices itself: do not pass sa_slice_indices")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize(None)
        d = LoadCineSubjectd.__call__(self, data)
        if not self._do_transform:
            return d
        canonical = [p["slice"] for p in parse_geometry(d["geometry"])["planes"] if p["source"] == SA_PLANE]
        passes = plan_sa_passes(d["geometry"], canonical)
        if not passes:  # a stack of at most num_sa_slices slices: the canonical stack holds them all
            return d
        alternate = copy.copy(self)
        alternate.sa_slice_indices = passes[self.R.randint(len(passes))]
        return LoadCineSubjectd.__call__(alternate, data)


# --- one 4-D NIfTI per case -----------------------------------------------------------------------

#: NIfTI ``descrip`` prefix of canonical stacks; the plane mask follows as a string of 0/1.
NIFTI_DESCRIPTION = "canonical cine stack (H,W,P,T) mask="


def _stack_to_nifti(stack: np.ndarray, plane_mask: np.ndarray, geometry: str | None, spacing_mm: float) -> Any:
    """(1, P, T, H, W) -> Nifti1Image (H, W, P, T) with the plane mask in ``descrip`` and geometry as extension."""
    volume = np.ascontiguousarray(np.asarray(stack)[0].transpose(2, 3, 0, 1))
    nifti = nib.Nifti1Image(volume, np.diag([spacing_mm, spacing_mm, 1.0, 1.0]))
    nifti.header.set_xyzt_units("mm", "sec")
    nifti.header["pixdim"][4] = 1.0  # frame index: the cycle duration is not known here
    nifti.header["descrip"] = NIFTI_DESCRIPTION + "".join("1" if m else "0" for m in np.asarray(plane_mask))
    if geometry is not None:
        nifti.header.extensions.append(nib.nifti1.Nifti1Extension("comment", geometry.encode()))
    return nifti


def write_canonical_nifti(
    sample: Mapping[str, Any], path: str | os.PathLike, label_path: str | os.PathLike | None = None
) -> tuple[Path, Path | None]:
    """Write a sample's canonical stack as one 4-D NIfTI (for one-image-per-case tools such as MONAI Label).

    Layout: array (H, W, P, T), float32 image (uint8 label), affine ``diag(spacing, spacing, 1, 1)`` (the planes
    are not one 3-D volume: axis 2 is the plane index, axis 3 the frame index), ``descrip`` =
    ``"canonical cine stack (H,W,P,T) mask=<0/1 per plane>"`` and the geometry JSON as a comment extension, so
    predictions on the file can still be written back with :func:`canonical_to_planes`.

    Args:
        sample: a :class:`LoadCineSubjectd` output (``image``, ``plane_mask``, optionally ``label`` and ``geometry``).
        path: the image file (``.nii.gz``).
        label_path: the label file; default ``<path stem>_label.nii.gz``; written only if the sample has a label.

    Returns:
        (image path, label path or None).
    """
    path = Path(path)
    geometry = sample.get("geometry")
    spacing_mm = parse_geometry(geometry)["spacing_mm"] if geometry is not None else 1.0
    plane_mask = np.asarray(sample["plane_mask"], dtype=bool)
    image = np.asarray(sample["image"], dtype=np.float32)
    with atomic_path(path) as temp_path:
        nib.save(_stack_to_nifti(image, plane_mask, geometry, spacing_mm), temp_path)
    if sample.get("label") is None:
        return path, None
    if label_path is None:
        label_path = path.with_name(path.name.replace(".nii.gz", "").replace(".nii", "") + "_label.nii.gz")
    label_path = Path(label_path)
    label = np.asarray(sample["label"], dtype=np.uint8)
    with atomic_path(label_path) as temp_path:
        nib.save(_stack_to_nifti(label, plane_mask, geometry, spacing_mm), temp_path)
    return path, label_path


def read_canonical_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a file of :func:`write_canonical_nifti`: (1, P, T, H, W) array (stored dtype) and plane_mask bool (P,).

    Without the mask in ``descrip`` (file edited by another tool), planes that are all zero count as missing.
    """
    nifti = nib.load(str(path))
    volume = np.asanyarray(nifti.dataobj)
    if volume.ndim != 4:
        raise ValueError(f"{path}: expected a 4-D (H, W, P, T) canonical stack, got shape {volume.shape}")
    stack = volume.transpose(2, 3, 0, 1)[None]
    description = nifti.header["descrip"].tobytes().split(b"\0")[0].decode(errors="replace")
    mask_text = description[len(NIFTI_DESCRIPTION) :] if description.startswith(NIFTI_DESCRIPTION) else ""
    if len(mask_text) == stack.shape[1] and set(mask_text) <= {"0", "1"}:
        plane_mask = np.array([c == "1" for c in mask_text])
    else:
        plane_mask = np.abs(stack[0]).reshape(stack.shape[1], -1).max(axis=1) > 0
    return np.ascontiguousarray(stack), plane_mask


def read_canonical_geometry(path: str | os.PathLike) -> str | None:
    """The geometry JSON stored in a file of :func:`write_canonical_nifti`, or None."""
    for extension in nib.load(str(path)).header.extensions:
        content = extension.get_content()
        if isinstance(content, bytes) and content.startswith(b"{"):
            return content.decode()
    return None
