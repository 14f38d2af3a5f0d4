"""The network's class probabilities refined by each scan's own intensities.

A network trained on synthetic contrasts places a real scan's boundaries roughly: on a real SA cine it may cut the LV
blood pool along its patch grid and label bright blood as myocardium. Every cine series, of any vendor, still shows
each tissue with one intensity distribution of its own. :func:`refine_probabilities` fits those distributions to the
scan by expectation-maximisation, with the network's probabilities as the spatial prior (the atlas-prior EM of
classical brain segmentation, Van Leemput et al. 1999, with the network in place of the atlas):

- tissues: each foreground class (LV, RV, LA and RA blood pools, LV myocardium) one Gaussian, the background a
  mixture of ``background_components`` Gaussians (fat, lung, liver and muscle differ). One Gaussian shared by the
  four blood pools was measured as well and scored lower on the wide synthetic cohort, whose chambers differ in
  contrast (``docs/history.md``, 0.14.0);
- prior: the network's probabilities, smoothed in plane (``prior_smoothing_passes``, which also removes the patch
  grid's pattern) and floored at ``prior_floor`` so that the intensities can overrule a confident but wrong network;
- posterior of class c at a pixel of intensity x: prior_c * likelihood_tissue(c)(x), normalised over the classes,
  alternated ``iterations`` times with refitting the distributions to the posterior.

Each series (the SA stack, each long-axis view) has its own contrast, so each is fitted on its own. The canonical
image holds 256 intensity levels (:mod:`scripts.canonical`), so the fit works on weighted histograms and the
likelihoods are tables of 256 entries. Pixels at level 0 (outside the source's field of view, and the darkest
air) keep the prior.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

#: Tissue (intensity distribution) of each class in ``labels.CLASS_NAMES`` order; tissue 0 is the background mixture.
TISSUE_OF_CLASS = (0, 1, 2, 3, 4, 5)
NUM_LEVELS = 256
#: Variance floor of a fitted Gaussian, in squared levels (keeps a tissue seen at one level from collapsing).
MIN_VARIANCE_LEVELS = 4.0
#: Pixels of the maps processed at once (ten 128 x 128 frames): a block's maps stay in the CPU's caches through the
#: smoothing and each EM step, 2-4x faster on CPU than passes over a whole series (~120 MB per map of a subject).
BLOCK_PIXELS = 10 * 128 * 128


def _gaussian(levels: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Density of N(mean, variance) at ``levels``; mean and variance (K,) -> (K, L)."""
    variance = variance.clamp_min(MIN_VARIANCE_LEVELS)[:, None]
    return torch.exp(-((levels[None] - mean[:, None]) ** 2) / (2 * variance)) / torch.sqrt(2 * math.pi * variance)


def _fit_gaussian(histogram: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance (1,) each of a weighted histogram (L,)."""
    weight = histogram.sum().clamp_min(1e-6)
    mean = (histogram * levels).sum() / weight
    variance = (histogram * (levels - mean) ** 2).sum() / weight
    return mean[None], variance[None]


def _fit_mixture(
    histogram: torch.Tensor, levels: torch.Tensor, components: int, steps: int = 10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights, means and variances (K,) each of a K-Gaussian mixture fitted by EM to a weighted histogram (L,),
    started at the histogram's quantiles."""
    cumulative = histogram.cumsum(0) / histogram.sum().clamp_min(1e-6)
    quantiles = torch.linspace(0.5 / components, 1 - 0.5 / components, components, dtype=levels.dtype)
    mean = levels[torch.searchsorted(cumulative, quantiles).clamp_max(len(levels) - 1)]
    variance = torch.full((components,), float(len(levels)) ** 2 / (4 * components**2), dtype=levels.dtype)
    weight = torch.full((components,), 1.0 / components, dtype=levels.dtype)
    for _ in range(steps):
        joint = weight[:, None] * _gaussian(levels, mean, variance)
        responsibility = joint / joint.sum(0, keepdim=True).clamp_min(1e-30) * histogram[None]
        mass = responsibility.sum(1).clamp_min(1e-6)
        mean = (responsibility * levels).sum(1) / mass
        variance = (responsibility * (levels[None] - mean[:, None]) ** 2).sum(1) / mass
        weight = mass / mass.sum()
    return weight, mean, variance


def _tissue_likelihoods(histograms: torch.Tensor, levels: torch.Tensor, background_components: int) -> torch.Tensor:
    """Likelihood tables (K, L) of the K tissues fitted to their weighted histograms (K, L): tissue 0 (background) a
    mixture, the others one Gaussian each."""
    weight, mean, variance = _fit_mixture(histograms[0], levels, background_components)
    tables = [(weight[:, None] * _gaussian(levels, mean, variance)).sum(0)]
    tables += [_gaussian(levels, *_fit_gaussian(histogram, levels))[0] for histogram in histograms[1:]]
    return torch.stack(tables)


def _box3(maps: torch.Tensor, dim: int, inverse_count: torch.Tensor) -> torch.Tensor:
    """3-tap mean of ``maps`` along ``dim`` over the neighbours inside the image (2 at either end), by shifted adds:
    two thirds of avg_pool2d's time on one-channel maps on CPU."""
    size = maps.shape[dim]
    total = torch.empty_like(maps)
    torch.add(maps.narrow(dim, 0, size - 1), maps.narrow(dim, 1, size - 1), out=total.narrow(dim, 1, size - 1))
    total.narrow(dim, 0, 1).copy_(maps.narrow(dim, 0, 1))
    total.narrow(dim, 0, size - 1).add_(maps.narrow(dim, 1, size - 1))
    return total.mul_(inverse_count)


def _smooth_in_plane(maps: torch.Tensor, passes: int) -> torch.Tensor:
    """In-plane smoothing of (..., H, W) maps by ``passes`` 3 x 3 box filters (sigma sqrt(2 passes / 3) px), each the
    mean over the neighbours inside the image (avg_pool2d's ``count_include_pad=False``), done separably."""
    height, width = maps.shape[-2:]
    if height < 2 or width < 2:
        return maps
    inverse_rows = torch.full((height, 1), 1 / 3, dtype=maps.dtype)
    inverse_rows[[0, -1]] = 0.5
    inverse_columns = torch.full((width,), 1 / 3, dtype=maps.dtype)
    inverse_columns[[0, -1]] = 0.5
    for _ in range(passes):
        maps = _box3(_box3(maps, -1, inverse_columns), -2, inverse_rows)
    return maps


def _blocks(num_maps: int, map_pixels: int) -> list[slice]:
    """Consecutive slices of ``num_maps`` maps of ``map_pixels`` pixels, each of about :data:`BLOCK_PIXELS`."""
    step = max(1, BLOCK_PIXELS // map_pixels)
    return [slice(start, min(start + step, num_maps)) for start in range(0, num_maps, step)]


def _add_class_histograms(histograms: torch.Tensor, level: torch.Tensor, weights: torch.Tensor) -> None:
    """Add to ``histograms`` (C, L) each class's histogram of the pixels' ``level`` (K,) weighted by ``weights``
    (C, K)."""
    histograms.scatter_add_(1, level.expand(weights.shape[0], -1), weights)


def _likelihood_table(class_histograms: torch.Tensor, tissue: torch.Tensor, background_components: int) -> torch.Tensor:
    """Likelihood (C, L) of every level under each class's tissue, fitted to the classes' weighted histograms (C, L)
    summed per tissue; level 0 (outside the field of view) flat, so that the prior decides there."""
    histograms = torch.zeros(int(tissue.max()) + 1, NUM_LEVELS).index_add_(0, tissue, class_histograms)
    histograms[:, 0] = 0
    table = _tissue_likelihoods(histograms, torch.arange(NUM_LEVELS, dtype=torch.float32), background_components)
    table = table[tissue]
    table[:, 0] = 1
    return table


def refine_series(
    image: torch.Tensor,
    probabilities: torch.Tensor,
    iterations: int = 3,
    prior_floor: float = 0.02,
    prior_smoothing_passes: int = 2,
    background_components: int = 3,
    tissue_of_class: Sequence[int] = TISSUE_OF_CLASS,
) -> torch.Tensor:
    """Refine the probabilities of one series (one contrast).

    Args:
        image: (N, H, W) intensities in [0, 1] on 256 levels (N = planes x frames of the series); 0 (outside the
            field of view) keeps the prior.
        probabilities: (C, N, H, W) the network's class probabilities (softmax), C = len(tissue_of_class).
        iterations: EM iterations (0 returns the input).
        prior_floor: each class's prior is at least this (then renormalised), so the intensities can overrule the
            network.
        prior_smoothing_passes: 3 x 3 box filters smoothing the prior in plane (sigma sqrt(2 passes / 3) px).
        tissue_of_class: (C,) the tissue whose intensity distribution each class follows; tissue 0 is a mixture.
        background_components: Gaussians of the background mixture.

    Returns:
        float32 (C, N, H, W) posterior class probabilities.
    """
    if iterations <= 0:
        return probabilities.float()
    classes, num_maps, height, width = probabilities.shape
    if classes != len(tissue_of_class):
        raise ValueError(f"refine_series: {classes} classes but {len(tissue_of_class)} in tissue_of_class")
    if image.shape != probabilities.shape[1:]:
        raise ValueError(f"refine_series: image {tuple(image.shape)} and probabilities {tuple(probabilities.shape)}")
    tissue = torch.as_tensor(tissue_of_class)
    blocks = _blocks(num_maps, height * width)
    # the smoothed, floored prior and each pixel's level, as (C, N, H * W) and (N, H * W): a block of maps is a view
    prior = torch.empty(classes, num_maps, height * width)
    level = torch.empty(num_maps, height * width, dtype=torch.long)
    histograms = torch.zeros(classes, NUM_LEVELS)
    for block in blocks:
        smoothed = _smooth_in_plane(probabilities[:, block].float(), prior_smoothing_passes)
        prior[:, block] = smoothed.add(prior_floor).div_(1 + classes * prior_floor).reshape(classes, -1, height * width)
        level[block] = (
            (image[block].float() * (NUM_LEVELS - 1)).round_().clamp_(0, NUM_LEVELS - 1).reshape(-1, height * width)
        )
        _add_class_histograms(histograms, level[block].reshape(-1), prior[:, block].reshape(classes, -1))
    posterior = torch.empty(classes, num_maps, height * width)
    for iteration in range(iterations):
        table = _likelihood_table(histograms, tissue, background_components)
        last = iteration == iterations - 1
        histograms = torch.zeros(classes, NUM_LEVELS)
        for block in blocks:
            block_level = level[block].reshape(-1)
            block_posterior = table[:, block_level].mul_(prior[:, block].reshape(classes, -1))
            block_posterior.div_(block_posterior.sum(0, keepdim=True).clamp_min_(1e-30))
            if last:
                posterior[:, block] = block_posterior.reshape(classes, -1, height * width)
            else:
                _add_class_histograms(histograms, block_level, block_posterior)
    return posterior.reshape(probabilities.shape)


def refine_probabilities(
    image: torch.Tensor,
    probabilities: torch.Tensor,
    series_of_plane: Sequence[str],
    **options: float,
) -> torch.Tensor:
    """Refine a canonical prediction series by series (:func:`refine_series`).

    Args:
        image: (P', T, H, W) canonical intensities of the P' planes predicted.
        probabilities: (C, P', T, H, W) their class probabilities.
        series_of_plane: (P',) the source series (plane file stem) each plane was cut from; planes of one series
            are fitted together.
        options: :func:`refine_series` settings.

    Returns:
        float32 (C, P', T, H, W).

    Example:
        >>> refined = refine_probabilities(sample["image"][0], probs, ["sa"] * 6 + ["la_2ch", "la_3ch", "la_4ch"])
    """
    if len(series_of_plane) != image.shape[0] or probabilities.shape[1:] != image.shape:
        raise ValueError(
            f"refine_probabilities: image {tuple(image.shape)}, probabilities {tuple(probabilities.shape)} and "
            f"{len(series_of_plane)} series names do not match"
        )
    refined = torch.empty(probabilities.shape, dtype=torch.float32)
    channels, _, frames, height, width = probabilities.shape
    for series in dict.fromkeys(series_of_plane):
        planes: list[int] | slice = [k for k, name in enumerate(series_of_plane) if name == series]
        if planes == list(range(planes[0], planes[-1] + 1)):
            planes = slice(planes[0], planes[-1] + 1)  # a series' planes are consecutive: views, not copies
        flat = probabilities[:, planes].reshape(channels, -1, height, width)
        result = refine_series(image[planes].reshape(-1, height, width), flat, **options)
        refined[:, planes] = result.reshape(channels, -1, frames, height, width)
    return refined
