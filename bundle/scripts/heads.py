"""Phenotype heads: :class:`PhenotypeHead` on the subject representation, :class:`MeasureHead` on what is measured on
the network's own segmentation.

Shapes: representation (B, D) or measures (B, F) in, (B, K) out, K = ``len(labels.PHENOTYPE_NAMES)``; predictions are
in normalised units, :meth:`PhenotypeHead.predict_physical` maps them to mL / % / g. The input and target statistics
are buffers, saved with the weights.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from scripts.labels import PHENOTYPE_NAMES


class PhenotypeHead(nn.Module):
    """Shallow head predicting all phenotypes at once in normalised units.

    ``target_mean`` / ``target_std`` (buffers, saved with the weights) map predictions to mL / % / g; set them from
    the training targets with :meth:`set_target_stats`. ``feature_mean`` / ``feature_std`` (D,) standardise the
    representation first (:meth:`set_feature_stats`): a mean-pooled ViT embedding is dominated by a component shared
    by all subjects, and its informative directions are small beside it.

    Args:
        in_features: representation width D.
        num_outputs: K, defaults to ``len(labels.PHENOTYPE_NAMES)``.
        hidden_size: width of a hidden layer (Linear-GELU-Linear); 0 (default) for the linear head of the paper,
            which :meth:`set_linear` can set in closed form.
    """

    def __init__(self, in_features: int, num_outputs: int = len(PHENOTYPE_NAMES), hidden_size: int = 0) -> None:
        super().__init__()
        if hidden_size > 0:
            self.mlp = nn.Sequential(
                nn.Linear(in_features, hidden_size), nn.GELU(), nn.Linear(hidden_size, num_outputs)
            )
        else:
            self.mlp = nn.Sequential(nn.Linear(in_features, num_outputs))
        self.register_buffer("target_mean", torch.zeros(num_outputs))
        self.register_buffer("target_std", torch.ones(num_outputs))
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))

    @staticmethod
    def _checked_stats(
        mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float], size: int, what: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.numel() != size or std.numel() != size:
            raise ValueError(f"{what} mean and std need {size} values, got {mean.numel()} and {std.numel()}")
        if not bool((std > 0).all()):
            raise ValueError(f"every {what} std must be > 0")
        return mean, std

    def set_feature_stats(self, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float]) -> None:
        """Store the mean and standard deviation (D,) of the training representations."""
        mean, std = self._checked_stats(mean, std, self.feature_mean.numel(), "feature")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def set_target_stats(self, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float]) -> None:
        """Store the per-phenotype mean and standard deviation (K,) of the training targets (physical units)."""
        mean, std = self._checked_stats(mean, std, self.target_mean.numel(), "target")
        self.target_mean.copy_(mean)
        self.target_std.copy_(std)

    @property
    def is_linear(self) -> bool:
        return len(self.mlp) == 1

    def set_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set a linear head's weight (K, D) and bias (K,) (tensors or arrays), on standardised features and
        normalised targets."""
        if not self.is_linear:
            raise ValueError("set_linear needs a linear phenotype head (hidden_size 0)")
        layer = self.mlp[0]
        weight = torch.as_tensor(weight, dtype=layer.weight.dtype)
        bias = torch.as_tensor(bias, dtype=layer.bias.dtype)
        if weight.shape != layer.weight.shape or bias.shape != layer.bias.shape:
            raise ValueError(
                f"linear head needs weight {tuple(layer.weight.shape)} and bias {tuple(layer.bias.shape)}, "
                f"got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)

    def forward(self, representation: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, K) normalised predictions (train against (target - mean) / std)."""
        standardised = (representation.float() - self.feature_mean) / self.feature_std
        return self.mlp(standardised.to(representation.dtype))

    def predict_physical(self, representation: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, K) in physical units (order of ``labels.PHENOTYPE_NAMES``)."""
        return self.forward(representation).float() * self.target_std + self.target_mean


class MeasureHead(PhenotypeHead):
    """Linear phenotype head on what is measured on the network's own segmentation (``measures.measure_features``:
    the 17 measured phenotypes and the ventricular volume curves' quantiles), fit in closed form by
    :func:`scripts.head_fitting.fit_measure_head`.

    Measures on a segmentation are biased where the segmentation is (a decoder that flattens the cycle reads ED too
    small and ES too large); a linear map fit on labelled subjects removes what is systematic. A measure that a
    missing view leaves NaN enters as the training mean. ``fitted`` (a buffer, saved with the weights) says whether
    the head has been fit; weights saved before the head existed load with it unfit.
    """

    def __init__(self, in_features: int, num_outputs: int = len(PHENOTYPE_NAMES)) -> None:
        super().__init__(in_features, num_outputs)
        self.register_buffer("fitted", torch.tensor(False))
        # fit in closed form only: no optimiser of the network's training moves (or weight-decays) it
        self.mlp.requires_grad_(False)

    def set_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().set_linear(weight, bias)
        self.fitted.fill_(True)

    def forward(self, representation: torch.Tensor) -> torch.Tensor:
        """(B, F) measures (NaN where unmeasured) -> (B, K) normalised predictions."""
        standardised = torch.nan_to_num((representation.float() - self.feature_mean) / self.feature_std, nan=0.0)
        return self.mlp(standardised)
