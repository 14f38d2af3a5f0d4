"""One subject segmented as inference does it: every plane and frame on the canonical grid (labels, softmax,
embedding, phenotypes from one encoder pass), then every input plane in its own grid from the mean probabilities of
all passes over the subject (extra SA stacks for the slices the canonical grid skips, test-time shifts of the crop).

:class:`SubjectSegmenter` holds what every pass needs (network, canonical loader, device, precision, shifts), so the
cohort loops of inference and evaluation, the measure head's fit and the timing tools call one object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from scripts.atrial_slices import relabel_atrial_sa_slices
from scripts.beyond_apex import clear_slices, slices_beyond_apex
from scripts.canonical import LoadCineSubjectd, extra_sa_passes
from scripts.flags import as_flag
from scripts.heart_centre import lv_offset_px
from scripts.intensity_refinement import refine_probabilities
from scripts.labels import SA_PLANE, UNLABELLED
from scripts.lv_cavity import fill_lv_cavity, grow_lv_blood_pool, largest_component
from scripts.measures import pixel_spacing_mm
from scripts.precision import precision_context
from scripts.sample_geometry import parse_geometry, sa_plane_indices, with_centre_method
from scripts.subject import Subject
from scripts.weights import unwrap_network
from scripts.writeback import most_probable_class, probabilities_to_plane_labels

logger = logging.getLogger(__name__)

#: most first passes :meth:`SubjectSegmenter.centred_sample` makes while the LV it segments moves the centre
RECENTRE_ROUNDS = 6
#: farthest (mm) the recentring may move a centre: the image centre misses a real LV by 5-15 mm, and a segmented "LV"
#: farther away is taken for something else (e.g. bright fat of the chest wall)
MAX_RECENTRE_MM = 30.0

#: one pass of the write-back: float16 probabilities (C, P', T, H, W) and the geometry of those P' planes
Pass = tuple[torch.Tensor, Any]
#: file stem -> (labels uint8 (X, Y, S, T), affine (4, 4))
PlaneLabels = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass
class SubjectSegmentation:
    """What :meth:`SubjectSegmenter.segment` gives for one subject.

    Attributes:
        sample: the canonical sample (keys of ``docs/CONTRACTS.md``).
        prediction: :meth:`SubjectSegmenter.predict` of the sample (labels, probabilities, embedding, phenotypes).
        planes: labels of every input plane in its own grid (:meth:`SubjectSegmenter.input_plane_labels`).
        sa_slices_unsegmented: SA slice indices that no pass covered (normally none).
        images: file stem -> the input plane's float32 (X, Y, S, T) intensities as read, where the files were read
            (not when every sample came from the loader's cache): the report draws them without reading them again.
        sa_slices_beyond_apex: SA slice indices past the LV apex whose labels were cleared (:mod:`scripts.beyond_apex`).
    """

    sample: dict[str, Any]
    prediction: dict[str, torch.Tensor]
    planes: PlaneLabels
    sa_slices_unsegmented: list[int]
    images: dict[str, np.ndarray] = field(default_factory=dict)
    sa_slices_beyond_apex: list[int] = field(default_factory=list)


def largest_heart_component(labels: np.ndarray) -> np.ndarray:
    """uint8 (X, Y, S, T) ``labels`` with, in each slice and frame, only the largest 8-connected component of all
    foreground classes together kept; the rest set to 0. Per slice rather than in 3-D: SA slices lie 8-18 mm apart,
    so a blob on the chest wall overlaps the heart of the next slice in-plane and 3-D labelling would keep it.
    (MONAI's ``KeepLargestConnectedComponent`` needs scikit-image; scipy's labelling is already a dependency.)"""
    kept = labels.copy()
    for z in range(labels.shape[2]):
        for t in range(labels.shape[3]):
            heart = labels[:, :, z, t] > 0
            kept[:, :, z, t][heart & ~largest_component(heart)] = 0
    return kept


class SubjectSegmenter:
    """Segment, embed and phenotype subjects with one network.

    Args:
        network: a ``CineHeartNet`` on ``device`` (a (Distributed)DataParallel wrapper is looked through).
        load_subject: the canonical loader of the config (``LoadCineSubjectd``); its grid must match training.
        device: torch device of the network.
        precision: "auto" (bf16 autocast where fast) or "fp32".
        centre_shifts_px: test-time shifts of the crop, (u, v) canonical pixels each (see
            :meth:`input_plane_labels`); empty: one pass per SA group.
        intensity_refinement: refine every pass's probabilities by each series' own tissue intensities
            (:mod:`scripts.intensity_refinement`); False: the network's softmax alone.
        sa_largest_component: keep, in each slice and frame of the written SA stack, only the largest connected heart
            (all classes together): labels on the chest wall or the liver, apart from the heart, are removed.
        sa_clear_beyond_apex: clear the labels of the written SA slices beyond the LV apex, where the LV reappears
            past a slice where it had nearly vanished (a blob on the liver or diaphragm; :mod:`scripts.beyond_apex`).
        sa_fill_lv_cavity: relabel LV blood pool, in each slice and frame of the written SA stack, the myocardium
            inside the convex hull of the LV blood pool (papillary muscles and trabeculae, :mod:`scripts.lv_cavity`).
        sa_lv_blood_pool_margin_mm: relabel LV blood pool, in each slice and frame of the written SA stack (after the
            fill), the myocardium within this distance (mm, in-plane) of the LV blood pool, where manual contours draw
            the endocardium (:func:`scripts.lv_cavity.grow_lv_blood_pool`); 0: as the network labels it.
        sa_atria_from_long_axis: relabel LA the LV blood pool of SA slices at the frames where the long-axis views
            crossing them see the atrium (:mod:`scripts.atrial_slices`).
        recentre_on_lv: a subject whose heart centre is the image centre (no two long-axis planes cut its SA stack)
            is cut again around the LV blood pool that a first pass segments (:meth:`centred_sample`).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        load_subject: LoadCineSubjectd,
        device: torch.device | str = "cpu",
        precision: str = "auto",
        centre_shifts_px: Sequence[Sequence[float]] = (),
        intensity_refinement: bool = True,
        sa_largest_component: bool = True,
        recentre_on_lv: bool = True,
        sa_atria_from_long_axis: bool = False,
        sa_fill_lv_cavity: bool = True,
        sa_lv_blood_pool_margin_mm: float = 0.0,
        sa_clear_beyond_apex: bool = True,
    ) -> None:
        self.network = network
        self.load_subject = load_subject
        self.device = torch.device(device)
        self.precision = precision
        self.centre_shifts_px = [[float(x) for x in shift] for shift in centre_shifts_px]
        self.intensity_refinement = as_flag(intensity_refinement, "intensity_refinement")
        self.sa_largest_component = as_flag(sa_largest_component, "sa_largest_component")
        self.recentre_on_lv = as_flag(recentre_on_lv, "recentre_on_lv")
        self.sa_atria_from_long_axis = as_flag(sa_atria_from_long_axis, "sa_atria_from_long_axis")
        self.sa_fill_lv_cavity = as_flag(sa_fill_lv_cavity, "sa_fill_lv_cavity")
        self.sa_lv_blood_pool_margin_mm = float(sa_lv_blood_pool_margin_mm)
        if self.sa_lv_blood_pool_margin_mm < 0:
            raise ValueError(f"sa_lv_blood_pool_margin_mm must be >= 0 mm, got {sa_lv_blood_pool_margin_mm}")
        self.sa_clear_beyond_apex = as_flag(sa_clear_beyond_apex, "sa_clear_beyond_apex")

    def with_network(self, network: torch.nn.Module) -> SubjectSegmenter:
        """The same loader, device, precision and shifts with another network (e.g. another checkpoint's)."""
        return SubjectSegmenter(
            network,
            self.load_subject,
            self.device,
            self.precision,
            self.centre_shifts_px,
            self.intensity_refinement,
            self.sa_largest_component,
            self.recentre_on_lv,
            self.sa_atria_from_long_axis,
            self.sa_fill_lv_cavity,
            self.sa_lv_blood_pool_margin_mm,
            self.sa_clear_beyond_apex,
        )

    @property
    def model(self) -> torch.nn.Module:
        """The network without a (Distributed)DataParallel wrapper: the passes call its methods directly."""
        return unwrap_network(self.network)

    # --- network passes on a canonical sample ---------------------------------------------------------

    def _decode(
        self, sample: Mapping[str, Any], planes: Sequence[int] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits (C, P', T, H, W) of the P' = len(planes) planes asked for, on the device; their canonical indices
        (P',); the embedding (D,)). ``planes`` defaults to the planes the sample has."""
        image = sample["image"][None].to(self.device)
        plane_mask = sample["plane_mask"][None].to(self.device)
        if planes is None:
            planes = torch.nonzero(sample["plane_mask"]).flatten().tolist()
        decode_planes = torch.as_tensor(planes, dtype=torch.long, device=self.device)
        with precision_context(self.device, self.precision):
            logits, embedding = self.model.segment_and_embed(image, plane_mask, decode_planes)
        return logits[0], decode_planes.cpu(), embedding[0]

    def _probabilities(self, sample: Mapping[str, Any], logits: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
        """float32 class probabilities (C, P', T, H, W) on the CPU of the decoded ``planes`` (P',) from their
        ``logits``: the softmax, refined by each series' intensities unless ``intensity_refinement`` is off."""
        probabilities = logits.float().softmax(0).cpu()
        if not self.intensity_refinement:
            return probabilities
        records = parse_geometry(sample["geometry"])["planes"]
        series = [records[k]["source"] for k in planes.tolist()]
        return refine_probabilities(sample["image"][0, planes], probabilities, series)

    @torch.no_grad()
    def predict(self, sample: Mapping[str, Any], planes: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """One encoder pass for everything inference reports about a canonical sample (CPU tensors):
        ``labels`` uint8 (P, T, H, W), ``probabilities`` float16 (C, P, T, H, W) (the softmax; what is written back
        onto the input planes, :meth:`input_plane_labels`), ``embedding`` (D,) and ``phenotypes`` (K,) in physical
        units.

        ``planes`` (canonical plane indices; default: the planes the sample has) are the ones segmented; the others'
        labels are 0. The decoder works plane by plane and dominates the cost, so a plane not asked for is not
        computed (an absent plane, or the LA planes of an extra SA pass).
        """
        logits, decode_planes, embedding = self._decode(sample, planes)
        with precision_context(self.device, self.precision):
            phenotypes = self.model.phenotype_head.predict_physical(embedding[None])
        grid = sample["image"].shape[1:]
        decoded = self._probabilities(sample, logits, decode_planes)
        labels = torch.zeros(grid, dtype=torch.uint8)
        labels[decode_planes] = most_probable_class(decoded)
        # float16 halves the memory of a subject's maps (~100 MB at the small preset); a probability needs no more
        probabilities = torch.zeros((logits.shape[0],) + tuple(grid), dtype=torch.float16)
        probabilities[:, decode_planes] = decoded.to(torch.float16)
        return {
            "labels": labels,
            "probabilities": probabilities,
            "embedding": embedding.float().cpu(),
            "phenotypes": phenotypes[0].float().cpu(),
        }

    @torch.no_grad()
    def predict_pass(self, sample: Mapping[str, Any], planes: Sequence[int] | None = None) -> Pass:
        """A further pass of :meth:`input_plane_labels` (an extra SA stack, a test-time shift) as
        :func:`scripts.writeback.probabilities_to_plane_labels` takes it: the float16 probabilities (C, P', T, H, W)
        of the P' ``planes`` decoded (default: the planes the sample has) and the sample's geometry with only their
        records.

        No labels, embedding or phenotypes: the pass adds probabilities only. A plane not decoded is left out rather
        than kept as zeros: zeros would not change the mean's most probable class, but the write-back would still cut
        them (an extra SA pass encodes the LA views too) and blend densely wherever their class 0 disagrees with the
        others.
        """
        logits, decode_planes, _ = self._decode(sample, planes)
        geometry = parse_geometry(sample["geometry"])
        geometry["planes"] = [geometry["planes"][k] for k in decode_planes.tolist()]
        return self._probabilities(sample, logits, decode_planes).to(torch.float16), geometry

    @torch.no_grad()
    def embed_and_phenotype(self, image: torch.Tensor, plane_mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Embedding (D,) and phenotypes (K,, physical units) of one subject's (1, 1, P, T, H, W) ``image`` with the
        (1, P) ``plane_mask`` (e.g. with planes removed), both on the device."""
        with precision_context(self.device, self.precision):
            embedding = self.model.embed(image, plane_mask)
            phenotypes = self.model.phenotype_head.predict_physical(embedding)
        return embedding[0].float().cpu().numpy(), phenotypes[0].float().cpu().numpy()

    # --- the passes over a subject --------------------------------------------------------------------

    def pass_loader(self, shift_px: Sequence[float], sa_slices: Sequence[int] | None = None) -> LoadCineSubjectd:
        """A loader on the config loader's grid and cache for one pass: the heart centre moved by ``shift_px`` (u, v)
        canonical pixels, the SA slices ``sa_slices`` (None: the canonical choice). A new transform, so the
        config's loader keeps its own settings."""
        loader = self.load_subject
        return LoadCineSubjectd(
            keys=loader.keys,
            num_sa_slices=loader.num_sa_slices,
            num_frames=loader.num_frames,
            crop_size=loader.crop_size,
            spacing_mm=loader.spacing_mm,
            label_map=loader.label_map,
            sa_slice_indices=sa_slices,
            centre_shift_px=[float(x) for x in shift_px],
            in_plane_axes=loader.in_plane_axes,
            cache_dir=loader.cache_dir,
            allow_missing_keys=loader.allow_missing_keys,
        )

    @torch.no_grad()
    def centred_sample(self, item: Mapping[str, Any], files: Subject | None, sample: Mapping[str, Any]) -> Mapping:
        """``sample`` (the loader's canonical sample of ``item``), or, where its heart centre is the image centre and
        ``recentre_on_lv`` is on, the sample cut again around the LV blood pool that this network segments in its SA
        planes (:func:`scripts.heart_centre.lv_offset_px`), again until that moves it by under half a pixel (at
        most :data:`RECENTRE_ROUNDS` passes over the SA planes; the network segments an off-centre LV offset towards
        the crop centre, so one pass moves the centre only part of the way). The new sample's geometry has
        ``centre_method`` ``lv_segmentation`` and the move in ``centre_shift_px``; a move over
        :data:`MAX_RECENTRE_MM` is refused.
        """
        geometry = parse_geometry(sample["geometry"])
        sa_planes = sa_plane_indices(geometry)
        if not self.recentre_on_lv or geometry["centre_method"] != "image_centre" or not sa_planes:
            return sample
        centred, shift, found = sample, np.asarray(geometry["centre_shift_px"], dtype=float), False
        for _ in range(RECENTRE_ROUNDS):
            offset = lv_offset_px(geometry, self.predict(centred, sa_planes)["labels"].numpy())
            if offset is None:
                break
            found = True
            logger.info("subject %s: LV %s px from the crop centre", geometry["subject"], np.round(offset, 1))
            if np.abs(offset).max() < 0.5:  # centred: cutting again would give the same sample
                break
            shift = shift + offset
            centred = self.pass_loader(shift)(dict(item), files)
        moved_mm = float(np.linalg.norm(shift - geometry["centre_shift_px"])) * float(geometry["spacing_mm"])
        if not found or moved_mm > MAX_RECENTRE_MM:
            logger.warning(
                "subject %s: the LV segmented around the image centre %s; the crops stay at the image centre",
                geometry["subject"],
                "is missing" if not found else f"is {moved_mm:.0f} mm away (> {MAX_RECENTRE_MM:.0f} mm)",
            )
            return sample
        return with_centre_method(centred, "lv_segmentation")

    def extra_sa_passes(
        self, item: Mapping[str, Any], files: Subject | None, canonical: Mapping[str, Any], shift_px: Sequence[float]
    ) -> list[Pass]:
        """The passes over the SA slices that the canonical sample ``canonical`` (shifted by ``shift_px``) skipped: each
        encodes all planes (the LA views inform the SA slices) but decodes only its SA slices."""
        passes = []
        for pass_slices in extra_sa_passes(canonical["geometry"]):
            extra = self.pass_loader(shift_px, pass_slices)(dict(item), files)
            passes.append(self.predict_pass(extra, sa_plane_indices(extra["geometry"])))
        return passes

    def input_plane_labels(
        self,
        item: Mapping[str, Any],
        sample: Mapping[str, Any],
        probabilities: torch.Tensor,
        files: Subject | None = None,
    ) -> tuple[PlaneLabels, dict[str, list[int]]]:
        """Labels of every input plane in its own shape, and the SA slices left unsegmented (normally none).

        ``probabilities`` (C, P, T, H, W) are the canonical prediction of ``sample`` (:meth:`predict`). Further
        passes add to it:

        - extra SA passes (:meth:`extra_sa_passes`) cover the slices of the stack that the canonical grid skipped;
        - ``centre_shifts_px``: test-time shifts, one more canonical pass (and its extra SA passes) per (u, v) shift
          of the heart centre in canonical pixels (``LoadCineSubjectd.centre_shift_px``), so every slice is predicted
          again with the patch grid elsewhere on the heart.

        :func:`scripts.writeback.probabilities_to_plane_labels` writes the mean probabilities of all passes back. A
        pass's sample comes through the loader's cache when it has one (training caches the extra SA stacks too, see
        ``RandSAStackd``), else from ``files`` (the files of ``item``, already read), else from the files read by the
        pass's loader.

        Returns:
            file stem -> (labels uint8 (X, Y, S, T), affine (4, 4)); SA slice indices: ``"unsegmented"``, those no
            pass covered, and ``"beyond_apex"``, those whose labels were cleared (``sa_clear_beyond_apex``).
        """
        base_shift_px = np.asarray(parse_geometry(sample["geometry"])["centre_shift_px"], dtype=float)
        passes = [(probabilities, sample["geometry"])]
        passes += self.extra_sa_passes(item, files, sample, base_shift_px)
        for shift_px in self.centre_shifts_px:
            shifted = self.pass_loader(base_shift_px + shift_px)(dict(item), files)
            passes.append(self.predict_pass(shifted))
            passes += self.extra_sa_passes(item, files, shifted, base_shift_px + shift_px)
        outputs = probabilities_to_plane_labels(passes)
        uncovered: list[int] = []
        beyond: list[int] = []
        if SA_PLANE in outputs:
            sa_labels = outputs[SA_PLANE][0]
            uncovered = [z for z in range(sa_labels.shape[2]) if (sa_labels[:, :, z] == UNLABELLED).all()]
        for array, _ in outputs.values():
            array[array == UNLABELLED] = 0
        if SA_PLANE in outputs and self.sa_largest_component:
            outputs[SA_PLANE] = (largest_heart_component(outputs[SA_PLANE][0]), outputs[SA_PLANE][1])
        if SA_PLANE in outputs and self.sa_clear_beyond_apex:
            sa_labels, sa_affine = outputs[SA_PLANE]
            beyond = slices_beyond_apex(sa_labels, sa_affine)
            if beyond:
                subject = parse_geometry(sample["geometry"])["subject"]
                logger.info(
                    "subject %s: SA slices %s lie beyond the LV apex; their labels are cleared", subject, beyond
                )
                outputs[SA_PLANE] = (clear_slices(sa_labels, beyond), sa_affine)
        if SA_PLANE in outputs and self.sa_fill_lv_cavity:
            outputs[SA_PLANE] = (fill_lv_cavity(outputs[SA_PLANE][0]), outputs[SA_PLANE][1])
        if SA_PLANE in outputs and self.sa_lv_blood_pool_margin_mm > 0:
            labels, affine = outputs[SA_PLANE]
            margin_mm = self.sa_lv_blood_pool_margin_mm
            outputs[SA_PLANE] = (grow_lv_blood_pool(labels, pixel_spacing_mm(affine), margin_mm), affine)
        if self.sa_atria_from_long_axis:
            relabelled = relabel_atrial_sa_slices(outputs)
            if relabelled is not None:
                outputs[SA_PLANE] = (relabelled, outputs[SA_PLANE][1])
        return outputs, {"unsegmented": uncovered, "beyond_apex": beyond}

    def segment(self, item: Mapping[str, Any]) -> SubjectSegmentation:
        """Load one datalist ``item`` (its files read once for all passes) and segment it: the canonical prediction
        and the labels of every input plane (with the test-time shifts)."""
        files = self.load_subject.read_files(item)
        sample = self.centred_sample(item, files, self.load_subject(dict(item), files))
        prediction = self.predict(sample)
        planes, sa_slices = self.input_plane_labels(item, sample, prediction["probabilities"], files)
        images = {} if files is None else {stem: plane.image for stem, plane in files.planes.items()}
        return SubjectSegmentation(
            sample, prediction, planes, sa_slices["unsegmented"], images, sa_slices["beyond_apex"]
        )
