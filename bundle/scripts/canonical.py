"""The canonical plane stack: from a subject's cine planes to the network's sample.

A subject's planes become P = M + 3 canonical planes (M SA slices base to apex, then the 2ch, 3ch and 4ch views,
``labels.canonical_plane_names``) of T frames of H x W pixels at ``spacing_mm`` mm (H = W = ``crop_size``). Each is
cut from one source slice on the grid of :mod:`scripts.geometry`, centred on the heart centre of
:mod:`scripts.heart_centre` projected onto its plane, sampled bilinearly (labels: nearest neighbour). Outside the
source field of view the image is 0 and the label 255 (not annotated).

SA slices: ordered base to apex by geometry only (:func:`scripts.geometry.sa_slice_order`), then M of them are taken
evenly spaced over the stack. A shorter stack fills spread-out positions and leaves the others missing (zero image,
255 label, plane_mask False). Inference covers the rest of a longer stack with extra passes (:func:`plan_sa_passes`).

Time: cyclic linear resampling of any acquired frame count to T (frame 0 stays frame 0); labels take the nearest
frame (:mod:`scripts.frames`). Intensity: per source plane file, percentiles 1 and 99.5 map to [0, 1], clipped, then
quantised to 256 levels (multiples of 1/255), so a cached sample (:mod:`scripts.cache`) is bit-identical to a fresh
one.

Sample keys (:class:`LoadCineSubjectd`): ``image`` float32 (1, P, T, H, W), ``plane_mask`` bool (P,), ``label`` uint8
(1, P, T, H, W), ``class_mask`` bool (6,), ``phenotypes`` float32 (17,), ``geometry`` (JSON string, so it collates
as a list of strings under MONAI ``list_data_collate``; :func:`parse_geometry` reads it, and
:mod:`scripts.writeback` takes it to write predictions back), ``id`` and ``problems`` (one string, one problem per
line, "" if none: lists of different lengths do not collate).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Collection, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

from scripts.cache import cache_file, load_cached, save_cached
from scripts.flags import as_flag
from scripts.frames import resample_time
from scripts.geometry import (
    canonical_grid,
    patient_axes,
    plane_axes,
    sa_apex_direction,
    sa_slice_order,
    voxel_to_world,
    world_to_voxel,
)
from scripts.heart_centre import heart_centre, lv_offset_px
from scripts.labels import LA_PLANES, NUM_CLASSES, PHENOTYPE_NAMES, SA_PLANE, UNLABELLED, canonical_plane_names
from scripts.sample_geometry import parse_geometry, sa_slices, with_centre_method
from scripts.subject import Plane, Subject, load_subject

logger = logging.getLogger(__name__)

GEOMETRY_VERSION = 1
#: how the in-plane axes of the canonical planes are chosen (``LoadCineSubjectd.in_plane_axes``): from the patient's
#: axes, the same for any storage of a plane (``scripts.geometry.patient_axes``), or as the file stores its voxels
IN_PLANE_AXES = ("patient", "stored")
INTENSITY_PERCENTILES = (1.0, 99.5)
#: At most this many voxels per plane file enter the percentile estimate (strided subsample, deterministic).
PERCENTILE_SAMPLE_SIZE = 500_000


# --- which SA slices a stack takes ----------------------------------------------------------------


def select_sa_slices(order: Sequence[int], num_sa_slices: int, sa_slice_indices: Sequence[int] | None = None) -> list:
    """Source slice index (or None = missing) for each canonical SA plane, base to apex.

    Args:
        order: source slice indices base to apex (:func:`scripts.geometry.sa_slice_order`).
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
    :func:`scripts.writeback.probabilities_to_plane_labels` (or :func:`scripts.writeback.canonical_to_planes`; 255
    marks slices a pass did not cover).
    """
    geometry = parse_geometry(geometry)
    remaining = [z for z in geometry["sa_slice_order"] if z not in set(covered)]
    num_passes = math.ceil(len(remaining) / geometry["num_sa_slices"])
    return [remaining[k::num_passes] for k in range(num_passes)]


def extra_sa_passes(geometry: str | Mapping[str, Any]) -> list[list[int]]:
    """The source SA slice groups of inference's extra passes beside the sample of ``geometry``: the
    :func:`plan_sa_passes` of the slices its SA stack leaves out (empty when it holds the whole stack)."""
    return plan_sa_passes(geometry, sa_slices(geometry))


# --- subject -> canonical stack -------------------------------------------------------------------


def intensity_range(image: np.ndarray) -> tuple[float, float]:
    """Robust (low, high) intensities of a plane file (percentiles ``INTENSITY_PERCENTILES`` of a subsample)."""
    flat = image.ravel(order="K")  # nibabel arrays are Fortran-ordered: "K" avoids a copy
    stride = max(1, flat.size // PERCENTILE_SAMPLE_SIZE)
    low, high = np.percentile(flat[::stride], INTENSITY_PERCENTILES)
    if high <= low:  # mostly-constant image: fall back to the full range
        low, high = float(flat.min()), float(flat.max())
    return float(low), float(high)


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


def _cut_plane(
    plane: Plane,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    source_slice: int,
    name: str,
    centre: np.ndarray,
    intensities: tuple[float, float],
    num_frames: int,
    crop_size: int,
    spacing_mm: float,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """One canonical plane cut from slice ``source_slice`` of ``plane`` along ``axes`` (u, v, normal; see
    :func:`plane_canonical_axes`), centred on the projection of ``centre`` (3,) mm: uint8 image (T, H, W)
    (``intensities`` (low, high) -> 0..255), uint8 label (T, H, W) or None without a label file, and its
    ``geometry["planes"]`` record."""
    u, v, normal = axes
    plane_point = voxel_to_world(plane.affine, np.array([0.0, 0.0, source_slice]))
    plane_centre = centre - ((centre - plane_point) @ normal) * normal
    voxel_xy = world_to_voxel(plane.affine, canonical_grid(plane_centre, u, v, crop_size, spacing_mm))[..., :2]

    low, high = intensities
    frames = np.clip((plane.image[:, :, source_slice, :] - low) / (high - low), 0.0, 1.0)
    sampled = resample_time(_sample_image(frames, voxel_xy), num_frames)
    image = np.rint(np.clip(sampled, 0.0, 1.0) * 255).astype(np.uint8)
    label = None
    if plane.label is not None:
        label = resample_time(_sample_label(plane.label[:, :, source_slice, :], voxel_xy), num_frames, nearest=True)
    record = {
        "name": name,
        "source": plane.name,
        "slice": int(source_slice),
        "centre_mm": plane_centre.tolist(),
        "u": u.tolist(),
        "v": v.tolist(),
    }
    return image, label, record


def plane_canonical_axes(
    subject: Subject, plane: Plane, in_plane_axes: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, normal) of the canonical planes cut from ``plane``: :func:`scripts.geometry.patient_axes` (a long-axis
    view's apex along the subject's SA normal where it has an SA stack) for ``"patient"``, the stored voxel axes for
    ``"stored"``."""
    if in_plane_axes == "stored":
        return plane_axes(plane.affine)
    sa = subject.planes.get(SA_PLANE)
    apex = sa_apex_direction(sa.affine) if sa is not None else None
    return patient_axes(plane.affine, plane.name == SA_PLANE, apex)


def _crop_centre(
    subject: Subject, centre_shift_px: Sequence[float], spacing_mm: float, in_plane_axes: str
) -> tuple[np.ndarray, str]:
    """World (mm) centre of every crop and how it was found: the heart centre moved by ``centre_shift_px`` canonical
    pixels along the canonical in-plane axes of the SA stack (of the first LA view without one)."""
    centre, centre_method = heart_centre(subject)
    if any(centre_shift_px):
        sa = subject.planes.get(SA_PLANE)
        reference = sa if sa is not None else next(subject.planes[s] for s in LA_PLANES if s in subject.planes)
        u, v, _ = plane_canonical_axes(subject, reference, in_plane_axes)
        centre = centre + spacing_mm * (float(centre_shift_px[0]) * u + float(centre_shift_px[1]) * v)
    return centre, centre_method


def _source_records(subject: Subject) -> dict[str, dict[str, Any]]:
    """Shape, affine and path of every plane file, for writing predictions back onto it."""
    return {
        stem: {"shape": list(plane.image.shape), "affine": plane.affine.tolist(), "path": str(plane.path)}
        for stem, plane in subject.planes.items()
    }


def build_canonical(
    subject: Subject,
    num_sa_slices: int = 6,
    num_frames: int = 50,
    crop_size: int = 128,
    spacing_mm: float = 1.8,
    sa_slice_indices: Sequence[int] | None = None,
    centre_shift_px: Sequence[float] = (0.0, 0.0),
    in_plane_axes: str = "stored",
) -> dict[str, Any]:
    """The canonical stack of a loaded subject, as numpy arrays.

    ``centre_shift_px`` moves the heart centre by that many canonical pixels along the in-plane axes (u, v) of the SA
    stack (of the first LA view without one), so every crop moves by the shift's part in its plane: inference's
    test-time shifts (see :meth:`scripts.subject_segmenter.SubjectSegmenter.input_plane_labels`). ``in_plane_axes``:
    one of :data:`IN_PLANE_AXES` (:func:`plane_canonical_axes`).

    Returns:
        dict with ``image_u8`` uint8 (1, P, T, H, W) (intensity x 255), ``label`` uint8 (1, P, T, H, W),
        ``plane_mask`` bool (P,), ``class_mask`` bool (6,), ``geometry`` (JSON string) and ``problems`` (list of
        strings), with P = num_sa_slices + 3 in ``labels.canonical_plane_names`` order.
    """
    names = canonical_plane_names(num_sa_slices)
    image = np.zeros((1, len(names), num_frames, crop_size, crop_size), dtype=np.uint8)
    label = np.full(image.shape, UNLABELLED, dtype=np.uint8)
    plane_mask = np.zeros(len(names), dtype=bool)
    problems = list(subject.problems)

    sa = subject.planes.get(SA_PLANE)
    sa_order = sa_slice_order(sa.affine, sa.image.shape) if sa is not None else []
    sa_selection = select_sa_slices(sa_order, num_sa_slices, sa_slice_indices) if sa is not None else []
    if sa is not None and None in sa_selection and sa_slice_indices is None:
        problems.append(f"SA stack has {len(sa_order)} slices < {num_sa_slices}: some canonical SA planes are missing")
    if in_plane_axes not in IN_PLANE_AXES:
        raise ValueError(f"in_plane_axes must be one of {IN_PLANE_AXES}, got {in_plane_axes!r}")
    centre, centre_method = _crop_centre(subject, centre_shift_px, spacing_mm, in_plane_axes)

    # (canonical index, source plane, source slice) of every canonical plane that exists
    sources: list[tuple[int, Plane, int]] = [(k, sa, z) for k, z in enumerate(sa_selection) if z is not None]
    sources += [(num_sa_slices + k, subject.planes[s], 0) for k, s in enumerate(LA_PLANES) if s in subject.planes]
    ranges = {stem: intensity_range(plane.image) for stem, plane in subject.planes.items()}
    plane_records: list[dict[str, Any]] = [{"name": name, "source": None} for name in names]
    for index, plane, z in sources:
        axes = plane_canonical_axes(subject, plane, in_plane_axes)
        image[0, index], plane_label, plane_records[index] = _cut_plane(
            plane, axes, z, names[index], centre, ranges[plane.name], num_frames, crop_size, spacing_mm
        )
        if plane_label is not None:
            label[0, index] = plane_label
        plane_mask[index] = True

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
        "sources": _source_records(subject),
    }
    return {
        "image_u8": image,
        "label": label,
        "plane_mask": plane_mask,
        "class_mask": class_mask,
        "geometry": json.dumps(geometry),
        "problems": problems,
    }


# --- MONAI transforms -----------------------------------------------------------------------------


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
        in_plane_axes: ``"stored"`` (the files' voxel axes, as the shipped weights were trained) or ``"patient"``
            (the canonical orientation does not depend on how a file stores its voxels): see
            :func:`plane_canonical_axes`.
        cache_dir: folder for preprocessed samples (keyed on input file stats and these parameters), or None.
        centre_on_labelled_lv: training only: a subject whose heart centre is the image centre and whose SA planes
            have LV blood-pool labels is cut around their mean position (``centre_method`` ``lv_labels``), as
            inference recentres an SA-only study on the LV it segments
            (:meth:`scripts.subject_segmenter.SubjectSegmenter.centred_sample`).
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
        in_plane_axes: str = "stored",
        cache_dir: str | os.PathLike | None = None,
        allow_missing_keys: bool = False,
        centre_on_labelled_lv: bool = False,
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
        if in_plane_axes not in IN_PLANE_AXES:
            raise ValueError(f"in_plane_axes must be one of {IN_PLANE_AXES}, got {in_plane_axes!r}")
        self.in_plane_axes = in_plane_axes
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.centre_on_labelled_lv = as_flag(centre_on_labelled_lv, "centre_on_labelled_lv")

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
        # unshifted samples on the stored axes keep the keys of caches written before these options existed
        if any(self.centre_shift_px):
            parameters["centre_shift_px"] = self.centre_shift_px
        if self.in_plane_axes != "stored":
            parameters["in_plane_axes"] = self.in_plane_axes
        if self.centre_on_labelled_lv:
            parameters["centre_on_labelled_lv"] = True
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
            cache_path = cache_file(self.cache_dir, folder, self.parameters())
            if cache_path.is_file():
                try:
                    return load_cached(cache_path)
                except Exception as err:  # a damaged cache file is rebuilt, never trusted
                    logger.warning("cache file %s unreadable (%s); rebuilding", cache_path, err)
        if subject is None:
            subject = load_subject(folder, self.label_map)
        grid = (self.num_sa_slices, self.num_frames, self.crop_size, self.spacing_mm, self.sa_slice_indices)
        built = build_canonical(subject, *grid, self.centre_shift_px, self.in_plane_axes)
        if self.centre_on_labelled_lv:
            built = self._centred_on_labelled_lv(subject, built, grid)
        if cache_path is not None:
            save_cached(cache_path, built)
        return built

    def _centred_on_labelled_lv(self, subject: Subject, built: dict[str, Any], grid: tuple) -> dict[str, Any]:
        """``built`` cut again around the mean LV blood-pool label of its SA planes, where its centre is the image
        centre and it has such labels (see ``centre_on_labelled_lv``); else ``built`` itself."""
        geometry = json.loads(built["geometry"])
        offset = lv_offset_px(geometry, built["label"][0]) if geometry["centre_method"] == "image_centre" else None
        if offset is None:
            return built
        centred = build_canonical(subject, *grid, np.asarray(self.centre_shift_px) + offset, self.in_plane_axes)
        return with_centre_method(centred, "lv_labels")

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
        passes = extra_sa_passes(d["geometry"])
        if not passes:  # a stack of at most num_sa_slices slices: the canonical stack holds them all
            return d
        alternate = copy.copy(self)
        alternate.sa_slice_indices = passes[self.R.randint(len(passes))]
        return LoadCineSubjectd.__call__(alternate, data)
