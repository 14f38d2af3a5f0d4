"""Training losses: segmentation with partial labels, and phenotype regression on normalised targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scripts.labels import UNLABELLED


def partial_label_log_probs(logits: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
    """Log-probabilities where classes that a subject does not annotate are merged into background.

    A subject annotated only for LV (e.g. Sunnybrook) calls its RV "background"; summing the probabilities of
    the unannotated classes into background (marginal likelihood) stops that from teaching the network that the
    RV is background.

    Args:
        logits: (B, C, ...) raw scores.
        class_mask: (B, C) bool, True for annotated classes (background always counts as annotated).

    Returns:
        (B, C, ...) log-probabilities; unannotated channels are -inf-like and background holds their mass.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)
    annotated = class_mask.clone().bool()
    annotated[:, 0] = True
    if bool(annotated.all()):
        return log_probs
    view = (annotated.shape[0], annotated.shape[1]) + (1,) * (logits.ndim - 2)
    masked = log_probs.masked_fill(~annotated.view(view), float("-inf"))
    unannotated_mass = log_probs.masked_fill(annotated.view(view), float("-inf")).logsumexp(dim=1)
    background = torch.logaddexp(log_probs[:, 0], unannotated_mass)
    return torch.cat([background.unsqueeze(1), masked[:, 1:]], dim=1).clamp_min(-1e4)


def soft_dice_loss(
    log_probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, class_mask: torch.Tensor
) -> torch.Tensor:
    """1 - soft Dice per (subject, plane, class) over the plane's frames, averaged over the pairs whose labels show
    an annotated foreground class (false positives elsewhere are the cross-entropy's).

    Computed without a one-hot tensor: the overlap is the probability of the true class, summed per bin with
    ``scatter_add`` (full-size one-hot tensors cost more than the network's head).

    Args:
        log_probs: (B, C, P, T, H, W) from :func:`partial_label_log_probs`.
        target: (B, P, T, H, W) long class indices (any value where not ``valid``).
        valid: (B, P, T, H, W) bool, annotated voxels.
        class_mask: (B, C) bool, classes annotated per subject.
    """
    batch, num_classes, num_planes = log_probs.shape[:3]
    device = log_probs.device
    probs = log_probs.exp()
    safe_target = target.masked_fill(~valid, 0)
    true_class_prob = probs.gather(1, safe_target.unsqueeze(1)).squeeze(1) * valid
    plane_index = torch.arange(batch * num_planes, device=device).view(batch, num_planes, 1, 1, 1)
    bins = (plane_index * num_classes + safe_target).flatten()
    num_bins = batch * num_planes * num_classes
    intersection = torch.zeros(num_bins, device=device).scatter_add(0, bins, true_class_prob.flatten())
    label_volume = torch.zeros(num_bins, device=device).scatter_add(0, bins, valid.flatten().float())
    intersection = intersection.view(batch, num_planes, num_classes)
    label_volume = label_volume.view(batch, num_planes, num_classes)
    # (B, C, P, T, H, W) -> (B, P, C)
    predicted_volume = (probs * valid.unsqueeze(1)).flatten(3).sum(-1).transpose(1, 2)
    dice = (2 * intersection + 1.0) / (predicted_volume + label_volume + 1.0)
    shown = (label_volume > 0) & class_mask.bool()[:, None, :]
    shown[..., 0] = False
    return (1 - dice)[shown].mean() if bool(shown.any()) else dice.sum() * 0.0


def excluded_class_loss(log_probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean -log P(none of the classes drawn in its plane-frame) over the unlabelled voxels of plane-frames that
    show a foreground class.

    A reader who draws a structure in a plane at a frame draws all of it there: the rest of that plane-frame, even
    where left unlabelled, is not that structure. Sunnybrook's end-systole has the endocardium alone, so the band
    around it is unlabelled; without this term nothing stops the LV blood pool from spreading into it, and a network
    fine-tuned on such studies paints as large an LV at end-systole as at end-diastole.

    Args:
        log_probs: (B, C, P, T, H, W) from :func:`partial_label_log_probs`.
        target: (B, P, T, H, W) long class indices.
        valid: (B, P, T, H, W) bool, annotated voxels.
    """
    num_classes = log_probs.shape[1]
    drawn = torch.stack(
        [torch.zeros_like(valid[..., 0, 0])]
        + [((target == c) & valid).flatten(-2).any(-1) for c in range(1, num_classes)],
        dim=1,
    )  # (B, C, P, T)
    unlabelled = ~valid & drawn.any(1)[..., None, None]
    if not bool(unlabelled.any()):
        return log_probs.sum() * 0.0
    allowed = log_probs.masked_fill(drawn[..., None, None], float("-inf")).logsumexp(dim=1)
    return -allowed[unlabelled].clamp_min(-1e4).mean()


def segmentation_loss(
    logits: torch.Tensor,
    label: torch.Tensor,
    class_mask: torch.Tensor,
    dice_weight: float = 1.0,
    exclusion_weight: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy + soft Dice over annotated voxels and classes (a plane or class without labels adds no loss),
    + :func:`excluded_class_loss` on the unlabelled voxels of partly labelled plane-frames.

    The Dice term is taken per subject, plane and class (over the plane's frames) and averaged over the pairs whose
    labels show the class: a structure that is small in one view (the RA in 4ch, the RV in 2ch) then weighs as much
    as the same structure in a view where it is large, instead of vanishing in a whole-subject overlap.

    Args:
        logits: (B, C, P, T, H, W).
        label: (B, 1, P, T, H, W) uint8, :data:`UNLABELLED` where not annotated (incl. missing planes).
        class_mask: (B, C) bool, classes annotated per subject.
        dice_weight: weight of the soft Dice term.
        exclusion_weight: weight of the excluded-class term (0: unlabelled voxels add no loss).
    """
    target = label[:, 0].long()
    valid = target != UNLABELLED
    if not bool(valid.any()):
        return logits.sum() * 0.0
    log_probs = partial_label_log_probs(logits, class_mask)
    loss = F.nll_loss(log_probs, target, ignore_index=UNLABELLED)
    if dice_weight:
        loss = loss + dice_weight * soft_dice_loss(log_probs, target, valid, class_mask)
    if exclusion_weight:
        loss = loss + exclusion_weight * excluded_class_loss(log_probs, target, valid)
    return loss


def phenotype_loss(predicted_normalised: torch.Tensor, phenotypes: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    """Mean squared error on normalised targets, ignoring unknown (NaN) phenotypes.

    Args:
        predicted_normalised: (B, K) head output in normalised units.
        phenotypes: (B, K) targets in physical units, NaN where unknown.
        head: the phenotype head, holding ``target_mean`` and ``target_std`` buffers (K,).
    """
    target = (phenotypes.float() - head.target_mean) / head.target_std
    known = torch.isfinite(target)
    if not bool(known.any()):
        return predicted_normalised.sum() * 0.0
    return F.mse_loss(predicted_normalised.float()[known], target[known])
