"""Training of the full-resolution refiner (:class:`scripts.refiner.PlaneRefiner`) on a fixed segmentation network.

Two steps, run by ``configs/refine_segmentation.yaml``:

1. :func:`collect_plane_frames`: every training subject's canonical sample and the SA stacks of inference's extra
   passes, segmented once by the network's decoder; the labelled plane-frames kept with their image, the decoder's
   probabilities and the label. Real studies are labelled at a few frames (Sunnybrook: ED and ES, LV classes), so all
   their labelled plane-frames are kept; of a fully labelled (synthetic) subject, a few random frames per plane.
2. :class:`RefinerTraining`: random batches mixing partly labelled (real) and fully labelled (synthetic)
   plane-frames, each turned to a random one of the 8 storage orientations and given a random gamma and contrast,
   trained with the segmentation loss; the network with its refiner saved as ``model.pt``.

The decoder's errors are then the refiner's input, as at inference. Trained instead subject by subject inside the
segmentation trainer's loop (a step refining 16 plane-frames of one subject), the refiner stayed near the decoder on
the left-out Sunnybrook studies (``docs/history.md``, 0.27.0).

Shapes: ``PlaneFrames`` holds N plane-frames: ``image`` (N, F, H, W) float16 in [0, 1] (F: the refined frame and
those at the refiner's frame offsets), ``probabilities`` (N, C, H, W) float16, ``label`` (N, H, W) uint8
(:data:`scripts.labels.UNLABELLED` where not annotated), ``class_mask`` (N, C) bool.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from scripts.canonical import LoadCineSubjectd, extra_sa_passes
from scripts.files import atomic_path
from scripts.labels import NUM_CLASSES, UNLABELLED
from scripts.losses import segmentation_loss
from scripts.precision import precision_context
from scripts.progress import ProgressLog
from scripts.refiner import frames_with_offsets
from scripts.subject import read_sidecar
from scripts.weights import unwrap_network

logger = logging.getLogger(__name__)


@dataclass
class PlaneFrames:
    """Labelled plane-frames with the decoder's probabilities (shapes in the module docstring)."""

    image: torch.Tensor
    probabilities: torch.Tensor
    label: torch.Tensor
    class_mask: torch.Tensor

    def __len__(self) -> int:
        return self.image.shape[0]

    @property
    def partly_labelled(self) -> torch.Tensor:
        """(N,) bool: from a subject that labels only some classes (a real study)."""
        return ~self.class_mask.all(1)

    def take(self, index: torch.Tensor) -> PlaneFrames:
        """The plane-frames at ``index`` (long (M,))."""
        return PlaneFrames(self.image[index], self.probabilities[index], self.label[index], self.class_mask[index])


def random_dihedral(*tensors: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """The same random one of the 8 rotations by 90 degrees and mirrorings of the last two axes (H == W) applied to
    every tensor: scanners store a plane's pixels in any of these orientations."""
    turns, mirror = int(torch.randint(4, (), generator=generator)), bool(torch.randint(2, (), generator=generator))
    turned = [torch.rot90(t, turns, (-2, -1)) for t in tensors]
    return tuple(torch.flip(t, (-1,)) if mirror else t for t in turned)


def sidecar_labels_every_class(subject_dir: str | Path) -> bool:
    """Whether the subject's ``subject.json`` says every class is annotated (a synthetic subject), read without its
    images, so subjects past the fully labelled cap are skipped unread."""
    annotated = read_sidecar(Path(subject_dir)).get("annotated_classes", ())
    return set(range(1, NUM_CLASSES)) <= {int(c) for c in annotated}


def extra_pass_samples(
    loader: LoadCineSubjectd, item: Mapping[str, Any], sample: Mapping[str, Any], files: Any
) -> list[dict]:
    """The samples of ``item`` for the SA stacks inference's extra passes take beside its canonical ``sample``
    (``files``: its files already read, or None); ``loader`` with only its SA slices changed, as
    :class:`scripts.canonical.RandSAStackd` takes them."""
    samples = []
    for slices in extra_sa_passes(sample["geometry"]):
        extra = copy.copy(loader)
        extra.sa_slice_indices = slices
        samples.append(extra(dict(item), files))
    return samples


@torch.no_grad()
def collect_plane_frames(
    network: torch.nn.Module,
    items: Sequence[Mapping[str, Any]],
    loader: LoadCineSubjectd,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    frames_per_plane: int = 4,
    max_fully_labelled_subjects: int | None = 40,
    seed: int = 0,
) -> PlaneFrames:
    """The labelled plane-frames of ``items`` (repeated items once) with the decoder's probabilities.

    Args:
        network: the segmentation network (its decoder's output, without the refiner, is collected).
        items: training items (``{"subject": folder}``), e.g. ``scripts.subject.mixed_datalist``'s.
        loader: the deterministic loader of the samples (the extra SA passes take the same settings).
        frames_per_plane: random labelled frames kept per plane of a fully labelled subject.
        max_fully_labelled_subjects: at most this many fully labelled subjects (a random choice, by ``seed``);
            None: all.
    """
    model = unwrap_network(network).eval()
    rng = np.random.default_rng(seed)
    unique = list({str(item["subject"]): item for item in items}.values())
    order = rng.permutation(len(unique)).tolist()  # the fully labelled subjects kept are a random choice
    kept: dict[str, list[torch.Tensor]] = {"image": [], "probabilities": [], "label": [], "class_mask": []}
    fully_labelled = 0
    progress = ProgressLog(logger, len(unique), "refiner: the decoder's probabilities of the training subjects")
    for index in order:
        progress.step()
        capped = max_fully_labelled_subjects is not None and fully_labelled >= max_fully_labelled_subjects
        if capped and sidecar_labels_every_class(unique[index]["subject"]):
            continue
        files = loader.read_files(unique[index])
        canonical = loader(dict(unique[index]), files)
        is_full = bool(canonical["class_mask"].all())
        if is_full:
            if max_fully_labelled_subjects is not None and fully_labelled >= max_fully_labelled_subjects:
                continue
            fully_labelled += 1
        for sample in [canonical] + extra_pass_samples(loader, unique[index], canonical, files):
            planes = torch.nonzero(sample["plane_mask"]).flatten()
            label = sample["label"][0, planes]  # (P', T, H, W)
            labelled = (label != UNLABELLED).flatten(2).any(2)  # (P', T)
            if not bool(labelled.any()):
                continue
            image = sample["image"][None].to(device)
            with precision_context(torch.device(device), precision):
                logits = model(image, sample["plane_mask"][None].to(device), planes.to(device), refine=False)
            probabilities = logits[0].float().softmax(0).cpu()  # (C, P', T, H, W)
            frame_stack = frames_with_offsets(sample["image"][None], model.refiner.frame_offsets)[0]  # (F, P, T, H, W)
            for k in range(len(planes)):
                frames = torch.nonzero(labelled[k]).flatten().numpy()
                if is_full and len(frames) > frames_per_plane:
                    frames = np.sort(rng.choice(frames, frames_per_plane, replace=False))
                for t in frames.tolist():
                    kept["image"].append(frame_stack[:, planes[k], t].half())
                    kept["probabilities"].append(probabilities[:, k, t].half())
                    kept["label"].append(label[k, t])
                    kept["class_mask"].append(sample["class_mask"].bool())
    if not kept["image"]:
        raise ValueError("no labelled plane-frame in the training subjects: the refiner needs labels to learn from")
    frames = PlaneFrames(*(torch.stack(kept[key]) for key in ("image", "probabilities", "label", "class_mask")))
    logger.info(
        f"refiner: {len(frames)} labelled plane-frames, {int(frames.partly_labelled.sum())} of them partly labelled"
    )
    return frames


class RefinerTraining:
    """Random mixed batches of :class:`PlaneFrames` through the network's refiner; saves the network as
    ``ckpt_dir/model.pt``. The settings are checked when it is built, the plane-frames (minutes to collect) are given
    to :meth:`run`, so a bad setting stops the workflow before they are collected.

    Args:
        network: the network whose ``refiner`` trains (everything else is left as it is).
        ckpt_dir: where ``model.pt`` is written (atomically, at the end).
        steps: optimiser steps.
        batch_size: plane-frames per step.
        partly_labelled_fraction: the share of each batch drawn from partly labelled (real) plane-frames where both
            kinds exist (the rest fully labelled, synthetic); the real contours' convention (the endocardium drawn
            around trabeculae and the blood's partial-volume rim) is learnt from the real share.
        learning_rate: the one-cycle schedule's peak rate (10 % warm-up, cosine decay).
        weight_decay: AdamW's.
        device, precision: where and how it runs (``scripts.precision``).
        seed: the batches' and augmentations' random state.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        ckpt_dir: str | Path,
        steps: int = 1500,
        batch_size: int = 32,
        partly_labelled_fraction: float = 0.75,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        device: torch.device | str = "cpu",
        precision: str = "auto",
        seed: int = 0,
    ) -> None:
        self.network = unwrap_network(network)
        if self.network.refiner is None:
            raise ValueError("the network has no refiner to train: set refiner_channels (configs/inference.yaml)")
        if steps < 1 or batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
        if not 0.0 < partly_labelled_fraction < 1.0:
            raise ValueError(f"partly_labelled_fraction must lie in (0, 1), got {partly_labelled_fraction}")
        self.ckpt_dir = Path(ckpt_dir)
        self.steps, self.batch_size = int(steps), int(batch_size)
        self.partly_labelled_fraction = float(partly_labelled_fraction)
        self.learning_rate, self.weight_decay = float(learning_rate), float(weight_decay)
        self.device, self.precision = torch.device(device), precision
        self.generator = torch.Generator().manual_seed(int(seed))

    def batch_indices(self, plane_frames: PlaneFrames) -> torch.Tensor:
        """(batch_size,) indices into ``plane_frames``: ``partly_labelled_fraction`` of them partly labelled where
        both kinds exist, else any."""
        partly = plane_frames.partly_labelled
        pools = [torch.nonzero(partly).flatten(), torch.nonzero(~partly).flatten()]
        if not all(len(pool) for pool in pools):
            pools, counts = [torch.arange(len(partly))], [self.batch_size]
        else:
            num_partly = min(max(round(self.partly_labelled_fraction * self.batch_size), 1), self.batch_size - 1)
            counts = [num_partly, self.batch_size - num_partly]
        return torch.cat(
            [pool[torch.randint(len(pool), (n,), generator=self.generator)] for pool, n in zip(pools, counts)]
        )

    def augmented_batch(self, plane_frames: PlaneFrames) -> tuple[torch.Tensor, ...]:
        """A random batch of ``plane_frames``: (image (B, F, H, W), probabilities (B, C, H, W), label (B, H, W),
        class_mask (B, C)), turned and mirrored alike, the image given a random gamma and contrast (scanners differ in
        both)."""
        batch = plane_frames.take(self.batch_indices(plane_frames))
        image, probabilities, label = random_dihedral(
            batch.image.float(), batch.probabilities.float(), batch.label, generator=self.generator
        )
        size = (image.shape[0], 1, 1, 1)
        gamma = torch.exp(0.3 * torch.randn(size, generator=self.generator))
        contrast = 1 + 0.2 * torch.randn(size, generator=self.generator)
        image = image.clamp_min(0) ** gamma * contrast + 0.05 * torch.randn(size, generator=self.generator)
        return image, probabilities, label, batch.class_mask

    def run(self, plane_frames: PlaneFrames) -> Path:
        """Train on ``plane_frames`` (:func:`collect_plane_frames`) for ``steps`` and write ``model.pt``; returns its
        path."""
        refiner = self.network.refiner.to(self.device).train()
        optimiser = torch.optim.AdamW(refiner.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, self.learning_rate, total_steps=self.steps, pct_start=0.1
        )
        progress = ProgressLog(logger, self.steps, "refiner: training", unit="step")
        running = math.nan
        for step in range(self.steps):
            image, probabilities, label, class_mask = (t.to(self.device) for t in self.augmented_batch(plane_frames))
            with precision_context(self.device, self.precision):
                logits = refiner(image, probabilities)
            # (B, C, H, W) -> the loss's (B, C, P=1, T=1, H, W)
            loss = segmentation_loss(logits.float()[:, :, None, None], label[:, None, None, None], class_mask)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running = float(loss) if math.isnan(running) else 0.98 * running + 0.02 * float(loss)
            progress.step()
            if (step + 1) % 100 == 0 or step + 1 == self.steps:
                logger.info(f"refiner step {step + 1}/{self.steps}: loss {running:.4f} (running mean)")
        refiner.eval()
        path = self.ckpt_dir / "model.pt"
        with atomic_path(path, durable=True) as temporary:
            torch.save(self.network.state_dict(), temporary)
        logger.info(f"refined network written to {path}")
        return path
