"""Properties that must hold for any input, checked on inputs hypothesis draws: what is measured does not depend on
where a cycle starts, how a stack is stored or where the scanner put the world origin."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from scripts.measures import volume_curves_from_segmentations
from scripts.phases import PHASE_NAMES, cardiac_phases
from scripts.quality_control import quality_control

qc_benchmark = pytest.importorskip("tools.qc_benchmark")


@st.composite
def lv_cycles(draw) -> np.ndarray:
    """(T,) LV volumes (mL) of one cycle: a smooth ejection, E wave and atrial kick of drawn timing and size, plus
    noise, at 20 to 50 frames."""
    num_frames = draw(st.integers(20, 50))
    ejection = draw(st.floats(0.12, 0.25))
    e_wave = draw(st.floats(ejection + 0.2, 0.6))
    a_wave = draw(st.floats(e_wave + 0.2, 0.92))
    a_share = draw(st.floats(0.1, 0.45))
    seed = draw(st.integers(0, 2**16))
    t = (np.arange(num_frames * 20) + 0.5) / (num_frames * 20)
    rate = np.zeros_like(t)
    for centre, width, share in ((ejection, 0.06, -1.0), (e_wave, 0.05, 1 - a_share), (a_wave, 0.03, a_share)):
        for wrap in (-1, 0, 1):
            rate += share * np.exp(-0.5 * ((t - centre - wrap) / width) ** 2)
    volume = np.cumsum(rate)[::20]
    volume = 50 + 70 * (volume - volume.min()) / np.ptp(volume)
    return volume + np.random.default_rng(seed).normal(0, 0.5, num_frames)


@settings(max_examples=40, deadline=None)
@given(lv_cycles(), st.integers(0, 49))
def test_phases_follow_the_cycle_wherever_the_acquisition_starts(volume, shift):
    num_frames = len(volume)
    shift %= num_frames
    phases, rolled = cardiac_phases(volume), cardiac_phases(np.roll(volume, shift))
    assert all(phases[name] is not None for name in PHASE_NAMES)
    assert {name: (phases[name] + shift) % num_frames for name in PHASE_NAMES} == rolled


@st.composite
def stored_stacks(draw) -> tuple[np.ndarray, np.ndarray]:
    """An SA label stack (X, Y, S, T) and an affine of drawn pixel size, slice spacing, orientation and origin."""
    shape = (draw(st.integers(8, 20)), draw(st.integers(8, 20)), draw(st.integers(2, 6)), draw(st.integers(1, 4)))
    labels = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 6, shape).astype(np.uint8)
    pixel_mm, slice_mm = draw(st.floats(0.8, 2.5)), draw(st.floats(4.0, 12.0))
    rotation = Rotation.random(random_state=draw(st.integers(0, 2**16))).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([pixel_mm, pixel_mm, slice_mm])
    affine[:3, 3] = draw(st.lists(st.floats(-300, 300), min_size=3, max_size=3))
    return labels, affine


@settings(max_examples=30, deadline=None)
@given(stored_stacks(), st.sampled_from([0, 1]))
def test_sa_volumes_do_not_depend_on_how_the_stack_is_stored(stack, flipped_axis):
    """The voxel count times the voxel volume, whatever the orientation, and the same for the stack stored with an
    in-plane axis reversed (its affine changed to match)."""
    labels, affine = stack
    volumes = volume_curves_from_segmentations({"sa": (labels, affine)})
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    np.testing.assert_allclose(volumes["LVBP"], (labels == 1).sum(axis=(0, 1, 2)) * voxel_ml, rtol=1e-9)
    flip = np.eye(4)
    flip[flipped_axis, flipped_axis] = -1
    flip[flipped_axis, 3] = labels.shape[flipped_axis] - 1
    stored = (np.flip(labels, axis=flipped_axis), affine @ flip)
    for name, curve in volume_curves_from_segmentations({"sa": stored}).items():
        if curve is not None:
            np.testing.assert_allclose(curve, volumes[name], rtol=1e-9)


@pytest.fixture(scope="module")
def shifted_subject(tiny_cohort) -> dict:
    """A tiny subject's ground-truth planes with its 2-chamber view moved 10 mm (so that it has flags)."""
    planes = qc_benchmark.read_segmentations(sorted(tiny_cohort.glob("subject_*"))[0])
    labels, affine = planes["la_2ch"]
    moved = affine.copy()
    moved[:3, 3] += 10.0 * affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    return {**planes, "la_2ch": (labels, moved)}


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**16), st.lists(st.floats(-500, 500), min_size=3, max_size=3))
def test_quality_control_does_not_depend_on_the_world_frame(shifted_subject, rotation_seed, translation_mm):
    """The same planes moved together by any rigid transform (another scanner's world frame) get the same flags."""
    rigid = np.eye(4)
    rigid[:3, :3] = Rotation.random(random_state=rotation_seed).as_matrix()
    rigid[:3, 3] = translation_mm
    expected = {(f["view"], f["check"]) for f in quality_control(shifted_subject)}
    assert ("la_2ch", "sa_la_agreement") in expected
    moved = {stem: (labels, rigid @ affine) for stem, (labels, affine) in shifted_subject.items()}
    assert {(f["view"], f["check"]) for f in quality_control(moved)} == expected
