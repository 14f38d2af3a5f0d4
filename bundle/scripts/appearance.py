"""Random appearance of a canonical cine stack: the training augmentation that teaches shape, not intensity.

Scanners, field strengths and sequences give the same anatomy very different intensities: bright or dark blood,
bright fat, coil shading, blur and noise. A network trained on one appearance learns that appearance (in the spirit
of SynthSeg, Billot et al. 2023, which draws the intensities of every label at random). Here the labels of the
surrounding anatomy are not available, so the image itself is remapped: each subject gets a random intensity curve
(monotone, inverted or non-monotone), a gamma, a smooth multiplicative bias field per plane, a coarser in-plane
resolution and noise.

Shapes: ``image`` (1, P, T, H, W) float in [0, 1] (as :class:`scripts.canonical.LoadCineSubjectd` writes it); the
same shape comes back, still in [0, 1]. Labels, masks and geometry are untouched.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandomizableTransform

__all__ = ["RandAppearanced", "bias_field", "intensity_curve", "lower_resolution"]


def intensity_curve(image: torch.Tensor, knots_y: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear intensity map through ``K`` equally spaced knots.

    Written as a sum of clamped ramps (one per segment) rather than a table look-up: element-wise ops run several
    times faster than a gather over a cine stack.

    Args:
        image: any shape, values in [0, 1].
        knots_y: (K,) output values at inputs ``linspace(0, 1, K)``.

    Returns:
        ``image``'s shape, values interpolated between the knots.
    """
    segments = len(knots_y) - 1
    position = image.clamp(0.0, 1.0) * segments
    out = torch.full_like(image, float(knots_y[0]))
    for segment, rise in enumerate((knots_y[1:] - knots_y[:-1]).tolist()):
        out += rise * (position - segment).clamp_(0.0, 1.0)
    return out


def bias_field(
    num_planes: int, size: Sequence[int], strength: float, grid: int, rng: np.random.RandomState
) -> torch.Tensor:
    """Smooth multiplicative field per plane: a random ``grid x grid`` log-gain upsampled bicubically.

    Returns:
        (P, 1, H, W) float32 gains around 1 (log-gain standard deviation ``strength``).
    """
    log_gain = torch.from_numpy(rng.normal(0.0, strength, (num_planes, 1, grid, grid)).astype(np.float32))
    return torch.exp(F.interpolate(log_gain, size=tuple(size), mode="bicubic", align_corners=True))


def lower_resolution(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Blur as a coarser acquisition would: (N, H, W) averaged down by ``factor`` >= 1, then bilinear back up."""
    size = images.shape[-2:]
    coarse = [max(2, int(round(side / factor))) for side in size]
    flat = images.reshape(-1, 1, *size)
    flat = F.interpolate(F.interpolate(flat, size=coarse, mode="area"), size=size, mode="bilinear", align_corners=False)
    return flat.reshape(images.shape)


class RandAppearanced(RandomizableTransform, MapTransform):
    """Draw a new appearance for the cine stack under ``keys`` (see the module docstring).

    Args:
        keys: image key(s), each (1, P, T, H, W) float in [0, 1].
        prob: chance that a sample gets a new appearance at all.
        num_knots: knots of the random intensity curve.
        inverted_prob: chance that the monotone curve runs from bright to dark (dark-blood-like contrast).
        nonmonotone_prob: chance that the curve's knots are drawn independently (any order).
        gamma_log_std: standard deviation of log(gamma) applied after the curve.
        bias_strength: standard deviation of the bias field's log-gain.
        resolution_factor: (low, high) range of the in-plane resolution loss (1 = none), drawn with probability
            ``resolution_prob``: 1.8 mm canonical pixels read as 1.8-3 mm acquisitions.
        noise_std: (low, high) range of the Rician noise level relative to the [0, 1] range.

    Example:
        >>> sample = {"image": torch.rand(1, 9, 10, 32, 32)}
        >>> RandAppearanced("image", prob=1.0).set_random_state(0)(sample)["image"].shape
        torch.Size([1, 9, 10, 32, 32])
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        prob: float = 0.8,
        num_knots: int = 6,
        inverted_prob: float = 0.15,
        nonmonotone_prob: float = 0.25,
        gamma_log_std: float = 0.3,
        bias_strength: float = 0.25,
        resolution_factor: tuple[float, float] = (1.0, 1.7),
        resolution_prob: float = 0.4,
        noise_std: tuple[float, float] = (0.0, 0.06),
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        if num_knots < 2:
            raise ValueError(f"num_knots must be at least 2, got {num_knots}")
        for name, value in (("inverted_prob", inverted_prob), ("nonmonotone_prob", nonmonotone_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.num_knots = num_knots
        self.inverted_prob = inverted_prob
        self.nonmonotone_prob = nonmonotone_prob
        self.gamma_log_std = gamma_log_std
        self.bias_strength = bias_strength
        self.resolution_factor = resolution_factor
        self.resolution_prob = resolution_prob
        self.noise_std = noise_std

    def random_knots(self) -> torch.Tensor:
        """(num_knots,) output values of a random intensity curve spanning most of [0, 1]."""
        rng = self.R
        if rng.uniform() < self.nonmonotone_prob:
            knots = rng.uniform(0.0, 1.0, self.num_knots)
        else:
            steps = rng.dirichlet(np.ones(self.num_knots - 1))
            knots = np.concatenate([[0.0], np.cumsum(steps)]) * rng.uniform(0.7, 1.0) + rng.uniform(0.0, 0.1)
            if rng.uniform() < self.inverted_prob:
                knots = knots[::-1].copy()
        return torch.from_numpy(np.clip(knots, 0.0, 1.0).astype(np.float32))

    def new_appearance(self, image: torch.Tensor) -> torch.Tensor:
        """(1, P, T, H, W) in [0, 1] -> the same anatomy with a random appearance, in [0, 1]."""
        rng = self.R
        _, planes, frames, height, width = image.shape
        out = intensity_curve(image, self.random_knots())
        out = out.clamp_min(1e-6) ** float(np.exp(rng.normal(0.0, self.gamma_log_std)))
        gain = bias_field(planes, (height, width), self.bias_strength, 4, rng)  # (P, 1, H, W): same over time
        out = out * gain.unsqueeze(0)
        if rng.uniform() < self.resolution_prob:
            out = lower_resolution(out, float(rng.uniform(*self.resolution_factor)))
        sigma = float(rng.uniform(*self.noise_std))
        if sigma > 0:
            generator = torch.Generator().manual_seed(int(rng.randint(2**31)))
            real = out + sigma * torch.randn(out.shape, generator=generator)
            imaginary = sigma * torch.randn(out.shape, generator=generator)
            out = torch.sqrt(real * real + imaginary * imaginary)  # magnitude images carry Rician noise
        # back to [0, 1] the way inference scales a file: its 99.5th percentile (of a subsample) becomes 1
        high = torch.quantile(out.reshape(-1)[:: max(1, out.numel() // 500_000)], 0.995).clamp_min(1e-6)
        return (out / high).clamp(0.0, 1.0)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        sample = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return sample
        for key in self.key_iterator(sample):
            sample[key] = self.new_appearance(torch.as_tensor(sample[key], dtype=torch.float32))
        return sample
