"""Appearance of the synthetic cohort: tissue contrast, coil shading, bSSFP banding, blur, ghosts and Rician noise.

The classic variety is one bSSFP-like contrast per subject; the wide variety draws a contrast family per subject
(bright or dark blood, inverted, low contrast, random per tissue), varies it per plane, and adds smooth bias fields,
in-tissue texture, anisotropic blur, noise over a tenfold range, banding and motion ghosts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from scripts.synthetic_body import Body
from scripts.synthetic_geometry import PlaneWaves, sample_plane_waves, unit
from scripts.synthetic_heart import Heart
from scripts.synthetic_tissues import NUM_TISSUES, Tissue


@dataclass(frozen=True)
class Contrast:
    """Per-subject appearance.

    Attributes:
        intensity: (NUM_TISSUES,) relative bSSFP signal per tissue (blood ~1).
        blur_px: Gaussian point-spread sigma in pixels.
        noise_sigma: Rician noise sigma relative to blood.
        scale: int16 value of unit signal.
        ghost: amplitude of the N/2 phase-encoding ghost (0 = none).
        band_depth: depth of an off-resonance dark band (0 = none).
    """

    intensity: np.ndarray
    blur_px: float
    noise_sigma: float
    scale: float
    ghost: float
    band_depth: float


def sample_contrast(rng: np.random.Generator) -> Contrast:
    """bSSFP-like contrast: bright blood and fat, grey myocardium, dark lungs; artefacts in about a quarter each."""
    blood, myo, fat = rng.uniform(0.85, 1.0), rng.uniform(0.22, 0.34), rng.uniform(0.7, 0.95)
    intensity = np.zeros(NUM_TISSUES, dtype=np.float32)
    intensity[[Tissue.SOFT_TISSUE, Tissue.MUSCLE, Tissue.LUNG, Tissue.LIVER, Tissue.BONE, Tissue.CSF]] = [
        rng.uniform(0.3, 0.45),
        rng.uniform(0.2, 0.3),
        rng.uniform(0.03, 0.1),
        rng.uniform(0.28, 0.42),
        rng.uniform(0.2, 0.35),
        rng.uniform(0.6, 0.9),
    ]
    intensity[[Tissue.FAT, Tissue.EPICARDIAL_FAT]] = fat
    intensity[[Tissue.CARDIAC_WALL, Tissue.LV_MYOCARDIUM, Tissue.PAPILLARY]] = myo
    intensity[[Tissue.LV_BLOOD, Tissue.RV_BLOOD]] = blood * np.array([1.0, rng.uniform(0.93, 1.0)])
    intensity[[Tissue.LA_BLOOD, Tissue.RA_BLOOD, Tissue.VESSEL]] = blood * rng.uniform(0.85, 1.0, size=3)
    return Contrast(
        intensity=intensity,
        blur_px=float(rng.uniform(0.4, 0.8)),
        noise_sigma=float(1.0 / rng.uniform(12, 35)),
        scale=float(rng.uniform(300, 1200)),
        ghost=float(rng.uniform(0.04, 0.12)) if rng.uniform() < 0.25 else 0.0,
        band_depth=float(rng.uniform(0.6, 0.9)) if rng.uniform() < 0.25 else 0.0,
    )


def coil_bias(world: np.ndarray, body: Body, rng: np.random.Generator) -> np.ndarray:
    """Smooth receive-coil sensitivity at world points (N, 3) mm: anterior and posterior coil elements -> (N,)."""
    cx, cy = body.centre_xy
    a, b = body.semi_axes_xy
    centre_z = float(np.median(world[:, 2]))
    bias = np.full(len(world), 0.35, dtype=np.float32)
    for side in (1.0, -1.0):
        for lateral in (-0.35, 0.35):
            element = np.array([cx + lateral * a, cy + side * b, centre_z + rng.uniform(-60, 60)])
            width = rng.uniform(110, 180)
            gain = rng.uniform(0.5, 1.0)
            bias += gain * np.exp(-np.sum((world - element) ** 2, axis=1) / (2 * width**2)).astype(np.float32)
    return bias / np.median(bias)


def off_resonance_band(world: np.ndarray, heart: Heart, depth: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative (N,) factor with a dark curved bSSFP band, where a smooth field map crosses a band frequency.

    The band passes within ~30 mm of the heart, where the susceptibility of the lung-heart interface puts it.
    """
    through = heart.to_world(np.array([0.0, 0.0, -40.0])) + rng.normal(0, 20, 3)
    normal = unit(rng.normal(size=3))
    rel = world - through
    field = rel @ normal + np.sum(rel**2, axis=1) / (2 * rng.uniform(150, 400))
    width = rng.uniform(2.0, 4.0)
    return (1.0 - depth * np.exp(-((field / width) ** 2))).astype(np.float32)


def blur_in_plane(stack: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian point-spread blur over the last two axes of (..., Y, X) with a 3-tap kernel (sigma < 1 px)."""
    side = float(np.exp(-0.5 / sigma**2))
    centre_weight, side_weight = 1.0 / (1.0 + 2.0 * side), side / (1.0 + 2.0 * side)
    for axis in (-2, -1):
        source = stack
        stack = source * np.float32(centre_weight)
        head = [slice(None)] * stack.ndim
        tail = [slice(None)] * stack.ndim
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        stack[tuple(head)] += np.float32(side_weight) * source[tuple(tail)]
        stack[tuple(tail)] += np.float32(side_weight) * source[tuple(head)]
    return stack


class RicianNoise:
    """Complex Gaussian noise of standard deviation ``sigma`` whose magnitude is taken (Rician statistics).

    Drawing ~25 M normals per subject dominated the run time, so every slice reads its real and imaginary parts at
    random offsets of one bank of normals; slices and frames still get independent-looking noise.
    """

    BANK_SIZE = 1 << 21

    def __init__(self, sigma: float, plane_size: int, rng: np.random.Generator) -> None:
        self.bank = rng.standard_normal(self.BANK_SIZE + plane_size, dtype=np.float32) * np.float32(sigma)
        self.rng = rng

    def __call__(self, slices: np.ndarray) -> np.ndarray:
        """Noisy magnitude of (S, Y, X) float32 signal -> (S, Y, X) float32."""
        plane = slices.shape[1] * slices.shape[2]
        flat = slices.reshape(len(slices), plane)
        out = np.empty_like(flat)
        for n, (real_start, imaginary_start) in enumerate(self.rng.integers(0, self.BANK_SIZE, size=(len(flat), 2))):
            real = flat[n] + self.bank[real_start : real_start + plane]
            imaginary = self.bank[imaginary_start : imaginary_start + plane]
            out[n] = real * real + imaginary * imaginary
        return np.sqrt(out, out=out).reshape(slices.shape)


def finish_image(stack: np.ndarray, contrast: Contrast, rng: np.random.Generator) -> np.ndarray:
    """Point-spread blur, optional phase-encoding ghost, Rician noise and int16 scaling.

    Frame by frame, so the temporaries stay in cache instead of page-faulting fresh memory for the whole cine.

    Args:
        stack: (T, S, Y, X) noiseless signal (blood ~1).

    Returns:
        (X, Y, S, T) int16, a Fortran-ordered view (what NIfTI stores, so nibabel writes it without a copy).
    """
    frames, _, ny, nx = stack.shape
    out = np.empty(stack.shape, dtype=np.int16)
    noise = RicianNoise(contrast.noise_sigma, ny * nx, rng)
    for t in range(frames):
        frame = blur_in_plane(stack[t], contrast.blur_px)
        if contrast.ghost:
            # Periodic cardiac motion replicates the image half a field of view along phase encoding (rows).
            frame += np.float32(contrast.ghost) * np.roll(frame, ny // 2, axis=-2)
        magnitude = noise(frame)
        magnitude *= np.float32(contrast.scale)
        magnitude += np.float32(0.5)  # round half up on the cast below (values are non-negative)
        np.minimum(magnitude, np.iinfo(np.int16).max, out=magnitude)
        out[t] = magnitude
    return out.transpose(3, 2, 1, 0)


# ==================================================================================================
# Wide variety: any contrast per tissue, per subject and per plane
# ==================================================================================================
#: Contrast families of the wide variety and their probabilities. Bright blood is bSSFP cine, the spoiled gradient
#: echo has little blood-myocardium contrast; dark blood, inverted, low-contrast and random per-tissue contrasts no
#: cine has, so that a network trained on them has to read shape.
CONTRAST_MODES = {
    "bright_blood": 0.35,
    "gradient_echo": 0.15,
    "dark_blood": 0.15,
    "inverted": 0.1,
    "low_contrast": 0.1,
    "random": 0.15,
}

#: Tissues that share one drawn signal (each then varies by up to 10 % on its own).
TISSUE_GROUPS: dict[str, tuple[Tissue, ...]] = {
    "air": (Tissue.AIR,),
    "blood": (Tissue.LV_BLOOD, Tissue.RV_BLOOD, Tissue.LA_BLOOD, Tissue.RA_BLOOD, Tissue.VESSEL),
    "myocardium": (
        Tissue.LV_MYOCARDIUM,
        Tissue.CARDIAC_WALL,
        Tissue.PAPILLARY,
        Tissue.LV_TRABECULAE,
        Tissue.RV_TRABECULAE,
    ),
    "fat": (Tissue.FAT, Tissue.EPICARDIAL_FAT, Tissue.PERICARDIAL_FAT),
    "marrow": (Tissue.MARROW, Tissue.DISC),
    "soft": (Tissue.SOFT_TISSUE, Tissue.STOMACH_WALL, Tissue.BREAST_GLAND),
    "muscle": (Tissue.MUSCLE,),
    "lung": (Tissue.LUNG,),
    "lung_vessel": (Tissue.LUNG_VESSEL,),
    "organ": (Tissue.LIVER, Tissue.SPLEEN),
    "dark": (Tissue.BONE, Tissue.PERICARDIUM),
    "fluid": (Tissue.CSF, Tissue.GASTRIC_CONTENT),
}

#: Uniform signal range per group and family (bright blood ~1); inverted and low contrast derive from bright blood.
GROUP_SIGNAL: dict[str, dict[str, tuple[float, float]]] = {
    "bright_blood": dict(
        air=(0.0, 0.02),
        blood=(0.8, 1.0),
        myocardium=(0.15, 0.35),
        fat=(0.6, 1.0),
        soft=(0.25, 0.45),
        muscle=(0.15, 0.3),
        lung=(0.02, 0.1),
        lung_vessel=(0.3, 0.7),
        organ=(0.25, 0.45),
        dark=(0.05, 0.25),
        marrow=(0.25, 0.6),
        fluid=(0.5, 0.95),
    ),
    "gradient_echo": dict(
        air=(0.0, 0.02),
        blood=(0.45, 0.75),
        myocardium=(0.25, 0.45),
        fat=(0.7, 1.0),
        soft=(0.3, 0.5),
        muscle=(0.2, 0.35),
        lung=(0.02, 0.1),
        lung_vessel=(0.2, 0.5),
        organ=(0.35, 0.55),
        dark=(0.05, 0.25),
        marrow=(0.3, 0.6),
        fluid=(0.2, 0.45),
    ),
    "dark_blood": dict(
        air=(0.0, 0.02),
        blood=(0.0, 0.1),
        myocardium=(0.3, 0.55),
        fat=(0.7, 1.0),
        soft=(0.35, 0.6),
        muscle=(0.25, 0.45),
        lung=(0.02, 0.1),
        lung_vessel=(0.0, 0.15),
        organ=(0.35, 0.6),
        dark=(0.05, 0.25),
        marrow=(0.3, 0.7),
        fluid=(0.5, 0.95),
    ),
}


@dataclass(frozen=True)
class PlaneLook:
    """Appearance of one plane file in the wide variety.

    Attributes:
        mean: (NUM_TISSUES,) signal per tissue (the brightest tissue ~1).
        texture: (NUM_TISSUES,) signal added per unit of the subject's texture field (in-tissue texture).
        bias: log of a smooth multiplicative field over world mm.
        coil: whether anterior and posterior coil shading multiplies it too.
        band_depths: depth of each off-resonance dark band (empty: none).
        blur_px: Gaussian point-spread sigma along i (columns) and j (rows, the phase-encoding direction).
        noise_sigma: Rician noise sigma relative to a signal of 1.
        scale: int16 value of a signal of 1.
        ghost: amplitude of the motion ghost along j (0 = none).
        ghost_shift_px: displacement of the ghost along j.
    """

    mean: np.ndarray
    texture: np.ndarray
    bias: PlaneWaves
    coil: bool
    band_depths: tuple[float, ...]
    blur_px: tuple[float, float]
    noise_sigma: float
    scale: float
    ghost: float
    ghost_shift_px: int


@dataclass(frozen=True)
class WideAppearance:
    """Appearance of one subject in the wide variety.

    Attributes:
        mode: the contrast family (a key of :data:`CONTRAST_MODES`).
        looks: one :class:`PlaneLook` per plane file, in the order of the planes.
        texture: in-tissue texture field over world mm, |field| <= 1.
        flow_void: depth of the dark flow jets in the blood (0 = none).
    """

    mode: str
    looks: tuple[PlaneLook, ...]
    texture: PlaneWaves
    flow_void: float


def subject_signal(rng: np.random.Generator, mode: str) -> np.ndarray:
    """(NUM_TISSUES,) float32 mean signal per tissue for a contrast family: one draw per tissue group, then each
    tissue within 10 % of its group; inverted is 1 - bright blood (air stays dark), low contrast pulls bright blood
    towards its mean, random draws every tissue on its own."""
    if mode == "random":
        signal = rng.uniform(0.0, 1.0, NUM_TISSUES)
        signal[Tissue.AIR] = rng.uniform(0.0, 0.1)
        return signal.astype(np.float32)
    ranges = GROUP_SIGNAL.get(mode, GROUP_SIGNAL["bright_blood"])
    signal = np.zeros(NUM_TISSUES)
    for group, tissues in TISSUE_GROUPS.items():
        signal[list(tissues)] = rng.uniform(*ranges[group]) * rng.uniform(0.9, 1.1, len(tissues))
    if mode == "inverted":
        signal[1:] = 1.0 - signal[1:]
    elif mode == "low_contrast":
        mean = signal[1:].mean()
        signal[1:] = mean + rng.uniform(0.15, 0.4) * (signal[1:] - mean)
    return np.clip(signal, 0.0, 1.0).astype(np.float32)


def sample_wide_appearance(rng: np.random.Generator, num_planes: int, num_rows: list[int]) -> WideAppearance:
    """Draw the contrast family and per-tissue signal of a subject, then each plane's variation and artefacts.

    Args:
        num_planes: plane files of the subject.
        num_rows: rows (Y, phase-encoding direction) of each plane, for the ghost displacement.
    """
    modes = list(CONTRAST_MODES)
    mode = modes[rng.choice(len(modes), p=list(CONTRAST_MODES.values()))]
    signal = subject_signal(rng, mode)
    texture_amplitude = rng.uniform(0.0, 0.25, NUM_TISSUES).astype(np.float32)
    texture_amplitude[list(TISSUE_GROUPS["blood"])] *= 0.3  # flowing blood is smoother than parenchyma
    looks = []
    for plane in range(num_planes):
        mean = (signal * np.exp(rng.normal(0.0, 0.07, NUM_TISSUES))).astype(np.float32)
        ghost = float(rng.uniform(0.1, 0.6)) if rng.uniform() < 0.5 else 0.0
        looks.append(
            PlaneLook(
                mean=mean,
                texture=mean * texture_amplitude,
                bias=sample_plane_waves(rng, 3, (150.0, 600.0), float(rng.uniform(0.05, 0.5))),
                coil=bool(rng.uniform() < 0.6),
                band_depths=(
                    tuple(map(float, rng.uniform(0.5, 0.95, rng.integers(1, 3)))) if rng.uniform() < 0.4 else ()
                ),
                blur_px=(float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.3, 1.4))),
                noise_sigma=float(np.exp(rng.uniform(np.log(0.012), np.log(0.08)))),
                scale=float(rng.uniform(300, 3000)),
                ghost=ghost,
                ghost_shift_px=int(rng.integers(num_rows[plane] // 6, num_rows[plane] // 2 + 1)),
            )
        )
    flow_void = float(rng.uniform(0.3, 0.9)) if rng.uniform() < 0.5 else 0.0
    texture = sample_plane_waves(rng, 12, (3.0, 20.0), 1.0)
    return WideAppearance(mode, tuple(looks), texture, flow_void)


def plane_gain(world: np.ndarray, look: PlaneLook, body: Body, heart: Heart, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative (N,) float32 gain of one plane at its pixel centres (N, 3) world mm: smooth bias field, coil
    shading and off-resonance bands."""
    gain = np.exp(look.bias(np.ascontiguousarray(world.T)))
    if look.coil:
        gain *= coil_bias(world, body, rng)
    for depth in look.band_depths:
        gain *= off_resonance_band(world, heart, float(depth), rng)
    return gain.astype(np.float32)


def finish_wide_image(stack: np.ndarray, look: PlaneLook, rng: np.random.Generator) -> np.ndarray:
    """Point-spread blur (anisotropic), motion ghost of what moves, Rician noise and int16 scaling.

    Args:
        stack: (T, S, Y, X) float32 noiseless signal.

    Returns:
        (X, Y, S, T) int16, a Fortran-ordered view.
    """
    frames, _, ny, nx = stack.shape
    # scipy's separable filter takes any sigma (the classic 3-tap blur only sigma < 1 px) at the same speed
    blurred = gaussian_filter1d(stack, look.blur_px[0], axis=-1, mode="nearest", truncate=3.0)
    blurred = gaussian_filter1d(blurred, look.blur_px[1], axis=-2, mode="nearest", truncate=3.0)
    still = blurred.mean(axis=0) if look.ghost else None
    out = np.empty(stack.shape, dtype=np.int16)
    noise = RicianNoise(look.noise_sigma, ny * nx, rng)
    for t in range(frames):
        frame = blurred[t]
        if still is not None:
            # what changes over the cycle is inconsistent across k-space lines, so it ghosts along phase encoding
            frame = frame + np.float32(look.ghost) * np.roll(frame - still, look.ghost_shift_px, axis=-2)
            np.maximum(frame, 0.0, out=frame)
        magnitude = noise(frame)
        magnitude *= np.float32(look.scale)
        magnitude += np.float32(0.5)
        np.minimum(magnitude, np.iinfo(np.int16).max, out=magnitude)
        out[t] = magnitude
    return out.transpose(3, 2, 1, 0)
