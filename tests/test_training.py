"""Losses, augmentation, iteration steps, metrics and head fitting of the training (fast: tiny tensors and network).

The references below are written the naive way on purpose (explicit one-hot tensors, Python loops over subjects and
classes) so they share no code path with the vectorised implementation they check.
"""

from __future__ import annotations

import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import BUNDLE
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.handlers import from_engine
from monai.transforms import Compose, RandGaussianNoised

import scripts.steps as steps
from scripts.flags import as_flag
from scripts.handlers import (
    DurableDiskSaver,
    LatestCheckpoint,
    RandomStates,
    epoch_of,
    newest_readable_checkpoint,
    random_generators,
)
from scripts.head_fitting import fit_ridge, nan_mean_std, prepare_phenotype_head
from scripts.labels import NUM_CLASSES, PHENOTYPE_NAMES, UNLABELLED
from scripts.losses import segmentation_loss
from scripts.metrics import dice_per_class, spurious_voxels
from scripts.optim import trainable_parameters
from scripts.precision import seeded_rng
from scripts.presets import build_network
from scripts.steps import SegmentationStep, drop_long_axis_views, drop_random_planes
from scripts.weights import UnreadableCheckpointError, load_pretrained

PLANES, FRAMES, SIZE = 9, 10, 32
RV = 3


def tiny_heart(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network("heart", "tiny", PLANES, FRAMES, SIZE)


def random_case(batch: int = 2, planes: int = 3, frames: int = 2, size: int = 5, classes=(0, 1, 2), seed: int = 0):
    """Random logits (B, 6, P, T, H, W) and labels (B, 1, P, T, H, W) drawn from ``classes``, ~30 % UNLABELLED."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, NUM_CLASSES, planes, frames, size, size, generator=generator) * 2
    choices = torch.tensor(classes)
    label = choices[torch.randint(len(classes), (batch, 1, planes, frames, size, size), generator=generator)]
    unlabelled = torch.rand(label.shape, generator=generator) < 0.3
    return logits, label.masked_fill(unlabelled, UNLABELLED).to(torch.uint8)


def naive_loss(logits: torch.Tensor, label: torch.Tensor, class_mask: torch.Tensor, smooth: float = 1.0) -> float:
    """Cross-entropy + soft Dice with explicit one-hot targets and the unannotated classes' mass merged into
    background, loops over subjects, planes and classes (Dice over the pairs whose labels show the class), float64."""
    probs = torch.softmax(logits.double(), dim=1)
    merged = torch.zeros_like(probs)
    for b in range(len(logits)):
        for c in range(NUM_CLASSES):
            target_channel = c if (c == 0 or class_mask[b, c]) else 0
            merged[b, target_channel] += probs[b, c]
    target = label[:, 0].long()
    valid = target != UNLABELLED
    one_hot = torch.stack([(target == c) & valid for c in range(NUM_CLASSES)], dim=1).double()
    # cross-entropy: mean over all valid voxels of the batch (F.cross_entropy's ignore_index convention)
    cross_entropy = -(one_hot * torch.log(merged.clamp_min(1e-300))).sum() / valid.sum()
    dice_terms = []
    for b in range(len(logits)):
        for p in range(logits.shape[2]):
            for c in range(1, NUM_CLASSES):
                g = one_hot[b, c, p]
                if not class_mask[b, c] or g.sum() == 0:
                    continue
                predicted = merged[b, c, p] * valid[b, p]
                dice = (2 * (predicted * g).sum() + smooth) / (predicted.sum() + g.sum() + smooth)
                dice_terms.append(1 - dice)
    return float(cross_entropy + torch.stack(dice_terms).mean())


# --- segmentation loss -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "class_mask",
    [
        [[True] * 6, [True] * 6],
        # Sunnybrook-like subject (LV only) beside a fully annotated one
        [[True, True, True, False, False, False], [True] * 6],
    ],
    ids=["all_annotated", "partial"],
)
def test_segmentation_loss_equals_naive_one_hot_reference(class_mask):
    class_mask = torch.tensor(class_mask)
    # labels only use classes annotated in every subject (a label of an unannotated class is inconsistent data)
    logits, label = random_case(classes=(0, 1, 2), seed=1)
    expected = naive_loss(logits, label, class_mask)
    actual = float(segmentation_loss(logits, label, class_mask, exclusion_weight=0.0))
    assert actual == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # the Dice term matters: the reference without it differs by far more than the tolerance above
    cross_entropy_only = float(segmentation_loss(logits, label, class_mask, dice_weight=0.0, exclusion_weight=0.0))
    assert abs(actual - cross_entropy_only) > 1e-2


def test_dice_term_weighs_a_small_structure_in_one_plane_like_a_large_one_in_another():
    """Class 1 fills plane 0 and shows 2 voxels in plane 1: finding it only in plane 0 leaves half of the Dice term
    (a whole-subject Dice would hardly notice the 2 missed voxels)."""
    label = torch.zeros(1, 1, 2, 2, 8, 8, dtype=torch.uint8)
    label[0, 0, 0, :, 1:7, 1:7] = 1
    label[0, 0, 1, 0, 3, 3:5] = 1
    logits = torch.full((1, NUM_CLASSES, 2, 2, 8, 8), -20.0)
    logits[:, 0] = 20.0
    logits[:, 1, 0] = torch.where(label[0, 0, 0] == 1, 40.0, -20.0)  # plane 0 right, plane 1's 2 voxels missed
    class_mask = torch.ones(1, NUM_CLASSES, dtype=torch.bool)
    dice_term = float(segmentation_loss(logits, label, class_mask)) - float(
        segmentation_loss(logits, label, class_mask, dice_weight=0.0)
    )
    # plane 0: Dice 1; plane 1: (0 + 1) / (2 + 1) -> loss 2/3; mean over the two (plane, class) pairs = 1/3
    assert dice_term == pytest.approx(1 / 3, abs=1e-3)


def test_segmentation_loss_ignores_unlabelled_voxels_without_the_exclusion_term():
    logits, label = random_case(seed=2)
    class_mask = torch.ones(2, NUM_CLASSES, dtype=torch.bool)
    changed = logits.clone()
    unlabelled = (label[:, 0] == UNLABELLED).unsqueeze(1).expand_as(logits)
    changed[unlabelled] = torch.randn(int(unlabelled.sum())) * 10
    assert float(segmentation_loss(changed, label, class_mask, exclusion_weight=0.0)) == pytest.approx(
        float(segmentation_loss(logits, label, class_mask, exclusion_weight=0.0)), rel=1e-6
    )


def naive_exclusion(logits: torch.Tensor, label: torch.Tensor) -> float:
    """-log(1 - sum of the probabilities of the foreground classes drawn in the voxel's plane-frame), averaged over
    the unlabelled voxels of plane-frames that draw one, with explicit loops, float64 (all classes annotated)."""
    probs = torch.softmax(logits.double(), dim=1)
    terms = []
    for b in range(label.shape[0]):
        for p in range(label.shape[2]):
            for t in range(label.shape[3]):
                frame = label[b, 0, p, t]
                drawn = [c for c in range(1, NUM_CLASSES) if bool((frame == c).any())]
                if not drawn:
                    continue
                excluded = sum(probs[b, c, p, t] for c in drawn)
                terms.append(-torch.log(1 - excluded)[frame == UNLABELLED])
    return float(torch.cat(terms).mean())


def test_exclusion_term_equals_its_naive_reference_and_vanishes_on_full_labels():
    logits, label = random_case(seed=6)
    class_mask = torch.ones(2, NUM_CLASSES, dtype=torch.bool)
    with_term = float(segmentation_loss(logits, label, class_mask))
    without = float(segmentation_loss(logits, label, class_mask, exclusion_weight=0.0))
    assert with_term - without == pytest.approx(naive_exclusion(logits, label), rel=1e-5)
    full = torch.where(label == UNLABELLED, torch.zeros_like(label), label)
    assert float(segmentation_loss(logits, full, class_mask)) == float(
        segmentation_loss(logits, full, class_mask, exclusion_weight=0.0)
    )


def test_a_class_drawn_in_a_frame_is_kept_out_of_its_unlabelled_band_only_there():
    """An end-systolic frame drawn as Sunnybrook draws it (LV blood pool inside, the band around it unlabelled):
    painting the LV into the band costs; the same band in a frame that draws nothing costs nothing."""
    label = torch.full((1, 1, 1, 2, 16, 16), UNLABELLED, dtype=torch.uint8)
    label[..., 0, 6:10, 6:10] = 1  # frame 0: endocardium drawn; frame 1: not contoured
    logits = torch.zeros(1, NUM_CLASSES, 1, 2, 16, 16)
    logits[:, 1, ..., 6:10, 6:10] = 10.0
    spilled = logits.clone()
    spilled[:, 1, ..., 3:13, 3:13] = 10.0  # the LV spread 3 px around the contour, at both frames
    class_mask = torch.tensor([[True, True, True, False, False, False]])
    spilled_loss, contoured_loss = (float(segmentation_loss(x, label, class_mask)) for x in (spilled, logits))
    assert spilled_loss > contoured_loss + 1
    only_frame_1 = logits.clone()
    only_frame_1[:, 1, :, 1, 3:13, 3:13] = 10.0
    assert float(segmentation_loss(only_frame_1, label, class_mask)) == pytest.approx(
        float(segmentation_loss(logits, label, class_mask)), rel=1e-6
    )


def test_unannotated_rv_is_marginalised_into_background():
    """Moving probability from background to RV on background-labelled voxels must cost nothing when the subject
    does not annotate the RV (its "background" may be RV), and must cost when it does."""
    logits, label = random_case(classes=(0, 1, 2), seed=3)
    logits[:, RV] = -30.0  # RV carries ~no probability to start with
    moved = logits.clone()
    background = (label[:, 0] == 0).unsqueeze(1)
    # 90 % of the background probability goes to RV: exp(l0 + log .1) + exp(l0 + log .9) = exp(l0), partition unchanged
    moved[:, 3:4] = torch.where(background, logits[:, 0:1] + math.log(0.9), logits[:, 3:4])
    moved[:, 0:1] = torch.where(background, logits[:, 0:1] + math.log(0.1), logits[:, 0:1])

    lv_only = torch.tensor([[True, True, True, False, False, False]] * 2)
    before, after = float(segmentation_loss(logits, label, lv_only)), float(segmentation_loss(moved, label, lv_only))
    # only the exp(-30) RV mass of the original logits differs: equal to float32 rounding
    assert after == pytest.approx(before, rel=1e-5)

    all_classes = torch.ones(2, NUM_CLASSES, dtype=torch.bool)
    annotated_before = float(segmentation_loss(logits, label, all_classes))
    annotated_after = float(segmentation_loss(moved, label, all_classes))
    # plain cross-entropy rises by -log(0.1) = 2.3 on every background voxel (~1/3 of the valid ones) plus the RV
    # Dice term: well above 0.5
    assert annotated_after - annotated_before > 0.5


def test_unlabelled_subject_and_plane_add_no_loss_and_no_gradient():
    logits, label = random_case(seed=4)
    class_mask = torch.ones(2, NUM_CLASSES, dtype=torch.bool)

    nothing = torch.full_like(label, UNLABELLED)
    empty_logits = logits.clone().requires_grad_(True)
    loss = segmentation_loss(empty_logits, nothing, class_mask)
    assert torch.isfinite(loss) and float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(empty_logits.grad, torch.zeros_like(logits))

    # subject 1 and plane 0 of subject 0 unlabelled: their logits get no gradient, and changing them changes nothing
    label[1] = UNLABELLED
    label[0, :, 0] = UNLABELLED
    partial = logits.clone().requires_grad_(True)
    loss = segmentation_loss(partial, label, class_mask)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    assert torch.equal(partial.grad[1], torch.zeros_like(logits[1]))
    assert torch.equal(partial.grad[0, :, 0], torch.zeros_like(logits[0, :, 0]))
    assert float(partial.grad[0, :, 1:].abs().sum()) > 0
    scrambled = logits.clone()
    scrambled[1] = torch.randn_like(logits[1]) * 10
    scrambled[0, :, 0] = torch.randn_like(logits[0, :, 0]) * 10
    assert float(segmentation_loss(scrambled, label, class_mask)) == pytest.approx(float(loss.detach()), rel=1e-6)


def test_unlabelled_subject_does_not_dilute_the_batch_loss():
    logits, label = random_case(seed=5)
    class_mask = torch.ones(2, NUM_CLASSES, dtype=torch.bool)
    label[1] = UNLABELLED
    alone = float(segmentation_loss(logits[:1], label[:1], class_mask[:1]))
    assert float(segmentation_loss(logits, label, class_mask)) == pytest.approx(alone, rel=1e-5)


# --- missing-plane augmentation ------------------------------------------------------------------


@pytest.mark.parametrize("max_dropped", [1, 2, 4])
def test_drop_random_planes_keeps_a_plane_zeroes_dropped_ones_and_respects_max(max_dropped):
    torch.manual_seed(0)
    image = torch.rand(4, 1, 5, 2, 3, 3) + 0.1  # strictly positive: a zero pixel means "dropped"
    # 5, 3, 2 and 1 present planes
    plane_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 1, 0, 0, 1], [0, 0, 1, 0, 0]], dtype=torch.bool)
    original_image, original_mask = image.clone(), plane_mask.clone()
    counts = set()
    for _ in range(60):
        dropped_image, dropped_mask = drop_random_planes(image, plane_mask, max_dropped, probability=1.0)
        assert torch.equal(image, original_image) and torch.equal(plane_mask, original_mask), "inputs untouched"
        assert not bool((dropped_mask & ~plane_mask).any()), "a missing plane never comes back"
        assert bool(dropped_mask.any(1).all()), "every sample keeps at least one plane"
        removed = plane_mask & ~dropped_mask
        for b in range(4):
            count = int(removed[b].sum())
            present = int(plane_mask[b].sum())
            # probability 1: at least one plane goes unless only one is present; never more than max_dropped
            assert min(1, present - 1) <= count <= min(max_dropped, present - 1)
            counts.add(count)
            assert bool((dropped_image[b, :, removed[b]] == 0).all())
            kept = ~removed[b]
            assert torch.equal(dropped_image[b, :, kept], image[b, :, kept])
    # the number removed is drawn from 1..max_dropped (capped by the 4 removable planes of sample 0)
    assert set(range(1, min(max_dropped, 4) + 1)) <= counts


def test_drop_random_planes_probability_zero_or_max_zero_changes_nothing():
    image, plane_mask = torch.rand(3, 1, 4, 2, 3, 3), torch.ones(3, 4, dtype=torch.bool)
    for max_dropped, probability in [(2, 0.0), (0, 1.0)]:
        dropped_image, dropped_mask = drop_random_planes(image, plane_mask, max_dropped, probability)
        assert torch.equal(dropped_image, image) and torch.equal(dropped_mask, plane_mask)


def test_drop_long_axis_views_leaves_sa_stacks_alone_and_keeps_la_only_subjects():
    torch.manual_seed(0)
    image = torch.rand(3, 1, 9, 2, 3, 3) + 0.1
    plane_mask = torch.ones(3, 9, dtype=torch.bool)
    plane_mask[2, :6] = False  # LA views only: nothing would be left
    dropped_image, dropped_mask = drop_long_axis_views(image, plane_mask, num_la_views=3, probability=1.0)
    assert not bool(dropped_mask[:2, 6:].any()) and bool(dropped_mask[:2, :6].all())
    assert bool((dropped_image[:2, :, 6:] == 0).all()) and torch.equal(dropped_image[:2, :, :6], image[:2, :, :6])
    assert torch.equal(dropped_mask[2], plane_mask[2]) and torch.equal(dropped_image[2], image[2])
    assert bool(plane_mask.sum() == 21), "the input mask is untouched"
    unchanged = drop_long_axis_views(image, plane_mask, num_la_views=3, probability=0.0)
    assert unchanged[0] is image and unchanged[1] is plane_mask


# --- iteration steps through a real SupervisedTrainer ----------------------------------------------


class Recorder(torch.nn.Module):
    """Wraps the tiny network; records the inputs of each call and can poison one call's output with NaN."""

    def __init__(self, network: torch.nn.Module, poison: bool = False) -> None:
        super().__init__()
        self.network = network
        self.poison = poison
        self.calls: list[dict] = []

    def forward(self, image, plane_mask=None, decode_planes=None, decode_frames=None, refine=True):
        logits = self.network(image, plane_mask, decode_planes, decode_frames, refine)
        self.calls.append(
            {
                "image": image.detach(),
                "plane_mask": plane_mask.detach(),
                "decode_planes": decode_planes,
                "decode_frames": decode_frames,
            }
        )
        if self.poison:
            self.poison = False
            logits = logits * float("nan")
        self.calls[-1]["logits_shape"] = tuple(logits.shape)
        return logits


def tiny_items(count: int = 2) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    items = []
    for _ in range(count):
        label = torch.randint(0, 3, (1, PLANES, FRAMES, SIZE, SIZE), generator=generator).to(torch.uint8)
        label[:, :, 1::2] = UNLABELLED  # half the frames unannotated, as in real data
        plane_mask = torch.ones(PLANES, dtype=torch.bool)
        plane_mask[-1] = False  # a missing LA view: zero image, unlabelled
        image = torch.rand(1, PLANES, FRAMES, SIZE, SIZE, generator=generator)
        image[:, -1] = 0
        label[:, -1] = UNLABELLED
        items.append(
            {
                "image": image,
                "label": label,
                "plane_mask": plane_mask,
                "class_mask": torch.tensor([True, True, True, False, False, False]),
                "phenotypes": torch.full((len(PHENOTYPE_NAMES),), float("nan")),
            }
        )
    return items


def run_one_iteration(network: torch.nn.Module, step) -> SupervisedTrainer:
    loader = DataLoader(tiny_items(2), batch_size=2, shuffle=False, num_workers=0)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.AdamW(network.parameters(), lr=1e-2),
        loss_function=None,
        iteration_update=step,
        decollate=False,
    )
    trainer.run()
    assert trainer.state.iteration == 1
    return trainer


def test_segmentation_step_trains_the_tiny_network_in_a_supervised_trainer(monkeypatch):
    network = Recorder(tiny_heart())
    before = {k: v.clone() for k, v in network.state_dict().items()}
    seen = {}
    real_loss = steps.segmentation_loss

    def spy(logits, label, class_mask, dice_weight=1.0, exclusion_weight=1.0):
        seen["label"] = label.detach().clone()
        return real_loss(logits, label, class_mask, dice_weight, exclusion_weight)

    monkeypatch.setattr(steps, "segmentation_loss", spy)
    step = SegmentationStep(max_dropped_planes=2, drop_probability=1.0, decoded_planes=2, decoded_frames=4)
    trainer = run_one_iteration(network, step)

    # MONAI's decollated trainer output: one record per sample, each with the batch's loss, which the handlers MONAI
    # adds (the MLflow handler of --tracking mlflow) read through from_engine(['loss'], first=True)
    output = trainer.state.output
    assert len(output) == 2 and output[0] == output[1]
    loss = from_engine(["loss"], first=True)(output)
    assert isinstance(loss, float) and math.isfinite(loss) and loss > 0
    call = network.calls[0]
    decoded = call["decode_planes"]
    frames = call["decode_frames"]
    assert decoded is not None and len(decoded) == 2
    assert frames is not None and len(frames) == 4 and bool((frames.diff() > 0).all()) and int(frames.max()) < FRAMES
    assert call["logits_shape"] == (2, NUM_CLASSES, 2, 4, SIZE, SIZE)
    # the encoder saw every plane; the network's plane mask is the augmented one (1 or 2 of 8 present planes removed)
    assert call["image"].shape[2] == PLANES
    removed = ~call["plane_mask"][:, :-1]
    assert bool((1 <= removed.sum(1)).all() and (removed.sum(1) <= 2).all())
    # the loss saw the labels of the decoded planes and frames only, UNLABELLED wherever the plane was dropped
    items = tiny_items(2)
    for b in range(2):
        for k, plane in enumerate(decoded.tolist()):
            expected = items[b]["label"][0, plane, frames]
            if not call["plane_mask"][b, plane]:
                expected = torch.full_like(expected, UNLABELLED)
                assert bool((call["image"][b, 0, plane] == 0).all())
            assert torch.equal(seen["label"][b, 0, k], expected)

    after = network.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("network.segmenter.") for k in changed) and any(
        k.startswith("network.encoder.") for k in changed
    )
    assert all(bool(torch.isfinite(v).all()) for v in after.values())


def test_step_with_non_finite_gradient_skips_the_update():
    network = Recorder(tiny_heart(), poison=True)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    trainer = run_one_iteration(network, SegmentationStep(drop_probability=0.0, decoded_planes=2, precision="fp32"))
    assert math.isnan(trainer.state.output[0]["loss"]), "the poisoned call was the one trained on"
    after = network.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"{key} changed although the gradient was NaN"
    # the same step without poison does update: the check above could fail
    trainer = run_one_iteration(network, SegmentationStep(drop_probability=0.0, decoded_planes=2, precision="fp32"))
    assert math.isfinite(trainer.state.output[0]["loss"])
    assert any(not torch.equal(before[k], v) for k, v in network.state_dict().items())


# --- setup helpers ---------------------------------------------------------------------------------


def test_prepare_phenotype_head_is_nan_aware():
    k = len(PHENOTYPE_NAMES)
    values = np.full((4, k), np.nan)
    values[:, 0] = [50.0, 60.0, 70.0, 100.0]  # all known
    values[:2, 1] = [10.0, 20.0]  # half known
    values[0, 2] = 7.0  # one known: no spread, std stays 1
    items = [{"phenotypes": row.astype(np.float32)} for row in values]
    network = prepare_phenotype_head(tiny_heart(), items)
    head = network.phenotype_head
    mean, std = head.target_mean.numpy(), head.target_std.numpy()
    np.testing.assert_allclose(mean[:2], np.nanmean(values[:, :2], axis=0), rtol=1e-6)
    np.testing.assert_allclose(std[:2], np.nanstd(values[:, :2], axis=0, ddof=1), rtol=1e-6)
    assert mean[2] == pytest.approx(7.0) and std[2] == pytest.approx(1.0)
    np.testing.assert_array_equal(mean[3:], 0.0)  # never known: identity normalisation
    np.testing.assert_array_equal(std[3:], 1.0)
    with pytest.raises(ValueError, match="phenotypes"):
        prepare_phenotype_head(tiny_heart(), [{"phenotypes": np.full(k, np.nan)}])


def test_prepare_phenotype_head_standardises_the_training_representations():
    network = tiny_heart()
    generator = torch.Generator().manual_seed(3)
    items = [{"phenotypes": np.arange(len(PHENOTYPE_NAMES), dtype=np.float32) + i, "index": i} for i in range(4)]
    images = [torch.randn(1, PLANES, FRAMES, SIZE, SIZE, generator=generator) for _ in items]
    loaded = []

    def preprocessing(item):
        loaded.append(item["index"])
        return {"image": images[item["index"]], "plane_mask": torch.ones(PLANES, dtype=torch.bool)}

    prepare_phenotype_head(network, items, preprocessing, precision="fp32")
    assert loaded == [0, 1, 2, 3] and network.training, "every item embedded once; the training mode is restored"
    network.eval()
    with torch.no_grad():
        embeddings = torch.cat([network.embed(image[None]) for image in images])
    head = network.phenotype_head
    torch.testing.assert_close(head.feature_mean, embeddings.mean(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(head.feature_std, embeddings.std(0), atol=1e-5, rtol=1e-4)


def test_fit_ridge_recovers_a_linear_map_and_regularises_noise():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((60, 5))
    true_weight = np.array([1.0, -2.0, 0.5, 0.0, 0.0])
    targets = np.stack([features @ true_weight + 0.3, rng.standard_normal(60), np.full(60, np.nan)], axis=1)
    targets[:10, 0] = np.nan  # unknown for some subjects: those rows are left out of that column only
    weight, bias, penalties = fit_ridge(features, targets, np.arange(60))
    np.testing.assert_allclose(weight[0], true_weight, atol=0.05)
    assert bias[0] == pytest.approx(0.3, abs=0.05)
    # pure noise: cross-validation picks a strong penalty, so the weights shrink towards 0
    assert penalties[1] > penalties[0] and np.abs(weight[1]).max() < 0.2
    # never known: no weights, bias 0
    assert not np.isfinite(penalties[2]) and np.all(weight[2] == 0) and bias[2] == 0


def test_prepare_phenotype_head_fits_the_linear_head_in_closed_form():
    """Targets that are a linear function of the full-plane embeddings are predicted far better than the mean."""
    network = tiny_heart()
    assert network.phenotype_head.is_linear
    generator = torch.Generator().manual_seed(5)
    images = [torch.randn(1, PLANES, FRAMES, SIZE, SIZE, generator=generator) for _ in range(40)]
    network.eval()
    with torch.no_grad():
        embeddings = torch.cat([network.embed(image[None]) for image in images]).double().numpy()
    direction = np.random.default_rng(1).standard_normal(embeddings.shape[1])
    signal = (embeddings - embeddings.mean(0)) / embeddings.std(0) @ direction
    values = np.full((40, len(PHENOTYPE_NAMES)), np.nan)
    values[:, 0] = 120.0 + 10.0 * signal / signal.std()
    items = [{"phenotypes": row.astype(np.float32), "index": i} for i, row in enumerate(values)]

    def preprocessing(item):
        return {"image": images[item["index"]], "plane_mask": torch.ones(PLANES, dtype=torch.bool)}

    prepare_phenotype_head(network, items, preprocessing, precision="fp32", augmented_views=1)
    with torch.no_grad():
        predicted = network.phenotype_head.predict_physical(torch.as_tensor(embeddings).float())[:, 0].numpy()
    error = np.abs(predicted - values[:, 0]).mean()
    mean_guess = np.abs(values[:, 0] - values[:, 0].mean()).mean()
    assert error < 0.5 * mean_guess
    with pytest.raises(ValueError, match="linear"):
        build_network("heart", "tiny", PLANES, FRAMES, SIZE, phenotype_hidden=8).phenotype_head.set_linear(
            np.zeros((len(PHENOTYPE_NAMES), 32)), np.zeros(len(PHENOTYPE_NAMES))
        )


def test_load_pretrained_scratch_missing_and_heart_checkpoint(tmp_path):
    network = tiny_heart(seed=0)
    state = {k: v.clone() for k, v in network.state_dict().items()}
    # everything but the measure head (fit in closed form, never by gradient) trains unless frozen
    gradient_trained = [p for name, p in network.named_parameters() if not name.startswith("measure_head.")]
    for scratch in ("", None):
        assert load_pretrained(network, scratch) is network
        assert all(torch.equal(state[k], v) for k, v in network.state_dict().items())
        assert all(p.requires_grad for p in gradient_trained)
    with pytest.raises(FileNotFoundError, match="--pretrained_ckpt"):
        load_pretrained(network, str(tmp_path / "missing.pt"))
    other = tiny_heart(seed=1)
    torch.save({"network": other.state_dict()}, tmp_path / "other.pt")
    # the command line's "false" is a non-empty string: it must not freeze anything
    load_pretrained(network, str(tmp_path / "other.pt"), freeze_encoder="false", train_only="phenotype_head")
    assert all(torch.equal(other.state_dict()[k], v) for k, v in network.state_dict().items())
    assert all(p.requires_grad for p in gradient_trained)
    load_pretrained(network, str(tmp_path / "other.pt"), freeze_encoder="true", train_only="phenotype_head")
    trainable = {name.split(".")[0] for name, p in network.named_parameters() if p.requires_grad}
    assert trainable == {"phenotype_head"}
    with pytest.raises(ValueError, match="--freeze_encoder 'maybe'"):
        load_pretrained(network, "", freeze_encoder="maybe")


def test_as_flag_reads_the_command_lines_words_and_names_a_bad_one():
    for word in (True, 1, "true", "True", " YES ", "on", "1"):
        assert as_flag(word, "resume") is True
    for word in (False, 0, "false", "False", "no", "off", "0"):
        assert as_flag(word, "resume") is False
    for bad in ("", "ture", 2, None):
        with pytest.raises(ValueError, match="--resume"):
            as_flag(bad, "resume")


def test_layer_decay_gives_each_encoder_depth_its_rate_and_every_parameter_one_group():
    network = tiny_heart()
    groups = trainable_parameters(network, learning_rate=1e-3, head_learning_rate=4e-3, layer_decay=0.5)
    rate_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = {name: p for name, p in network.named_parameters() if p.requires_grad}
    assert sum(len(g["params"]) for g in groups) == len(named) == len(rate_of)
    last = network.encoder.num_layers - 1
    assert rate_of[id(named["encoder.norm.weight"])] == pytest.approx(1e-3)
    assert rate_of[id(named[f"encoder.blocks.{last}.attn.qkv.weight"])] == pytest.approx(1e-3)
    assert rate_of[id(named[f"encoder.blocks.{last - 1}.attn.qkv.weight"])] == pytest.approx(5e-4)
    assert rate_of[id(named["encoder.patch_embed.weight"])] == pytest.approx(1e-3 * 0.5 ** (last + 1))
    assert rate_of[id(named["encoder.plane_embed"])] == pytest.approx(1e-3 * 0.5 ** (last + 1))
    assert {rate_of[id(p)] for n, p in named.items() if not n.startswith("encoder.")} == {4e-3}
    # without decay the encoder is one group, as checkpoints of earlier runs expect
    assert [g["lr"] for g in trainable_parameters(network, 1e-3, 4e-3)] == [1e-3, 4e-3]
    with pytest.raises(ValueError, match="layer_decay"):
        trainable_parameters(network, 1e-3, 4e-3, layer_decay=0.0)


def test_dice_per_class_on_hand_made_maps():
    label = torch.tensor([[0, 1, 1, 2], [0, 1, 2, 2], [UNLABELLED, UNLABELLED, 0, 0]])
    annotated = torch.tensor([True, True, True, True, False, False])
    perfect = dice_per_class(label.clone(), label, annotated)
    assert perfect[:2].tolist() == [1.0, 1.0]
    # class 3 annotated but absent from both maps, classes 4 and 5 not annotated: no score
    assert all(math.isnan(v) for v in perfect[2:].tolist())

    swapped = label.clone()
    swapped[label == 1], swapped[label == 2] = 2, 1
    assert dice_per_class(swapped, label, annotated)[:2].tolist() == [0.0, 0.0]

    # predictions on UNLABELLED voxels do not count; one of three class-1 voxels missed: 2 * 2 / (2 + 3) = 0.8
    partial = label.clone()
    partial[2, :2] = 1
    partial[1, 1] = 0
    assert dice_per_class(partial, label, annotated)[0].item() == pytest.approx(0.8)
    # a class the subject does not annotate gets no score even if predicted
    predicted_rv = label.clone()
    predicted_rv[0, 0] = 4
    assert math.isnan(dice_per_class(predicted_rv, label, annotated)[3].item())


def test_a_class_the_label_lacks_is_not_scored_but_counted_as_spurious_with_ignore_empty():
    label = torch.tensor([[0, 1, 1, 2], [0, 1, 2, 2], [UNLABELLED, UNLABELLED, 0, 0]])
    annotated = torch.tensor([True, True, True, True, False, False])
    predicted = label.clone()
    predicted[2, 2:] = 3  # class 3 is annotated but absent from the label: 2 spurious voxels
    predicted[2, 0] = 3  # a prediction on an unlabelled voxel does not count
    assert dice_per_class(predicted, label, annotated)[2].item() == 0.0
    assert math.isnan(dice_per_class(predicted, label, annotated, ignore_empty=True)[2].item())
    assert dice_per_class(predicted, label, annotated, ignore_empty=True)[:2].tolist() == [1.0, 1.0]
    spurious = spurious_voxels(predicted, label, annotated)
    assert spurious[2].item() == 2.0
    # classes the label shows, and classes it does not annotate, have no spurious count
    assert all(math.isnan(spurious[k].item()) for k in (0, 1, 3, 4))
    assert spurious_voxels(label.clone(), label, annotated)[2].item() == 0.0


def test_segmentation_loss_decreases_when_logits_follow_the_labels():
    """Sanity of sign and scale: logits equal to scaled one-hot labels give a much lower loss than random ones."""
    logits, label = random_case(seed=6)
    class_mask = torch.ones(2, NUM_CLASSES, dtype=torch.bool)
    target = label[:, 0].long().masked_fill(label[:, 0] == UNLABELLED, 0)
    good = F.one_hot(target, NUM_CLASSES).permute(0, 5, 1, 2, 3, 4).float() * 20
    assert float(segmentation_loss(good, label, class_mask)) < 0.1 < float(segmentation_loss(logits, label, class_mask))


def test_nan_mean_std_skips_unknown_values():
    values = np.array([[1.0, np.nan, np.nan], [3.0, 5.0, np.nan], [5.0, np.nan, np.nan]])
    mean, std = nan_mean_std(values)
    np.testing.assert_allclose(mean, [3.0, 5.0, 0.0])  # a column known for no row: mean 0
    np.testing.assert_allclose(std, [2.0, 1.0, 1.0])  # sample std; fewer than 2 known: 1


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))],
)
def test_seeded_rng_repeats_its_block_and_leaves_the_generators_as_they_were(device):
    """Seeded validation must not restart the training's random streams (on CUDA the MAE's masks) every epoch."""
    torch.manual_seed(123)
    state = torch.cuda.get_rng_state() if device == "cuda" else torch.get_rng_state()
    with seeded_rng(7, device):
        first = torch.rand(4, device=device)
    with seeded_rng(7, device):
        second = torch.rand(4, device=device)
    assert torch.equal(first, second)
    assert torch.equal(torch.cuda.get_rng_state() if device == "cuda" else torch.get_rng_state(), state)


# --- checkpoints under faults: kills, truncated files, resume ---------------------------------------

#: a plain ignite training whose checkpoint writer is killed (SIGKILL) half-way through writing epoch 2's checkpoint
KILLED_WHILE_WRITING = """
import os, signal, sys, torch
from ignite.engine import Engine
from scripts.handlers import LatestCheckpoint

trainer = Engine(lambda engine, batch: None)
LatestCheckpoint(sys.argv[1], {"network": torch.nn.Linear(4, 4)}).attach(trainer)
save = torch.save


def dies_while_writing(obj, file, **kwargs):
    if trainer.state.epoch == 2:
        file.write(b"PK" * 1000)
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    save(obj, file, **kwargs)


torch.save = dies_while_writing
trainer.run([0], max_epochs=3)
"""


def test_a_kill_while_a_checkpoint_is_written_leaves_the_previous_one_and_resume_cleans_up(tmp_path):
    folder = tmp_path / "models"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BUNDLE), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, str(folder)], env=env, capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-3000:]
    visible = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    partial = [p for p in folder.iterdir() if p.name.startswith(".")]
    assert visible == ["checkpoint_epoch=1.pt"], "the previous checkpoint is kept until its successor is in place"
    assert len(partial) == 1 and partial[0].stat().st_size == 2000, "the unfinished file is the hidden one"
    assert torch.load(folder / "checkpoint_epoch=1.pt", weights_only=True)["trainer"]["iteration"] == 1
    write_truncated(folder / "checkpoint_epoch=7.pt", "truncated")  # a newer one that cannot be read

    trainer = Engine(lambda engine, batch: None)
    LatestCheckpoint(str(folder), {"network": torch.nn.Linear(4, 4)}, resume="true").attach(trainer)
    epochs_run = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: epochs_run.append(engine.state.epoch))
    trainer.run([0], max_epochs=3)
    assert epochs_run == [2, 3], "resumed after epoch 1, the newest readable checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_epoch=3.pt"], "the partial and unreadable go"


def test_the_fixed_name_saver_replaces_model_pt_in_one_step(tmp_path):
    """ignite removes the best model before saving the next one: the saver keeps it until the new one replaces it."""
    saver = DurableDiskSaver(tmp_path, filename="model.pt")
    saver({"weight": torch.tensor(1.0)}, "model_key_metric=0.5.pt")
    saver.remove("model_key_metric=0.5.pt")
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"] == 1.0, "still there after remove()"
    saver({"weight": torch.tensor(2.0)}, "model_key_metric=0.7.pt")
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"] == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def write_truncated(path: Path, broken: str) -> None:
    """A checkpoint cut short, empty, or not a checkpoint at all."""
    torch.save({"network": {"weight": torch.zeros(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"not a checkpoint"}[broken])


@pytest.mark.parametrize("broken", ["truncated", "empty", "garbage"])
def test_resume_passes_over_an_unreadable_checkpoint_to_an_older_one_and_names_it_when_alone(tmp_path, broken):
    torch.save({"network": {"weight": torch.ones(3)}}, tmp_path / "checkpoint_epoch=1.pt")
    write_truncated(tmp_path / "checkpoint_epoch=2.pt", broken)
    path, checkpoint = newest_readable_checkpoint(str(tmp_path))
    assert path.endswith("checkpoint_epoch=1.pt") and torch.equal(checkpoint["network"]["weight"], torch.ones(3))
    (tmp_path / "checkpoint_epoch=1.pt").unlink()
    with pytest.raises(UnreadableCheckpointError) as raised:
        newest_readable_checkpoint(str(tmp_path))
    message = str(raised.value)
    assert str(tmp_path / "checkpoint_epoch=2.pt") in message and "Delete it" in message
    assert "weights_only" not in message


def test_a_fine_tuning_from_a_truncated_model_pt_names_the_file(tmp_path):
    write_truncated(tmp_path / "model.pt", "truncated")
    with pytest.raises(UnreadableCheckpointError, match=f"cannot read the checkpoint {tmp_path / 'model.pt'}"):
        load_pretrained(tiny_heart(), str(tmp_path / "model.pt"))


def test_random_states_restore_every_stream_the_training_draws_from(tmp_path):
    """torch's, numpy's and Python's global generators, a random transform's own and the data loader's generator come
    back as saved, through a checkpoint read with weights_only."""
    dataset = Dataset(
        [{"x": torch.zeros(3), "i": i} for i in range(4)], transform=Compose([RandGaussianNoised("x", 1.0)])
    )
    loader = DataLoader(dataset, batch_size=1, shuffle=True, generator=torch.Generator().manual_seed(1))
    assert sum(isinstance(g, torch.Generator) for g in random_generators(loader)) == 1
    assert sum(isinstance(g, np.random.RandomState) for g in random_generators(loader)) >= 2, "Compose's, the noise's"
    states = RandomStates(loader)
    torch.save(states.state_dict(), tmp_path / "rng.pt")

    def draw() -> list:
        batches = [(batch["x"], batch["i"]) for batch in loader]
        return [torch.rand(3), torch.from_numpy(np.random.rand(3)), torch.tensor(random.random()), batches]

    first = draw()
    second = draw()
    states.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = draw()
    for a, b, c in zip(first[:3], second[:3], again[:3]):
        assert torch.equal(a, c) and not torch.equal(a, b)
    assert all(torch.equal(x, y) and torch.equal(i, j) for (x, i), (y, j) in zip(first[3], again[3]))
    assert not all(torch.equal(x, y) for (x, _), (y, _) in zip(first[3], second[3])), "the data draws do vary"


SEGMENTATION_CONFIGS = "['configs/inference.yaml','configs/train.yaml','configs/finetune_segmentation.yaml']"
EPOCHS = 3


def segmentation_training(cohort: Path, output_dir: Path, *overrides: str) -> list[str]:
    """A tiny segmentation fine-tuning of :data:`EPOCHS` epochs from scratch through the real bundle runner."""
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", SEGMENTATION_CONFIGS, "--preset", "tiny",
            "--dataset_dir", str(cohort), "--output_dir", str(output_dir), "--max_epochs", str(EPOCHS),
            "--pretrained_ckpt", "''", "--decoded_frames", "5", *overrides]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted_checkpoint(tiny_cohort, tmp_path_factory) -> dict:
    """The last checkpoint of the tiny segmentation training run without interruption."""
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    result = subprocess.run(segmentation_training(tiny_cohort, output_dir), cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    last = output_dir / "finetune_segmentation" / "models" / f"checkpoint_epoch={EPOCHS}.pt"
    return torch.load(last, weights_only=True)


def max_weight_difference(expected: dict, actual: dict) -> float:
    """max |dW| between the networks of two checkpoints."""
    return max(float((v.double() - actual["network"][k].double()).abs().max()) for k, v in expected["network"].items())


def test_a_training_killed_after_a_checkpoint_resumes_to_the_uninterrupted_runs_weights(
    tiny_cohort, tmp_path, uninterrupted_checkpoint
):
    models = tmp_path / "killed" / "finetune_segmentation" / "models"
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(
            segmentation_training(tiny_cohort, tmp_path / "killed"), cwd=BUNDLE, stdout=log, stderr=subprocess.STDOUT
        )
        # kill as soon as the first epoch's checkpoint is in place (the poll ends when the run ends, to fail below)
        while process.poll() is None and not list(models.glob("checkpoint_epoch=*.pt")):
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "killed while training, before its end"
    # the checkpoint's best-model record includes its own epoch's validation
    saved = torch.load(max(models.glob("checkpoint_epoch=*.pt"), key=lambda p: epoch_of(str(p))), weights_only=True)
    epoch = saved["trainer"]["iteration"] // saved["trainer"]["epoch_length"]
    logged = re.findall(r"Metrics -- val_mean_dice: ([0-9.]+)", (tmp_path / "killed.log").read_text())[:epoch]
    dice = [float(value) for value in logged]
    assert len(dice) == epoch and saved["best_model"]["best_metric_epoch"] == 1 + dice.index(max(dice))

    resumed = subprocess.run(
        segmentation_training(tiny_cohort, tmp_path / "killed", "--resume", "true"),
        cwd=BUNDLE,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    started_at = re.search(rf"resumed from .*checkpoint_epoch=\d+\.pt at epoch (\d+) of {EPOCHS}", log)
    assert started_at and 1 <= int(started_at.group(1)) < EPOCHS, "resumed (a fresh start would give equal weights)"
    last = f"checkpoint_epoch={EPOCHS}.pt"
    assert sorted(p.name for p in models.iterdir()) == [last, "model.pt"], "no partial file left"

    actual = torch.load(models / last, weights_only=True)
    difference = max_weight_difference(uninterrupted_checkpoint, actual)
    assert difference == 0.0, f"max |dW| {difference}"
    assert (
        actual["best_model"] == uninterrupted_checkpoint["best_model"]
    ), "the best-model record of the last validation"


#: the bundle runner (argv[4:]), killed (SIGKILL) by itself at the argv[3]-th time an engine of class argv[1] fires
#: event argv[2] in this process: a kill at a moment chosen to the iteration, whatever the machine's speed
KILLED_AT = """
import os, runpy, signal, sys
from ignite.engine import Engine, Events

engine_class, event, occurrence = sys.argv[1], getattr(Events, sys.argv[2]), int(sys.argv[3])
fired = []
run = Engine.run


def kill_at_occurrence(engine):
    fired.append(engine.state.iteration)
    if len(fired) == occurrence:
        os.kill(os.getpid(), signal.SIGKILL)


def run_with_the_kill(engine, *args, **kwargs):
    if type(engine).__name__ == engine_class and not engine.has_event_handler(kill_at_occurrence, event):
        engine.add_event_handler(event, kill_at_occurrence)
    return run(engine, *args, **kwargs)


Engine.run = run_with_the_kill
sys.argv = ["monai.bundle", *sys.argv[4:]]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
"""


def test_a_training_killed_mid_epoch_again_and_again_resumes_to_the_uninterrupted_runs_weights(
    tiny_cohort, tmp_path, uninterrupted_checkpoint
):
    """Killed in turn (4 iterations an epoch, 3 epochs): after epoch 2's second step (epoch 1's checkpoint saved);
    resumed, during epoch 2's validation (the training of the epoch done, its checkpoint not yet written); resumed,
    as epoch 3's third step starts (its batch drawn, the weights not yet updated). Each resume restarts the epoch of
    the newest checkpoint; the last ends with the uninterrupted run's weights."""
    models = tmp_path / "finetune_segmentation" / "models"
    kills = [("SupervisedTrainer", "ITERATION_COMPLETED", 6), ("SupervisedEvaluator", "ITERATION_COMPLETED", 1),
             ("SupervisedTrainer", "ITERATION_STARTED", 7)]  # fmt: skip
    resumed_at, saved_when_killed = [], []
    for moment, kill in enumerate(kills + [None]):
        command = segmentation_training(tiny_cohort, tmp_path, *(["--resume", "true"] if moment else []))
        if kill is not None:
            command = [sys.executable, "-c", KILLED_AT, *map(str, kill), *command[3:]]
        result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
        log = result.stdout + result.stderr
        assert result.returncode == (0 if kill is None else -signal.SIGKILL), f"{kill}: rc {result.returncode}\n{log}"
        if kill is not None:
            saved_when_killed.append(max(epoch_of(str(path)) for path in models.glob("checkpoint_epoch=*.pt")))
        if moment:
            started = re.search(rf"resumed from .*checkpoint_epoch=\d+\.pt at epoch (\d+) of {EPOCHS}", log)
            resumed_at.append(int(started.group(1)) if started else None)
    assert saved_when_killed == [1, 1, 2], "killed mid-epoch 2, in epoch 2's validation, mid-epoch 3"
    assert resumed_at == saved_when_killed, "each resume starts after the newest checkpoint's epoch"
    last = f"checkpoint_epoch={EPOCHS}.pt"
    assert sorted(p.name for p in models.iterdir()) == [last, "model.pt"], "no partial file left"
    actual = torch.load(models / last, weights_only=True)
    difference = max_weight_difference(uninterrupted_checkpoint, actual)
    assert difference == 0.0, f"max |dW| {difference}"
    assert actual["best_model"] == uninterrupted_checkpoint["best_model"]


def test_resume_from_only_a_truncated_checkpoint_stops_naming_the_file(tiny_cohort, tmp_path):
    models = tmp_path / "finetune_segmentation" / "models"
    models.mkdir(parents=True)
    write_truncated(models / "checkpoint_epoch=2.pt", "truncated")
    result = subprocess.run(
        segmentation_training(tiny_cohort, tmp_path, "--resume", "true"), cwd=BUNDLE, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert f"cannot resume: {models / 'checkpoint_epoch=2.pt'} cannot be read" in result.stdout + result.stderr
    assert "weights_only=False" not in result.stdout + result.stderr
    assert not (models / "checkpoint_epoch=1.pt").exists(), "nothing trained"
