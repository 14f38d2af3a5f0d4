"""Shape primitives of the synthetic anatomy: rotations, ellipsoids, tubes, smooth random fields and warps (mm)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unit(v: np.ndarray) -> np.ndarray:
    """v / |v|."""
    return v / np.linalg.norm(v)


def rotate_about(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of vector v (3,) about unit ``axis`` (3,) by ``angle`` radians."""
    return v * np.cos(angle) + np.cross(axis, v) * np.sin(angle) + axis * (axis @ v) * (1 - np.cos(angle))


def ellipsoid_level(points: np.ndarray, centre: tuple[float, ...], axes: tuple[float, ...]) -> np.ndarray:
    """Normalised squared radius of an axis-aligned ellipsoid, < 1 inside. points (3, N) mm -> (N,)."""
    level = ((points[0] - centre[0]) / axes[0]) ** 2
    level += ((points[1] - centre[1]) / axes[1]) ** 2
    level += ((points[2] - centre[2]) / axes[2]) ** 2
    return level


def ellipsoid_box(centre: tuple[float, ...], axes: tuple[float, ...], margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounding box (lo (3,), hi (3,)) mm of an ellipsoid grown by ``margin`` mm."""
    c, a = np.asarray(centre), np.asarray(axes) + margin
    return c - a, c + a


def grid_points(lo: np.ndarray, hi: np.ndarray, spacing: float) -> np.ndarray:
    """Cell centres of a regular grid over the box [lo, hi] (mm) -> (3, N) float32."""
    ticks = [np.arange(a + spacing / 2, b, spacing, dtype=np.float32) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*ticks, indexing="ij")).reshape(3, -1)


@dataclass(frozen=True)
class Tube:
    """A vessel: a polyline centreline (K, 3) in world mm with a radius (K,) mm at each vertex."""

    centreline: np.ndarray
    radius: np.ndarray


def tube_mask(points: np.ndarray, tube: Tube) -> np.ndarray:
    """Points (3, N) within the tube's radius of its centreline, radius linear along each segment -> (N,) bool."""
    inside = np.zeros(points.shape[1], dtype=bool)
    for a, b, ra, rb in zip(tube.centreline[:-1], tube.centreline[1:], tube.radius[:-1], tube.radius[1:]):
        # Only points in the segment's bounding box can be inside, and the box test is cheap.
        reach = max(ra, rb)
        near_box = np.ones(points.shape[1], dtype=bool)
        for axis in range(3):
            near_box &= (points[axis] > min(a[axis], b[axis]) - reach) & (points[axis] < max(a[axis], b[axis]) + reach)
        near = np.flatnonzero(near_box)
        seg = b - a
        rel = points[:, near] - a[:, None].astype(np.float32)
        projection = seg[0] * rel[0] + seg[1] * rel[1] + seg[2] * rel[2]
        along = np.clip(projection / float(seg @ seg), 0.0, 1.0)
        dist2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2 - 2 * along * projection + along**2 * float(seg @ seg)
        inside[near[dist2 < (ra + (rb - ra) * along) ** 2]] = True
    return inside


@dataclass(frozen=True)
class PlaneWaves:
    """Smooth random field: a sum of K plane waves ``sum_k a_k cos(w_k . p + phi_k)``, |field| <= sum of a_k.

    Attributes:
        wavevectors: (K, 3) angular wavenumbers (rad/mm).
        phases: (K,) radians.
        amplitudes: (K,) field units.
    """

    wavevectors: np.ndarray
    phases: np.ndarray
    amplitudes: np.ndarray

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Field at points (3, N) mm -> (N,) float32."""
        field = np.zeros(points.shape[1], dtype=np.float32)
        for (wx, wy, wz), phase, amplitude in zip(self.wavevectors, self.phases, self.amplitudes):
            argument = np.float32(wx) * points[0] + np.float32(wy) * points[1]
            argument += np.float32(wz) * points[2] + np.float32(phase)
            field += np.float32(amplitude) * np.cos(argument)
        return field

    @property
    def bound(self) -> float:
        """Largest possible |field|."""
        return float(np.abs(self.amplitudes).sum())


def sample_plane_waves(
    rng: np.random.Generator,
    count: int,
    wavelength_mm: tuple[float, float],
    amplitude: float,
    zero_axis: int | None = None,
) -> PlaneWaves:
    """Random directions and wavelengths; amplitudes split ``amplitude`` at random, so |field| <= ``amplitude``.

    Args:
        count: number of waves K.
        wavelength_mm: uniform range of the wavelengths.
        amplitude: bound of |field|.
        zero_axis: a coordinate the field must not depend on (its wavevector component is zeroed), or None.
    """
    directions = rng.normal(size=(count, 3))
    if zero_axis is not None:
        directions[:, zero_axis] = 0.0
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavenumbers = 2 * np.pi / rng.uniform(*wavelength_mm, size=count)
    weights = rng.dirichlet(np.ones(count))
    return PlaneWaves(directions * wavenumbers[:, None], rng.uniform(0, 2 * np.pi, count), amplitude * weights)


@dataclass(frozen=True)
class ShearWarp:
    """Smooth, invertible, exactly volume-preserving warp: three shears, each along one axis by a field of the others.

    ``x += f(y, z)``, then ``y += g(x, z)``, then ``z += h(x, y)``: each step has a unit-triangular Jacobian
    (determinant 1), so every region keeps its volume and the phenotypes integrated on the unwarped model stay the
    volumes of the warped shapes the images show.
    """

    shears: tuple[PlaneWaves, PlaneWaves, PlaneWaves]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Warped points (3, N) float32 mm -> new (3, N) float32 array."""
        warped = np.array(points, dtype=np.float32)
        for axis, shear in enumerate(self.shears):
            warped[axis] += shear(warped)
        return warped

    @property
    def reach(self) -> np.ndarray:
        """(3,) largest possible displacement of a point along x, y and z (mm): each shear moves along its own axis."""
        return np.array([shear.bound for shear in self.shears])


def sample_shear_warp(rng: np.random.Generator, amplitude_mm: float, wavelength_mm: tuple[float, float]) -> ShearWarp:
    """Three 3-wave shears of at most ``amplitude_mm`` each with wavelengths in ``wavelength_mm``."""
    shears = tuple(sample_plane_waves(rng, 3, wavelength_mm, amplitude_mm, zero_axis=axis) for axis in range(3))
    return ShearWarp(shears)  # type: ignore[arg-type]
