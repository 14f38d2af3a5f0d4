"""One image file per case, as MONAI Label and other one-image tools hand it: a cine plane file or a canonical stack.

The bundle's ``run`` segments subject folders (every plane of a study together). Tools built around one image per case
(MONAI Label's ``BundleInferTask``: ``{"image": path}`` through the config's ``preprocessing``, ``inferer`` and
``postprocessing``) get the same segmentation through three pieces:

- :class:`LoadCineFiled` reads the file: a plane file (``sa``, ``la_2ch``, ``la_3ch`` or ``la_4ch`` as in a subject
  folder, 4-D (X, Y, S, T)) or a canonical stack of :mod:`scripts.canonical_nifti` (H, W, P, T).
- :class:`CineFileInferer` segments it as inference does a subject of that one plane (every SA slice, the
  intensity refinement, the largest heart) and gives the labels in the file's own grid.
- :class:`SelectFramed` keeps one frame (default 0: end-diastole in ECG-triggered cine), because one-image tools
  show and write 3-D labels; MONAI Label's ``Restored`` and writer then write it with the file's affine.
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Hashable, Iterator, Mapping

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform

from scripts.canonical import LoadCineSubjectd
from scripts.canonical_nifti import NIFTI_DESCRIPTION, read_canonical_nifti
from scripts.labels import ALL_PLANE_FILES, SA_PLANE
from scripts.precision import precision_context
from scripts.subject_segmenter import SubjectSegmenter
from scripts.weights import unwrap_network

#: meta key of the loaded image naming its source: {"path": str, "stem": plane file stem, or None for a canonical stack}
SOURCE_META_KEY = "cine_file"
_VIEW_IN_NAME = {"la_2ch": r"2ch", "la_3ch": r"3ch", "la_4ch": r"4ch"}


def is_canonical_stack(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a canonical stack written by :func:`scripts.canonical_nifti.write_canonical_nifti`."""
    description = nib.load(str(path)).header["descrip"].tobytes().split(b"\0")[0]
    return description.decode(errors="replace").startswith(NIFTI_DESCRIPTION)


def plane_stem(path: str | os.PathLike, shape: tuple[int, ...], view: str | None = None) -> str:
    """The subject-folder stem (``sa``, ``la_2ch``, ``la_3ch``, ``la_4ch``) of a plane file of spatial ``shape``.

    ``view`` (one of the stems) wins; else a file with several slices is the SA stack, and a single-slice file must
    name its view (``2ch``, ``3ch`` or ``4ch`` in the file name), because the network places each long-axis view in
    its own slot.
    """
    if view is not None:
        if view not in ALL_PLANE_FILES:
            raise ValueError(f"{path}: view {view!r} is not one of {', '.join(ALL_PLANE_FILES)}")
        return view
    name = Path(path).name.lower()
    named = [stem for stem, pattern in _VIEW_IN_NAME.items() if re.search(pattern, name)]
    if len(named) == 1:
        return named[0]
    if len(shape) >= 3 and shape[2] > 1:
        return SA_PLANE
    raise ValueError(
        f"{path}: a single-slice cine whose view is not in its name; rename it with 2ch, 3ch or 4ch in the name or "
        f"pass view (one of {', '.join(ALL_PLANE_FILES)})"
    )


@contextmanager
def one_plane_subject(path: Path, stem: str) -> Iterator[dict[str, str]]:
    """A datalist item of a temporary subject folder that holds ``path`` (linked) as its ``stem`` plane; the folder
    is named after the file, so that warnings name the file."""
    case = re.sub(r"\.nii(\.gz)?$", "", path.name) or "case"
    with tempfile.TemporaryDirectory() as parent:
        folder = Path(parent) / case
        folder.mkdir()
        os.symlink(path.resolve(), folder / f"{stem}.nii.gz" if path.name.endswith(".gz") else folder / f"{stem}.nii")
        yield {"subject": str(folder), "id": case}


def _file_meta(path: Path, spatial_shape: tuple[int, ...], affine: np.ndarray, stem: str | None) -> dict[str, Any]:
    """Meta of the loaded image: what one-image tools restore the prediction to (spatial shape, affine of the file)."""
    affine_tensor = torch.as_tensor(affine, dtype=torch.float64)
    return {
        "filename_or_obj": str(path),
        "spatial_shape": np.asarray(spatial_shape),
        "affine": affine_tensor,
        "original_affine": affine_tensor.clone(),
        SOURCE_META_KEY: {"path": str(path), "stem": stem},
    }


class LoadCineFiled(MapTransform):
    """Load one image file into the canonical sample, remembering the file to write the labels back to.

    Input: ``d[key]`` a file path; ``d["view"]`` optional (a plane file's stem, see :func:`plane_stem`).
    Output: ``d[key]`` a :class:`monai.data.MetaTensor` float32 (1, P, T, H, W) whose meta holds the file's spatial
    shape (3-D, without frames) and affine, and :data:`SOURCE_META_KEY`; ``d["plane_mask"]`` bool (P,);
    ``d["geometry"]`` (plane files; None for canonical stacks).

    Args:
        load_subject: the canonical loader of the config; a plane file is loaded as a subject of that one plane.
        keys: the key holding the path.
    """

    def __init__(self, load_subject: LoadCineSubjectd, keys: str = "image") -> None:
        super().__init__(keys)
        self.load_subject = load_subject

    def _load(self, path: Path, view: str | None) -> tuple[torch.Tensor, torch.Tensor, str | None, dict[str, Any]]:
        """(image (1, P, T, H, W), plane_mask (P,), geometry or None, meta) of one file."""
        nifti = nib.load(str(path))
        if nifti.ndim != 4:
            raise ValueError(f"{path}: a cine file is 4-D (X, Y, slices, frames); got shape {nifti.shape}")
        if is_canonical_stack(path):
            stack, plane_mask = read_canonical_nifti(path)
            image = torch.from_numpy(stack.astype(np.float32))
            return image, torch.from_numpy(plane_mask), None, _file_meta(path, nifti.shape[:3], nifti.affine, None)
        stem = plane_stem(path, nifti.shape, view)
        with one_plane_subject(path, stem) as item:
            sample = self.load_subject(item)
        meta = _file_meta(path, nifti.shape[:3], nifti.affine, stem)
        return sample["image"], sample["plane_mask"], sample["geometry"], meta

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = Path(d[key])
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such image file")
            image, plane_mask, geometry, meta = self._load(path, d.get("view"))
            d[key] = MetaTensor(image, meta=meta)
            d["plane_mask"] = plane_mask
            d["geometry"] = geometry
        return d


class CineFileInferer(Inferer):
    """Labels of a :class:`LoadCineFiled` image in its file's own grid.

    A plane file is segmented as inference segments a subject that has only that plane (:class:`SubjectSegmenter`:
    every SA slice, intensity refinement, largest heart); a canonical stack is one network pass over its planes.

    Args:
        segmenter: the config's subject segmenter; the network handed to :meth:`__call__` replaces its own.

    Example::

        >>> labels = CineFileInferer(segmenter)(loaded["image"][None], network)  # (1, 1, X, Y, S, T) float32
    """

    def __init__(self, segmenter: SubjectSegmenter) -> None:
        super().__init__()
        self.segmenter = segmenter

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``inputs`` (1, 1, P, T, H, W) MetaTensor -> labels float32 (1, 1, X, Y, S, T) of a plane file, or
        (1, 1, H, W, P, T) of a canonical stack (the stack file's layout)."""
        if not isinstance(inputs, MetaTensor) or SOURCE_META_KEY not in inputs.meta:
            raise ValueError("CineFileInferer needs the MetaTensor of LoadCineFiled (it names the file to write to)")
        source = inputs.meta[SOURCE_META_KEY]
        segmenter = self.segmenter.with_network(network)
        if source["stem"] is None:
            labels = self._canonical_labels(segmenter, inputs.as_tensor()).permute(2, 3, 0, 1)
        else:
            with one_plane_subject(Path(source["path"]), source["stem"]) as item:
                planes = segmenter.segment(item).planes
            labels = torch.from_numpy(planes[source["stem"]][0].astype(np.float32))
        return labels[None, None].float()

    @staticmethod
    def _canonical_labels(segmenter: SubjectSegmenter, image: torch.Tensor) -> torch.Tensor:
        """(P, T, H, W) labels of one pass over a canonical stack (1, 1, P, T, H, W); absent (all-zero) planes get 0."""
        plane_mask = image.flatten(start_dim=3).abs().amax(dim=(1, 3)) > 0
        with torch.no_grad(), precision_context(segmenter.device, segmenter.precision):
            logits = unwrap_network(segmenter.network)(image.to(segmenter.device), plane_mask.to(segmenter.device))
        labels = logits[0].float().argmax(dim=0).cpu()
        labels[~plane_mask[0].cpu()] = 0  # the network gives logits for absent planes too
        return labels


class SelectFramed(MapTransform):
    """Keep one frame of the labels: ``d[key]`` (1, X, Y, S, T) -> (1, X, Y, S).

    The frame is ``d["frame"]`` (an index into the file's frames; a request parameter in MONAI Label), default
    ``default_frame``.
    """

    def __init__(self, keys: str = "pred", default_frame: int = 0) -> None:
        super().__init__(keys)
        self.default_frame = int(default_frame)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        frame = int(d.get("frame", self.default_frame))
        for key in self.key_iterator(d):
            labels = d[key]
            num_frames = labels.shape[-1]
            if not -num_frames <= frame < num_frames:
                raise ValueError(
                    f"frame {frame} is outside the {num_frames} frames of {d.get('image_path', 'the image')}"
                )
            d[key] = labels[..., frame]
        return d
