"""The network the bundle ships: :class:`CineHeartNet`, encoder + all-planes segmentation decoder + phenotype heads.

Shapes (see ``docs/CONTRACTS.md``): ``image`` (B, 1, P, T, H, W), ``plane_mask`` (B, P) bool (None: all-zero planes
are absent), segmentation logits (B, 6, P, T, H, W), representation (B, D), phenotypes (B, K) in physical units.
State-dict prefixes: ``encoder.``, ``segmenter.``, ``refiner.`` (when built), ``phenotype_head.``, ``measure_head.``.

``forward(image)`` is traceable; see :mod:`scripts.encoder` for how a traced network still drops missing planes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from scripts.encoder import CineEncoder
from scripts.heads import MeasureHead, PhenotypeHead
from scripts.labels import NUM_CLASSES, PHENOTYPE_NAMES
from scripts.measures import MEASURE_FEATURE_NAMES
from scripts.refiner import PlaneRefiner, frames_with_offsets
from scripts.segmenter import CineSegmenter


class CineHeartNet(nn.Module):
    """The bundle's network: shared encoder, all-planes segmentation decoder, phenotype head on the embedding and
    measure head on what is measured on the segmentation (applied by inference, outside ``forward``).

    ``forward(image)`` is the one-tensor segmentation call used by MONAI inferers, ``verify_net_in_out`` and
    ``torch.jit.trace``.

    Args:
        encoder: the :class:`CineEncoder` (state-dict prefix ``encoder.``, shared with :class:`CineMAE`).
        seg_channels: segmentation decoder widths, full resolution first (see :class:`CineSegmenter`).
        num_classes: segmentation classes.
        num_phenotypes: phenotype outputs.
        phenotype_hidden: hidden width of the phenotype head (0 = linear, the paper's).
        image_levels: decoder stages that read the raw image (see :class:`CineSegmenter`).
        refiner_channels: widths of the full-resolution :class:`PlaneRefiner` applied to the decoder's output, full
            resolution first; empty: none.
        refiner_frame_offsets: the image frames, as offsets from the refined one, that the refiner also reads.
        refiner_chunk: plane-frames refined at once: bounds the refiner's memory on a whole subject, and 16 (8 to 32
            alike) kept a CPU pass over 450 plane-frames 0.8 times as long as 64, whose activations outgrow the caches.
    """

    def __init__(
        self,
        encoder: CineEncoder,
        seg_channels: Sequence[int] = (16, 32, 64, 576),
        num_classes: int = NUM_CLASSES,
        num_phenotypes: int = len(PHENOTYPE_NAMES),
        phenotype_hidden: int = 0,
        image_levels: int = 1,
        refiner_channels: Sequence[int] = (),
        refiner_frame_offsets: Sequence[int] = (),
        refiner_chunk: int = 16,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.segmenter = CineSegmenter(
            encoder.hidden_size, encoder.patch_size, encoder.num_layers, seg_channels, num_classes, image_levels
        )
        self.refiner = (
            PlaneRefiner(refiner_channels, num_classes, refiner_frame_offsets) if len(refiner_channels) else None
        )
        self.refiner_chunk = int(refiner_chunk)
        self.phenotype_head = PhenotypeHead(encoder.hidden_size, num_phenotypes, phenotype_hidden)
        self.measure_head = MeasureHead(len(MEASURE_FEATURE_NAMES), num_phenotypes)

    def segment_and_embed(
        self,
        image: torch.Tensor,
        plane_mask: torch.Tensor | None = None,
        decode_planes: torch.Tensor | None = None,
        decode_frames: torch.Tensor | None = None,
        refine: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One encoder pass for multi-task training: (logits (B, C, P', T', H, W), representation (B, D)).

        P' = P and T' = T, or the planes of ``decode_planes`` and the frames of ``decode_frames`` (long tensors, see
        :meth:`CineSegmenter.forward`). ``refine``: through the refiner when there is one (:meth:`refine`); False
        gives the decoder's own logits (what segmentation fine-tuning trains).
        """
        plane_mask = self.encoder.check_inputs(image, plane_mask)
        encoded = self.encoder(image, plane_mask, return_layers=self.segmenter.skip_layers)
        grid = self.encoder.token_grid(image.shape[3:])
        logits = self.segmenter(image, encoded, grid, decode_planes, decode_frames)
        if refine:
            logits = self.refine(image, logits, decode_planes, decode_frames)
        return logits, encoded.mean_token()

    def refine(
        self,
        image: torch.Tensor,
        logits: torch.Tensor,
        decode_planes: torch.Tensor | None = None,
        decode_frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The decoder's logits (B, C, P', T', H, W) of ``image`` (B, 1, P, T, H, W), restricted to ``decode_planes``
        and ``decode_frames`` as they were decoded, refined plane-frame by plane-frame (unchanged without a refiner).
        """
        if self.refiner is None:
            return logits
        planes = image if decode_planes is None else image[:, :, decode_planes]
        planes = frames_with_offsets(planes, self.refiner.frame_offsets)  # every frame: the offsets reach any of them
        if decode_frames is not None:
            planes = planes[:, :, :, decode_frames]
        batch, classes, num_planes, frames, height, width = logits.shape
        probabilities = logits.float().softmax(1).permute(0, 2, 3, 1, 4, 5).reshape(-1, classes, height, width)
        planes = planes.permute(0, 2, 3, 1, 4, 5).reshape(-1, planes.shape[1], height, width)
        refined = torch.cat(
            [
                self.refiner(
                    planes[start : start + self.refiner_chunk], probabilities[start : start + self.refiner_chunk]
                )
                for start in range(0, planes.shape[0], self.refiner_chunk)
            ]
        )
        return refined.reshape(batch, num_planes, frames, classes, height, width).permute(0, 3, 1, 2, 4, 5)

    def forward(
        self,
        image: torch.Tensor,
        plane_mask: torch.Tensor | None = None,
        decode_planes: torch.Tensor | None = None,
        decode_frames: torch.Tensor | None = None,
        refine: bool = True,
    ) -> torch.Tensor:
        """Segmentation logits (B, num_classes, P, T, H, W); absent planes get logits too (ignore them)."""
        return self.segment_and_embed(image, plane_mask, decode_planes, decode_frames, refine)[0]

    def embed(self, image: torch.Tensor, plane_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) subject representation."""
        return self.encoder.embed(image, plane_mask)

    def predict_phenotypes(self, image: torch.Tensor, plane_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) phenotypes in physical units."""
        return self.phenotype_head.predict_physical(self.embed(image, plane_mask))
