"""Rendering of the synthetic cohort: the tissue at every sample point of every plane and frame, imaged.

Static anatomy is evaluated once per subject; per frame only sample points whose slice profile can touch the heart
are re-evaluated. The label of a pixel is the class of the tissue at its slice centre; its image is the mean signal
over the slice profile (partial volume).
"""

from __future__ import annotations

import numpy as np

from scripts.synthetic_acquisition import PlaneStack
from scripts.synthetic_appearance import (
    Contrast,
    WideAppearance,
    coil_bias,
    finish_image,
    finish_wide_image,
    off_resonance_band,
    plane_gain,
)
from scripts.synthetic_body import Body, body_tissue
from scripts.synthetic_body_detail import BodyDetail, detailed_body_tissue
from scripts.synthetic_heart import Heart, heart_tissue, structure_boxes
from scripts.synthetic_heart_detail import HeartDetail, detailed_heart_tissue, pericardial_sac
from scripts.synthetic_tissues import BLOOD_TISSUES, NUM_TISSUES, TISSUE_TO_CLASS, Tissue

#: Sub-samples across the slice thickness (odd, so the middle one is the slice centre used for labels).
SLICE_PROFILE_SAMPLES = 3


def heart_box(heart: Heart) -> tuple[np.ndarray, np.ndarray]:
    """ED heart-frame box (lo (3,), hi (3,)) mm that holds the heart at every frame, before the systolic descent."""
    boxes = [structure_boxes(f)["heart"] for f in heart.frames]
    lo = np.min([b[0] for b in boxes], axis=0) - [0.0, 0.0, float(heart.descent.max())]
    return lo, np.max([b[1] for b in boxes], axis=0)


def render(
    heart: Heart, body: Body, planes: list[PlaneStack], contrast: Contrast, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Image every plane stack over the cycle.

    Static anatomy is evaluated once; per frame only pixels whose slice profile can touch the heart are re-evaluated.

    Returns:
        Per stack, ``(image int16 (X, Y, S, T), label uint8 (X, Y, S, T))``.
    """
    samples, centre = SLICE_PROFILE_SAMPLES, SLICE_PROFILE_SAMPLES // 2
    frames = len(heart.frames)
    points = [plane.sample_points(samples).reshape(-1, samples, 3) for plane in planes]
    world = np.concatenate(points)  # (pixels, samples, 3)
    static = body_tissue(np.ascontiguousarray(world.reshape(-1, 3).T), body).reshape(world.shape[:2])
    local = heart.to_heart(world).astype(np.float32)

    lo, hi = heart_box(heart)
    region = np.any(np.all((local >= lo - 1.0) & (local <= hi + 1.0), axis=-1), axis=-1)
    region_local, region_static = np.ascontiguousarray(local[region].reshape(-1, 3).T), static[region]

    image = np.repeat(contrast.intensity[static].mean(axis=1)[None], frames, axis=0)  # (T, pixels)
    label = np.repeat(TISSUE_TO_CLASS[static[:, centre]][None], frames, axis=0)
    for t, f in enumerate(heart.frames):
        shifted = region_local.copy()
        shifted[2] += heart.descent[t]
        tissue = heart_tissue(shifted, f).reshape(region_static.shape)
        tissue = np.where(tissue == Tissue.AIR, region_static, tissue)
        image[t, region] = contrast.intensity[tissue].mean(axis=1)
        label[t, region] = TISSUE_TO_CLASS[tissue[:, centre]]

    pixel_centres = world[:, centre]
    gain = coil_bias(pixel_centres, body, rng)
    if contrast.band_depth:
        gain *= off_resonance_band(pixel_centres, heart, contrast.band_depth, rng)
    image *= gain

    out, start = [], 0
    for plane in planes:
        nx, ny, ns = plane.shape
        stop = start + nx * ny * ns
        stack = image[:, start:stop].reshape(frames, ns, ny, nx)
        stack_label = label[:, start:stop].reshape(frames, ns, ny, nx)
        start = stop
        out.append((finish_image(stack, contrast, rng), stack_label.transpose(3, 2, 1, 0)))
    return out


def render_wide(
    heart: Heart,
    body: Body,
    planes: list[PlaneStack],
    anatomy: tuple[HeartDetail, BodyDetail],
    appearance: WideAppearance,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Image every plane stack over the cycle in the wide variety: detailed anatomy, per-plane looks, artefacts.

    As :func:`render`, and: sample points are where each breath-hold put the anatomy; the static anatomy includes the
    pericardial sac; the heart is warped; signal is per plane and tissue plus in-tissue texture; blood jets darken
    with flow.

    Returns:
        Per stack, ``(image int16 (X, Y, S, T), label uint8 (X, Y, S, T))``.
    """
    heart_detail = anatomy[0]
    centre = SLICE_PROFILE_SAMPLES // 2
    frames = len(heart.frames)
    plane_of_pixel, world, static, local = wide_static_anatomy(planes, heart, body, anatomy)
    lo, hi = heart_box(heart)
    reach = heart_detail.reach
    region = np.any(np.all((local >= lo - reach) & (local <= hi + reach), axis=-1), axis=-1)
    warped = heart_detail.warp(np.ascontiguousarray(local[region].reshape(-1, 3).T))
    region_static, region_centres = static[region], np.ascontiguousarray(local[region, centre].T)

    signal = TissueSignal(appearance)
    texture = appearance.texture(np.ascontiguousarray(world[:, centre].T))
    image = np.repeat(signal(static, plane_of_pixel, texture)[None], frames, axis=0)  # (T, pixels)
    label = np.repeat(TISSUE_TO_CLASS[static[:, centre]][None], frames, axis=0)
    region_plane, region_texture = plane_of_pixel[region], texture[region]
    for t, f in enumerate(heart.frames):
        shifted = warped.copy()
        shifted[2] += heart.descent[t]
        tissue = detailed_heart_tissue(shifted, f, heart_detail).reshape(region_static.shape)
        tissue = np.where(tissue == Tissue.AIR, region_static, tissue)
        values = signal(tissue, region_plane, region_texture)
        if appearance.flow_void:
            blood = np.flatnonzero(np.isin(tissue[:, centre], BLOOD_TISSUES))
            values[blood] *= flow_void_factor(region_centres[:, blood], heart, t, appearance.flow_void)
        image[t, region] = values
        label[t, region] = TISSUE_TO_CLASS[tissue[:, centre]]

    out, start = [], 0
    for plane, look in zip(planes, appearance.looks):
        nx, ny, ns = plane.shape
        stop = start + nx * ny * ns
        stack = image[:, start:stop]
        stack *= plane_gain(world[start:stop, centre], look, body, heart, rng)
        stack_label = label[:, start:stop].reshape(frames, ns, ny, nx)
        out.append((finish_wide_image(stack.reshape(frames, ns, ny, nx), look, rng), stack_label.transpose(3, 2, 1, 0)))
        start = stop
    return out


class TissueSignal:
    """Signal of sample points from per-plane, per-tissue tables: the tissue's mean plus the texture field times the
    tissue's texture gain, averaged over the slice profile (partial volume)."""

    def __init__(self, appearance: WideAppearance) -> None:
        self.means = np.stack([look.mean for look in appearance.looks]).ravel()  # (P * NUM_TISSUES,)
        self.textures = np.stack([look.texture for look in appearance.looks]).ravel()

    def __call__(self, tissue: np.ndarray, plane: np.ndarray, field: np.ndarray) -> np.ndarray:
        """(n, samples) tissues of pixels on planes (n,) with texture field values (n,) -> (n,) float32 signal."""
        index = plane[:, None] * NUM_TISSUES + tissue
        return self.means[index].mean(axis=1) + field * self.textures[index].mean(axis=1)


def wide_static_anatomy(
    planes: list[PlaneStack], heart: Heart, body: Body, anatomy: tuple[HeartDetail, BodyDetail]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample points of every plane and what does not beat there: the detailed body and the pericardial sac.

    Returns:
        plane index of each pixel (pixels,); world sample points (pixels, samples, 3) where the anatomy is looked up;
        static tissue (pixels, samples) uint8; the points in the ED heart frame (pixels, samples, 3) float32.
    """
    points = [plane.sample_points(SLICE_PROFILE_SAMPLES).reshape(-1, SLICE_PROFILE_SAMPLES, 3) for plane in planes]
    plane_of_pixel = np.concatenate([np.full(len(p), k) for k, p in enumerate(points)])
    world = np.concatenate(points)
    static = detailed_body_tissue(np.ascontiguousarray(world.reshape(-1, 3).T), body, anatomy[1])
    static = static.reshape(world.shape[:2])
    local = heart.to_heart(world).astype(np.float32)
    add_pericardial_sac(static, local, heart, anatomy[0])
    return plane_of_pixel, world, static, local


#: Static tissues the pericardial sac may replace (not the chest wall, bones, organs or great vessels).
SAC_REPLACES = (Tissue.AIR, Tissue.SOFT_TISSUE, Tissue.FAT, Tissue.LUNG, Tissue.LUNG_VESSEL)


def add_pericardial_sac(static: np.ndarray, local: np.ndarray, heart: Heart, detail: HeartDetail) -> None:
    """Paint the pericardial sac, drawn from the end-diastolic heart, into the static tissue (pixels, samples) in place.

    Args:
        local: (pixels, samples, 3) ED heart-frame coordinates (mm) of the sample points.
    """
    lo, hi = structure_boxes(heart.frames[0])["heart"]
    reach = detail.sac_reach
    near = np.flatnonzero(np.all((local >= lo - reach) & (local <= hi + reach), axis=-1).ravel())
    flat = static.reshape(-1)
    near = near[np.isin(flat[near], SAC_REPLACES)]
    sac = pericardial_sac(detail.warp(np.ascontiguousarray(local.reshape(-1, 3)[near].T)), heart.frames[0], detail)
    inside = sac != Tissue.AIR
    flat[near[inside]] = sac[inside]


def flow_void_factor(points: np.ndarray, heart: Heart, t: int, depth: float) -> np.ndarray:
    """Signal factor (N,) of blood at ED heart-frame points (3, N) at frame t: dark jets where blood flows fast.

    The LV outflow jet runs from the LV through the aortic valve while the ventricle ejects, the mitral inflow jet from
    the LA into the LV while it fills; each is a Gaussian tube about its axis whose strength follows the AV-plane speed.
    """
    descent = heart.descent.astype(np.float64)
    speed = np.roll(descent, -1) - np.roll(descent, 1)  # > 0 while the AV plane descends (ejection)
    scale = max(float(np.abs(speed).max()), 1e-6)
    ejection, filling = max(speed[t], 0.0) / scale, max(-speed[t], 0.0) / scale
    f = heart.frames[t]
    shifted = points.astype(np.float64)
    shifted[2] += descent[t]
    length = f.lv_cut + f.lv_long
    ao = heart.aortic_valve_xy
    la = np.array(f.la_centre[:2])
    jets = (
        (np.array([ao[0], ao[1], -0.35 * length]), np.array([ao[0], ao[1], 35.0]), ejection),
        (np.array([la[0], la[1], 10.0]), np.array([0.2 * la[0], 0.2 * la[1], -0.6 * length]), filling),
    )
    darkening = np.zeros(points.shape[1])
    for start, stop, strength in jets:
        if strength <= 0.05:
            continue
        axis = stop - start
        rel = shifted - start[:, None]
        along = np.clip((axis @ rel) / (axis @ axis), 0.0, 1.0)
        distance2 = np.sum((rel - along * axis[:, None]) ** 2, axis=0)
        darkening += strength * np.exp(-distance2 / (2 * 7.0**2))
    return (1.0 - depth * np.minimum(darkening, 1.0)).astype(np.float32)
