"""The intensity refinement of the network's probabilities: a misplaced prior snaps to the scan's own tissue edges,
series by series, and the switch turns it off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scripts.intensity_refinement import _smooth_in_plane, refine_probabilities, refine_series
from scripts.labels import NUM_CLASSES

SIZE = 48


def ring_phantom(blood: float, myocardium: float, background: float, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A cine-like plane (4 frames, SIZE x SIZE, 256 levels) with an LV blood pool (radius 9 px) in a myocardial ring
    (to 14 px) on a background, noise sd 0.03; and its true labels (SIZE, SIZE)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    radius = np.hypot(yy - SIZE / 2, xx - SIZE / 2)
    truth = np.where(radius < 9, 1, np.where(radius < 14, 2, 0))
    levels = np.choose(truth, [background, blood, myocardium])
    noise = np.random.default_rng(seed).normal(0, 0.03, (4, SIZE, SIZE))
    image = np.clip(np.round((levels[None] + noise) * 255), 1, 255) / 255
    return torch.tensor(image, dtype=torch.float32), truth


def blocky_prior(truth: np.ndarray, shift_px: int) -> torch.Tensor:
    """(C, 4, SIZE, SIZE) probabilities of a network that has the classes right but shifted by ``shift_px`` and
    snapped to 4 px blocks (as a patch-based network's output looks on an unfamiliar scan), 0.7 confident."""
    shifted = np.roll(truth, shift_px, axis=1)
    blocks = shifted[::4, ::4].repeat(4, 0).repeat(4, 1)
    prior = np.full((NUM_CLASSES,) + blocks.shape, 0.3 / (NUM_CLASSES - 1))
    for c in range(NUM_CLASSES):
        prior[c][blocks == c] = 0.7
    return torch.tensor(np.repeat(prior[:, None], 4, axis=1), dtype=torch.float32)


def dice(pred: np.ndarray, truth: np.ndarray, c: int) -> float:
    return 2 * ((pred == c) & (truth == c)).sum() / ((pred == c).sum() + (truth == c).sum())


def test_refinement_moves_a_blocky_misplaced_prior_onto_the_tissue_edges():
    image, truth = ring_phantom(blood=0.8, myocardium=0.25, background=0.5)
    prior = blocky_prior(truth, shift_px=3)
    before = prior.argmax(0)[0].numpy()
    after = refine_series(image, prior).argmax(0)[0].numpy()
    for c in (1, 2):
        assert dice(after, truth, c) > dice(before, truth, c) + 0.1, (c, dice(before, truth, c))
    assert dice(after, truth, 1) > 0.9


def test_each_series_is_fitted_to_its_own_contrast():
    # the same heart as a bright-blood and as a dark-blood series: fitted together, one Gaussian per class cannot
    # describe both blood pools; fitted as two series, each snaps to its own edges
    bright, truth = ring_phantom(blood=0.8, myocardium=0.25, background=0.5)
    dark, _ = ring_phantom(blood=0.1, myocardium=0.45, background=0.75, seed=1)
    image = torch.stack([bright, dark])  # (P=2, T, H, W)
    prior = torch.stack([blocky_prior(truth, 3)] * 2, dim=1)  # (C, 2, T, H, W)
    apart = refine_probabilities(image, prior, ["sa", "la_4ch"]).argmax(0)
    together = refine_probabilities(image, prior, ["sa", "sa"]).argmax(0)
    before = dice(prior.argmax(0)[0, 0].numpy(), truth, 1)
    for plane in (0, 1):
        assert dice(apart[plane, 0].numpy(), truth, 1) > before + 0.1
    assert dice(together[1, 0].numpy(), truth, 1) < dice(apart[1, 0].numpy(), truth, 1)


def test_outside_the_field_of_view_keeps_the_prior_and_zero_iterations_change_nothing():
    image, truth = ring_phantom(blood=0.8, myocardium=0.25, background=0.5)
    image[:, :, :10] = 0  # a strip outside the source's field of view
    prior = blocky_prior(truth, 3)
    refined = refine_series(image, prior, prior_smoothing_passes=0)
    floored = (prior + 0.02) / (1 + NUM_CLASSES * 0.02)
    torch.testing.assert_close(refined[:, :, :, :10], floored[:, :, :, :10])
    assert torch.equal(refine_series(image, prior, iterations=0), prior)


def test_prior_smoothing_is_the_mean_over_each_pixels_3x3_neighbours_inside_the_image():
    """The separable shifted-add smoothing equals box filtering as torch defines it (avg_pool2d without the padding
    in the count), pass after pass, borders and corners included; 1-pixel-wide maps come back unchanged."""
    maps = torch.rand(NUM_CLASSES, 3, 17, 11)
    expected = maps.reshape(-1, 1, 17, 11)
    for passes in (1, 2, 3):
        expected = F.avg_pool2d(expected, 3, stride=1, padding=1, count_include_pad=False)
        torch.testing.assert_close(_smooth_in_plane(maps, passes), expected.reshape(maps.shape))
    assert torch.equal(_smooth_in_plane(maps[..., :1], 2), maps[..., :1])


def test_refinement_does_not_depend_on_how_many_maps_are_processed_at_once(monkeypatch):
    """The EM steps sum every pixel of the series whether the maps go through in one block or one at a time (the
    frames of a block stay in the CPU's caches; the fit is the series')."""
    import scripts.intensity_refinement as refinement

    image, truth = ring_phantom(blood=0.8, myocardium=0.25, background=0.5)
    prior = blocky_prior(truth, shift_px=3)
    together = refine_series(image, prior)
    monkeypatch.setattr(refinement, "BLOCK_PIXELS", SIZE * SIZE)
    torch.testing.assert_close(refine_series(image, prior), together)
    shuffled = [0, 2, 1, 3]  # the frames' order changes nothing but the order of the result
    torch.testing.assert_close(refine_series(image[shuffled], prior[:, shuffled]), together[:, shuffled])


def test_mismatched_shapes_are_refused():
    image, truth = ring_phantom(blood=0.8, myocardium=0.25, background=0.5)
    with pytest.raises(ValueError, match="do not match"):
        refine_probabilities(image[None], blocky_prior(truth, 0)[:, None], ["sa", "la_2ch"])
    with pytest.raises(ValueError, match="tissue_of_class"):
        refine_series(image, blocky_prior(truth, 0)[:3])
