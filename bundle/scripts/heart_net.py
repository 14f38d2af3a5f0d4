"""The network the bundle ships: :class:`CineHeartNet`, encoder + all-planes segmentation decoder + phenotype heads.

Shapes (see ``docs/CONTRACTS.md``): ``image`` (B, 1, P, T, H, W), ``plane_mask`` (B, P) bool (None: all-zero planes
are absent), segmentation logits (B, 6, P, T, H, W), representation (B, D), phenotypes (B, K) in physical units.
State-dict prefixes: ``encoder.``, ``segmenter.``, ``phenotype_head.``, ``measure_head.``.

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
    """

    def __init__(
        self,
        encoder: CineEncoder,
        seg_channels: Sequence[int] = (16, 32, 64, 576),
        num_classes: int = NUM_CLASSES,
        num_phenotypes: int = len(PHENOTYPE_NAMES),
        phenotype_hidden: int = 0,
        image_levels: int = 1,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.segmenter = CineSegmenter(
            encoder.hidden_size, encoder.patch_size, encoder.num_layers, seg_channels, num_classes, image_levels
        )
        self.phenotype_head = PhenotypeHead(encoder.hidden_size, num_phenotypes, phenotype_hidden)
        self.measure_head = MeasureHead(len(MEASURE_FEATURE_NAMES), num_phenotypes)

    def segment_and_embed(
        self,
        image: torch.Tensor,
        plane_mask: torch.Tensor | None = None,
        decode_planes: torch.Tensor | None = None,
        decode_frames: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One encoder pass for multi-task training: (logits (B, C, P', T', H, W), representation (B, D)).

        P' = P and T' = T, or the planes of ``decode_planes`` and the frames of ``decode_frames`` (long tensors, see
        :meth:`CineSegmenter.forward`).
        """
        plane_mask = self.encoder.check_inputs(image, plane_mask)
        encoded = self.encoder(image, plane_mask, return_layers=self.segmenter.skip_layers)
        grid = self.encoder.token_grid(image.shape[3:])
        logits = self.segmenter(image, encoded, grid, decode_planes, decode_frames)
        return logits, encoded.mean_token()

    def forward(
        self,
        image: torch.Tensor,
        plane_mask: torch.Tensor | None = None,
        decode_planes: torch.Tensor | None = None,
        decode_frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Segmentation logits (B, num_classes, P, T, H, W); absent planes get logits too (ignore them)."""
        return self.segment_and_embed(image, plane_mask, decode_planes, decode_frames)[0]

    def embed(self, image: torch.Tensor, plane_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) subject representation."""
        return self.encoder.embed(image, plane_mask)

    def predict_phenotypes(self, image: torch.Tensor, plane_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) phenotypes in physical units."""
        return self.phenotype_head.predict_physical(self.embed(image, plane_mask))
