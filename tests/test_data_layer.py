"""Data layer: subject folders -> canonical sample -> back to the planes, on an analytic phantom.

The phantom is a beating ellipsoidal LV (blood pool 1, myocardium 2) in a dark body, with its long axis pointing
left/anterior/inferior like a real heart, sliced by an SA stack (slice index 0 at the APEX, so base-to-apex
ordering cannot come from the index order) and three long-axis planes through its long axis. No segmentation is
used anywhere to find the heart.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.canonical import LoadCineSubjectd, RandSAStackd, plan_sa_passes
from scripts.canonical_nifti import read_canonical_geometry, read_canonical_nifti, write_canonical_nifti
from scripts.frames import cyclic_linear_frames, nearest_cyclic_frames, resample_time
from scripts.geometry import BASE_DIRECTION_RAS
from scripts.labels import LA_PLANES, PHENOTYPE_NAMES, UNLABELLED
from scripts.sample_geometry import parse_geometry, sa_plane_indices, sa_slices
from scripts.subject import MIN_CINE_FRAMES, SubjectError, discover_subjects, load_datalist, load_subject
from scripts.writeback import canonical_positions, canonical_to_planes, probabilities_to_plane_labels

LV_CENTRE_MM = np.array([12.0, -20.0, 30.0])
LONG_AXIS = np.array([-0.55, 0.5, -0.67]) / np.linalg.norm([-0.55, 0.5, -0.67])  # base -> apex
PIXEL_MM = 2.0
FOV_PIXELS = 72
SA_SLICE_MM = 8.0
NUM_SA_SOURCE_SLICES = 9
SMALL_GRID = dict(num_sa_slices=6, num_frames=20, crop_size=48, spacing_mm=2.0)


def _perpendicular_axes(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first = np.cross(axis, [0.0, 0.0, 1.0])
    first /= np.linalg.norm(first)
    return first, np.cross(axis, first)


def phantom(world: np.ndarray, phase: float) -> tuple[np.ndarray, np.ndarray]:
    """Intensity and label at world points (..., 3) at cardiac phase 0..1 (0 = end-diastole)."""
    offset = world - LV_CENTRE_MM
    along = offset @ LONG_AXIS
    radial = np.linalg.norm(offset - along[..., None] * LONG_AXIS, axis=-1)
    cavity_radius = 20.0 * (1.0 - 0.3 * np.sin(np.pi * phase) ** 2)
    cavity = (along / 32.0) ** 2 + (radial / cavity_radius) ** 2 < 1
    wall = (along / 40.0) ** 2 + (radial / (cavity_radius + 8.0)) ** 2 < 1
    body = np.sum(((world - LV_CENTRE_MM - [20.0, 0.0, 0.0]) / [150.0, 110.0, 160.0]) ** 2, axis=-1) < 1
    intensity = np.where(cavity, 900.0, np.where(wall, 300.0, np.where(body, 200.0, 0.0)))
    label = np.where(cavity, 1, np.where(wall, 2, 0)).astype(np.uint8)
    return intensity.astype(np.float32), label


def _render(affine: np.ndarray, shape: tuple[int, int, int], frames: int) -> tuple[np.ndarray, np.ndarray]:
    voxels = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    world = voxels @ affine[:3, :3].T + affine[:3, 3]
    rendered = [phantom(world, t / frames) for t in range(frames)]
    return np.stack([r[0] for r in rendered], axis=-1), np.stack([r[1] for r in rendered], axis=-1)


def sa_affine(num_slices: int = NUM_SA_SOURCE_SLICES) -> np.ndarray:
    """SA stack along the long axis, slice 0 at the apex end, FOV centre 15/-10 mm off the LV centre."""
    u, v = _perpendicular_axes(LONG_AXIS)
    half = (num_slices - 1) / 2 * SA_SLICE_MM
    centre = (FOV_PIXELS - 1) / 2 * PIXEL_MM
    affine = np.eye(4)
    affine[:3, :3] = np.stack([u * PIXEL_MM, v * PIXEL_MM, -LONG_AXIS * SA_SLICE_MM], axis=1)
    affine[:3, 3] = LV_CENTRE_MM + half * LONG_AXIS + (15.0 - centre) * u + (-10.0 - centre) * v
    return affine


def la_affine(angle_deg: float) -> np.ndarray:
    """Long-axis plane containing the LV long axis, rotated by ``angle_deg`` about it; FOV centre off the LV."""
    e1, e2 = _perpendicular_axes(LONG_AXIS)
    normal = np.cos(np.radians(angle_deg)) * e1 + np.sin(np.radians(angle_deg)) * e2
    across = np.cross(normal, LONG_AXIS)
    centre = (FOV_PIXELS - 1) / 2 * PIXEL_MM
    affine = np.eye(4)
    affine[:3, :3] = np.stack([LONG_AXIS * PIXEL_MM, across * PIXEL_MM, normal * 6.0], axis=1)
    affine[:3, 3] = LV_CENTRE_MM + (10.0 - centre) * LONG_AXIS + (-8.0 - centre) * across
    return affine


def make_subject(
    folder: Path,
    frames: int = 20,
    planes: tuple[str, ...] = ("sa",) + LA_PLANES,
    num_sa_slices: int = NUM_SA_SOURCE_SLICES,
    labels: bool = True,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem in planes:
        if stem == "sa":
            affine, shape = sa_affine(num_sa_slices), (FOV_PIXELS, FOV_PIXELS, num_sa_slices)
        else:
            affine, shape = la_affine(60.0 * LA_PLANES.index(stem)), (FOV_PIXELS, FOV_PIXELS, 1)
        image, label = _render(affine, shape, frames)
        nib.save(nib.Nifti1Image(image, affine), str(folder / f"{stem}.nii.gz"))
        if labels:
            nib.save(nib.Nifti1Image(label, affine), str(folder / f"seg_{stem}.nii.gz"))
    return folder


@pytest.fixture(scope="module")
def subject_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_subject(tmp_path_factory.mktemp("data") / "phantom01")


def _transform(**overrides) -> LoadCineSubjectd:
    return LoadCineSubjectd(keys="subject", **{**SMALL_GRID, **overrides})


def _item(folder: Path) -> dict:
    return {"subject": str(folder), "id": folder.name}


def test_sample_contract_and_centre_from_la_planes(subject_dir: Path) -> None:
    sample = _transform()(_item(subject_dir))
    assert sample["image"].shape == (1, 9, 20, 48, 48) and sample["image"].dtype == torch.float32
    assert sample["label"].shape == (1, 9, 20, 48, 48) and sample["label"].dtype == torch.uint8
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["plane_mask"].tolist() == [True] * 9
    assert sample["class_mask"].tolist() == [True, True, True, False, False, False]
    assert sample["phenotypes"].shape == (len(PHENOTYPE_NAMES),) and torch.isnan(sample["phenotypes"]).all()
    assert sample["problems"] == "" and sample["id"] == "phantom01"
    geometry = parse_geometry(sample["geometry"])
    assert geometry["centre_method"] == "la_intersection"
    assert np.linalg.norm(np.array(geometry["centre_mm"]) - LV_CENTRE_MM) < 3.0
    # the LV blood pool sits at the crop centre in every plane (SA mid slices and LA views)
    for plane in [2, 3, 6, 7, 8]:
        centre_labels = sample["label"][0, plane, 0, 22:26, 22:26]
        assert (centre_labels == 1).all(), plane


def test_centre_sa_only_falls_back_to_image_centre(tmp_path: Path, caplog) -> None:
    folder = make_subject(tmp_path / "sa_only", planes=("sa",), labels=False)
    with caplog.at_level(logging.WARNING, logger="scripts.heart_centre"):
        sample = _transform()(_item(folder))
        # the files read once and built again, shifted, as inference's passes do: the centre is found once (one
        # warning), and the shifted pass starts from it
        files = _transform().read_files(_item(folder))
        unshifted = _transform()(_item(folder), files)
        shifted = _transform(centre_shift_px=(1.0, 0.0))(_item(folder), files)
    fallbacks = [r.getMessage() for r in caplog.records if "heart centre by image_centre" in r.getMessage()]
    assert len(fallbacks) == 2 and all("sa_only" in message for message in fallbacks)
    np.testing.assert_allclose(parse_geometry(unshifted["geometry"])["centre_mm"], files.centre[0])
    moved = np.linalg.norm(np.subtract(parse_geometry(shifted["geometry"])["centre_mm"], files.centre[0]))
    assert moved == pytest.approx(SMALL_GRID["spacing_mm"])
    geometry = parse_geometry(sample["geometry"])
    assert geometry["centre_method"] == "image_centre"
    source = geometry["sources"]["sa"]
    size_x, size_y, num_slices, _ = source["shape"]
    middle = np.array([(size_x - 1) / 2, (size_y - 1) / 2, (num_slices - 1) / 2, 1.0])
    assert np.linalg.norm(np.array(geometry["centre_mm"]) - (np.array(source["affine"]) @ middle)[:3]) < 1e-6
    assert sample["plane_mask"].tolist() == [True] * 6 + [False] * 3
    assert (sample["image"][0, 6:] == 0).all() and (sample["label"] == UNLABELLED).all()
    assert not sample["class_mask"].any()


@pytest.mark.parametrize("frames", [25, 30, 50])
def test_any_frame_count_resampled(tmp_path: Path, frames: int) -> None:
    folder = make_subject(tmp_path / f"t{frames}", frames=frames, planes=("sa", "la_4ch"))
    sample = _transform(num_frames=50)(_item(folder))
    assert sample["image"].shape[2] == 50 and sample["label"].shape[2] == 50
    if frames == 25:  # frame 0 stays frame 0 and every acquired frame lands on an even canonical frame
        acquired = _transform(num_frames=25)(_item(folder))
        assert torch.equal(sample["image"][:, :, ::2], acquired["image"])
        assert torch.equal(sample["label"][:, :, ::2], acquired["label"])
    # the blood pool shrinks to end-systole mid-cycle and recovers (cyclic)
    blood = (sample["label"][0, 2] == 1).sum(dim=(1, 2)).float()
    assert blood[25] < 0.75 * blood[0] and blood[49] > 0.9 * blood[0]


def test_cyclic_frame_maps_keep_frame_zero_and_wrap() -> None:
    """Frame k of T lies at k / T of the cycle: the nearest of 4 frames to each of 8 rounds half up and wraps past the
    last frame to frame 0 (so does frame 49 of 50 from 20: 19.6); linear resampling blends the two frames around,
    the last with frame 0."""
    assert nearest_cyclic_frames(4, 8).tolist() == [0, 1, 1, 2, 2, 3, 3, 0]
    assert nearest_cyclic_frames(20, 50)[[0, 5, 49]].tolist() == [0, 2, 0]
    before, after, weight = cyclic_linear_frames(4, 8)
    assert before.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and after.tolist() == [1, 1, 2, 2, 3, 3, 0, 0]
    assert weight.dtype == np.float32 and weight.tolist() == [0.0, 0.5] * 4
    curve = np.arange(4.0)[:, None]
    assert resample_time(curve, 8)[:, 0].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 1.5]
    assert resample_time(curve, 8, nearest=True)[:, 0].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 0.0]
    assert resample_time(curve, 4) is curve


def test_different_frame_counts_between_planes_kept(tmp_path: Path) -> None:
    folder = make_subject(tmp_path / "mixed", frames=30, planes=("sa",))
    make_subject(folder, frames=20, planes=LA_PLANES)
    subject = load_subject(folder)
    assert set(subject.planes) == {"sa", *LA_PLANES} and subject.notes and not subject.problems
    assert _transform()(_item(folder))["plane_mask"].all()


def test_missing_planes_and_short_stack(tmp_path: Path) -> None:
    folder = make_subject(tmp_path / "short", planes=("sa", "la_2ch", "la_4ch"), num_sa_slices=4)
    sample = _transform()(_item(folder))
    # 4 slices over 6 canonical SA planes: spread at positions 0, 2, 3, 5; la_3ch missing
    assert sample["plane_mask"].tolist() == [True, False, True, True, False, True, True, False, True]
    for plane in np.flatnonzero(~sample["plane_mask"].numpy()):
        assert (sample["image"][0, plane] == 0).all() and (sample["label"][0, plane] == UNLABELLED).all()
    assert "SA stack has 4 slices" in sample["problems"]


def test_sa_slices_ordered_base_to_apex(subject_dir: Path) -> None:
    geometry = parse_geometry(_transform()(_item(subject_dir))["geometry"])
    sa_records = [p for p in geometry["planes"] if p["source"] == "sa"]
    heights = [np.array(p["centre_mm"]) @ BASE_DIRECTION_RAS for p in sa_records]
    assert np.all(np.diff(heights) < 0)
    # slice index 0 is at the apex: the base-most chosen slice is the last source slice; evenly spread, no repeats
    assert [p["slice"] for p in sa_records] == [8, 6, 5, 3, 2, 0]
    passes = plan_sa_passes(geometry)
    assert sorted(z for group in passes for z in group) == list(range(NUM_SA_SOURCE_SLICES))
    override = _transform(sa_slice_indices=passes[1])(_item(subject_dir))
    chosen = sa_slices(override["geometry"])
    assert chosen == passes[1] and override["plane_mask"][:6].sum() == len(passes[1])


def test_training_loader_also_trains_on_the_slices_the_canonical_stack_skips(subject_dir: Path) -> None:
    canonical = _transform()(_item(subject_dir))
    never = RandSAStackd(keys="subject", prob=0.0, **SMALL_GRID)
    assert sa_slices(never(_item(subject_dir))["geometry"]) == sa_slices(canonical["geometry"])
    always = RandSAStackd(keys="subject", prob=1.0, **SMALL_GRID)
    always.set_random_state(0)
    passes = plan_sa_passes(canonical["geometry"], sa_slices(canonical["geometry"]))
    seen = {tuple(sa_slices(always(_item(subject_dir))["geometry"])) for _ in range(6)}
    # the stacks of inference's extra passes, and together with the canonical one every slice of the stack
    assert seen <= {tuple(p) for p in passes} and set(sa_slices(canonical["geometry"])).union(*seen) == set(
        range(NUM_SA_SOURCE_SLICES)
    )
    with pytest.raises(ValueError, match="chooses the SA slices itself"):
        RandSAStackd(keys="subject", sa_slice_indices=[0, 1], **SMALL_GRID)


def test_canonical_label_round_trip_identity(subject_dir: Path, tmp_path: Path) -> None:
    """canonical label -> planes -> canonical is the identity on covered pixels (same spacing as the source)."""
    sample = _transform()(_item(subject_dir))
    planes = canonical_to_planes(sample["label"][0], sample["geometry"])
    copy = tmp_path / "copy"
    copy.mkdir()
    for stem, (label, affine) in planes.items():
        (copy / f"{stem}.nii.gz").symlink_to(subject_dir / f"{stem}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), str(copy / f"seg_{stem}.nii.gz"))
    again = _transform()(_item(copy))
    covered = sample["label"] != UNLABELLED
    assert float((again["label"][covered] == sample["label"][covered]).float().mean()) > 0.99


def test_source_label_forward_and_back_dice(subject_dir: Path) -> None:
    """A source label (2 mm) mapped to a coarser canonical grid (2.5 mm) and back still matches the original blob."""
    sample = _transform(crop_size=64, spacing_mm=2.5)(_item(subject_dir))
    planes = canonical_to_planes(sample["label"][0], sample["geometry"])
    geometry = parse_geometry(sample["geometry"])
    for stem, (label, affine) in planes.items():
        original = np.asanyarray(nib.load(str(subject_dir / f"seg_{stem}.nii.gz")).dataobj)
        assert label.shape == original.shape and np.allclose(affine, geometry["sources"][stem]["affine"])
        covered = sorted({p["slice"] for p in geometry["planes"] if p["source"] == stem})
        uncovered = sorted(set(range(original.shape[2])) - set(covered))
        assert (label[:, :, uncovered] == UNLABELLED).all()
        mine, truth = label[:, :, covered] == 1, original[:, :, covered] == 1
        if truth.sum() > 50:
            dice = 2 * (mine & truth).sum() / (mine.sum() + truth.sum())
            assert 0.95 < dice < 1.0, (stem, dice)  # < 1: the coarser grid really loses detail
    probabilities = canonical_to_planes(
        np.stack([sample["label"][0] == c for c in range(3)]).astype(np.float32), sample["geometry"], 0, np.nan
    )
    assert probabilities["la_2ch"][0].shape == (3, FOV_PIXELS, FOV_PIXELS, 1, 20)


def _interpolated_everywhere(plane: torch.Tensor, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Reference: every class of ``plane`` (C, T, H, W) interpolated by grid_sample (bilinear, border) at canonical
    positions ``i``, ``j`` (X, Y) -> (X, Y, T, C)."""
    num_channels, num_frames, height, width = plane.shape
    grid = np.stack([(2 * j + 1) / width - 1, (2 * i + 1) / height - 1], axis=-1).astype(np.float32)
    sampled = torch.nn.functional.grid_sample(
        plane.reshape(1, num_channels * num_frames, height, width),
        torch.from_numpy(grid)[None],
        padding_mode="border",
        align_corners=False,
    )
    return sampled.reshape(num_channels, num_frames, *i.shape).permute(2, 3, 1, 0).numpy()


def _most_probable_there(labels: np.ndarray, everywhere: np.ndarray) -> np.ndarray:
    """Where ``labels`` (X, Y, T) name a class of largest interpolated probability in ``everywhere`` (X, Y, T, C);
    ties may go either way and sums in another order round differently by ~1e-6."""
    chosen = np.take_along_axis(everywhere, labels[..., None].astype(np.int64), axis=-1)[..., 0]
    return chosen >= everywhere.max(-1) - 1e-5


def test_probabilities_written_back_recover_boundaries_between_canonical_pixels(subject_dir: Path) -> None:
    """Class probabilities of a coarser canonical grid (2.5 mm; each pixel's share of every class, as a perfect model
    would give them) written back onto the 2 mm source files bilinearly beat the nearest-neighbour labels, most of
    all for the thin myocardium; the file's shape and its uncovered SA slices are as canonical_to_planes gives."""
    sample = _transform(crop_size=64, spacing_mm=2.5)(_item(subject_dir))
    geometry = parse_geometry(sample["geometry"])
    num_planes, num_frames, crop = sample["label"].shape[1:4]
    steps = (np.arange(3) - 1) / 3  # 3 x 3 points inside each canonical pixel
    offsets = (np.arange(crop)[:, None] - (crop - 1) / 2 + steps[None, :]).reshape(-1) * geometry["spacing_mm"]
    shares = np.zeros((3, num_planes, num_frames, crop * 3, crop * 3), dtype=np.float32)
    for k, record in enumerate(geometry["planes"]):
        u, v = np.array(record["u"]), np.array(record["v"])
        world = np.array(record["centre_mm"]) + offsets[:, None, None] * u + offsets[None, :, None] * v
        for t in range(num_frames):
            label = phantom(world, t / num_frames)[1]
            shares[:, k, t] = np.stack([label == c for c in range(3)])
    probabilities = torch.from_numpy(shares.reshape(3, num_planes, num_frames, crop, 3, crop, 3).mean((4, 6)))

    soft = probabilities_to_plane_labels([(probabilities, sample["geometry"])])
    nearest = canonical_to_planes(probabilities.argmax(0).to(torch.uint8), sample["geometry"])
    # the shortcut (interpolate only between pixels of different classes) gives what interpolating everything gives
    for k, record in enumerate(geometry["planes"]):
        size_x, size_y, _, _ = geometry["sources"][record["source"]]["shape"]
        affine = np.array(geometry["sources"][record["source"]]["affine"])
        i, j = canonical_positions(record, affine, size_x, size_y, crop, geometry["spacing_mm"])
        inside = (np.rint(i) >= 0) & (np.rint(i) < crop) & (np.rint(j) >= 0) & (np.rint(j) < crop)
        written = soft[record["source"]][0][:, :, record["slice"]]
        assert (written[~inside] == 0).all()
        assert _most_probable_there(written, _interpolated_everywhere(probabilities[:, k], i, j))[inside].all()
    assert soft.keys() == nearest.keys() and soft["sa"][0].dtype == np.uint8
    truth = {stem: plane.label for stem, plane in load_subject(subject_dir).planes.items()}
    dice = {}
    for name, written in (("soft", soft), ("nearest", nearest)):
        for stem, (label, affine) in written.items():
            assert label.shape == nearest[stem][0].shape and np.array_equal(affine, nearest[stem][1])
            assert np.array_equal(label == UNLABELLED, nearest[stem][0] == UNLABELLED)
        covered = [(label != UNLABELLED, stem) for stem, (label, _) in written.items()]
        for c in (1, 2):
            mine = np.concatenate([(written[stem][0] == c)[mask] for mask, stem in covered])
            true = np.concatenate([(truth[stem] == c)[mask] for mask, stem in covered])
            dice[name, c] = 2 * (mine & true).sum() / (mine.sum() + true.sum())
    assert dice["soft", 1] > dice["nearest", 1] and dice["soft", 2] > dice["nearest", 2] + 0.01, dice


@pytest.mark.parametrize("num_cuts", [1, 3])
@pytest.mark.parametrize("dense_fraction", [0.0, 1.0])
def test_bilinear_labels_both_ways_give_the_most_probable_class(monkeypatch, dense_fraction: float, num_cuts: int):
    """Interpolating every class everywhere (one grid_sample per cut) and only between pixels of different classes
    give the most probable class of the mean bilinear interpolation of all cuts through the slice (test-time shifts:
    each cut its own probabilities and positions), inside the grid and beyond its edge (border values)."""
    import scripts.writeback as writeback

    monkeypatch.setattr(writeback, "DENSE_BLEND_FRACTION", dense_fraction)
    generator = torch.Generator().manual_seed(0)
    cuts = []
    for _ in range(num_cuts):
        plane = torch.softmax(3 * torch.randn(6, 4, 16, 16, generator=generator), dim=0)  # (C, T, H, W), mixed classes
        i, j = (torch.rand(2, 20, 30, generator=generator).numpy() * 21 - 3).astype(np.float64)  # beyond both edges
        cuts.append((plane, i, j))
    labels = writeback._bilinear_labels(cuts)
    assert labels.shape == (20, 30, 4) and labels.dtype == torch.uint8
    mean = sum(_interpolated_everywhere(plane, i, j) for plane, i, j in cuts) / num_cuts
    assert _most_probable_there(labels.numpy(), mean).all()
    if num_cuts > 1:  # the mean is not any one cut's answer
        assert not _most_probable_there(labels.numpy(), _interpolated_everywhere(*cuts[0])).all()


def _write_plane(folder: Path, stem: str, array: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array, la_affine(0.0)), str(folder / f"{stem}.nii.gz"))


def test_bad_files_flagged_or_subject_error(tmp_path: Path) -> None:
    folder = make_subject(tmp_path / "bad01", frames=MIN_CINE_FRAMES)
    raw = (folder / "la_2ch.nii.gz").read_bytes()
    (folder / "la_2ch.nii.gz").write_bytes(raw[: len(raw) // 2])  # truncated gz
    image = nib.load(str(folder / "la_4ch.nii.gz")).get_fdata(dtype=np.float32)
    image[3, 3, 0, 2] = np.nan  # a few NaN voxels are repaired and reported, not a reason to drop the view
    _write_plane(folder, "la_4ch", image)
    sa = nib.load(str(folder / "sa.nii.gz"))
    sa_image = sa.get_fdata(dtype=np.float32)
    sa_image[:, :, :, 0] = np.inf  # a whole frame of the stack is too many
    nib.save(nib.Nifti1Image(sa_image, sa.affine), str(folder / "sa.nii.gz"))
    _write_plane(folder, "seg_la_3ch", np.zeros((5, 5, 1, MIN_CINE_FRAMES), dtype=np.uint8))  # wrong label shape
    seg_4ch = np.zeros(image.shape, dtype=np.uint8)
    seg_4ch[2:4, 2:4] = 7  # a value the project's label map does not define: refused, not made background
    _write_plane(folder, "seg_la_4ch", seg_4ch)
    subject = load_subject(folder)
    assert set(subject.planes) == {"la_3ch", "la_4ch"} and subject.planes["la_3ch"].label is None
    assert np.isfinite(subject.planes["la_4ch"].image).all() and subject.planes["la_4ch"].label is None
    report = "\n".join(subject.problems)
    assert "la_2ch.nii.gz: plane dropped" in report and "corrupt" in report
    assert "sa.nii.gz: plane dropped" in report and "NaN/inf voxels" in report
    assert "la_4ch.nii.gz: 1 NaN/inf voxels set to the image's lowest intensity" in report
    assert "seg_la_3ch.nii.gz: label dropped" in report
    assert "seg_la_4ch.nii.gz: label dropped" in report and "values [7]" in report and "--label_map" in report
    sample = _transform(num_frames=MIN_CINE_FRAMES)(_item(folder))
    assert sample["plane_mask"].tolist() == [False] * 6 + [False, True, True]
    assert "la_2ch.nii.gz" in sample["problems"]

    # a "cine" of two frames cannot give ED and ES: refused with the reason
    short = make_subject(tmp_path / "short", frames=2, planes=("sa",), labels=False)
    with pytest.raises(SubjectError, match="2 frame\\(s\\); a cine needs at least"):
        load_subject(short)

    # a 3-D long-axis file (X, Y, T) is accepted; a 2-D one and a broken gzip SA are not
    three_d = make_subject(tmp_path / "bad02", frames=MIN_CINE_FRAMES, planes=("la_2ch",), labels=False)
    _write_plane(three_d, "la_2ch", nib.load(str(three_d / "la_2ch.nii.gz")).get_fdata(dtype=np.float32)[:, :, 0])
    assert load_subject(three_d).planes["la_2ch"].image.shape == (FOV_PIXELS, FOV_PIXELS, 1, MIN_CINE_FRAMES)
    _write_plane(three_d, "la_2ch", np.ones((8, 8), dtype=np.float32))
    (three_d / "sa.nii.gz").write_bytes(gzip.compress(b"not a nifti"))
    with pytest.raises(SubjectError) as error:
        load_subject(three_d)
    message = str(error.value)
    assert "bad02" in message and "la_2ch.nii.gz" in message and "sa.nii.gz" in message and "datalist" in message


def test_cache_hit_reads_no_source_equal_and_invalidated(subject_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import scripts.canonical as canonical

    transform = _transform(num_frames=50, crop_size=128, spacing_mm=1.8, cache_dir=tmp_path / "cache")
    fresh = transform(_item(subject_dir))
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1 and files[0].stat().st_size < 10e6

    def no_source_reading(*args, **kwargs):
        raise AssertionError("a cache hit must not read the subject's files")

    with monkeypatch.context() as patch:
        patch.setattr(canonical, "load_subject", no_source_reading)
        cached = transform(_item(subject_dir))
    for key in ("image", "label", "plane_mask", "class_mask"):
        assert torch.equal(fresh[key], cached[key]), key
    assert fresh["geometry"] == cached["geometry"] and fresh["problems"] == cached["problems"]
    # a touched source file or another parameter gives a new cache entry
    os.utime(subject_dir / "sa.nii.gz")
    transform(_item(subject_dir))
    _transform(num_frames=50, crop_size=96, cache_dir=tmp_path / "cache")(_item(subject_dir))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3
    assert not list((tmp_path / "cache").glob(".*tmp"))


def test_canonical_nifti_round_trip(subject_dir: Path, tmp_path: Path) -> None:
    sample = _transform()(_item(subject_dir))
    sample["plane_mask"][7] = False
    image_path, label_path = write_canonical_nifti(sample, tmp_path / "case.nii.gz")
    image, plane_mask = read_canonical_nifti(image_path)
    label, label_mask = read_canonical_nifti(label_path)
    assert nib.load(str(image_path)).shape == (48, 48, 9, 20)
    assert np.array_equal(image, sample["image"].numpy()) and np.array_equal(label, sample["label"].numpy())
    assert plane_mask.tolist() == label_mask.tolist() == sample["plane_mask"].tolist()
    assert read_canonical_geometry(image_path) == sample["geometry"]


def test_datalist_discovery_phenotypes_and_collate(tmp_path: Path) -> None:
    from monai.bundle import ConfigParser
    from monai.data import list_data_collate

    dataset = tmp_path / "dataset"
    for name in ("s1", "s2"):
        make_subject(dataset / name, frames=MIN_CINE_FRAMES, planes=("sa", "la_4ch"), labels=name == "s1")
    (dataset / "notes").mkdir()
    (dataset / "phenotypes.csv").write_text("subject,LVEDV,LVEF,other\ns1,150.5,,x\n")
    everything = load_datalist(dataset, "validation")
    assert [item["id"] for item in everything] == ["s1", "s2"]
    assert [item["id"] for item in load_datalist(dataset, "training", max_subjects=1)] == ["s1"]
    with pytest.raises(SubjectError, match="max_subjects"):
        load_datalist(dataset, "training", max_subjects=0)
    assert everything[0]["phenotypes"][0] == np.float32(150.5) and np.isnan(everything[0]["phenotypes"][1:]).all()
    (dataset / "datalist.json").write_text(
        json.dumps({"training": [{"subject": "s2"}, {"subject": "s1"}], "validation": []})
    )
    assert [item["id"] for item in load_datalist(dataset, "train")] == ["s2", "s1"]
    assert [item["id"] for item in load_datalist(dataset, "train", max_subjects=1)] == ["s2"]
    with pytest.raises(SubjectError, match="test"):
        load_datalist(dataset, "test")
    # a named split file (a cross-validation fold), relative to the dataset or absolute; one that is missing is an
    # error, never every subject in every split
    (tmp_path / "fold1.json").write_text(json.dumps({"training": [{"subject": "s1"}], "test": [{"subject": "s2"}]}))
    (dataset / "folds").mkdir()
    (dataset / "folds" / "fold1.json").write_text((tmp_path / "fold1.json").read_text())
    for named in (tmp_path / "fold1.json", "folds/fold1.json"):
        assert [item["id"] for item in load_datalist(dataset, "test", named)] == ["s2"]
        assert [item["id"] for item in load_datalist(dataset, "training", named)] == ["s1"]
    with pytest.raises(SubjectError, match="fold2.json does not exist"):
        load_datalist(dataset, "training", "folds/fold2.json")
    assert [item["id"] for item in discover_subjects(dataset / "s1")] == ["s1"]
    assert len(discover_subjects(dataset)) == 2

    config = {
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": "scripts.canonical.LoadCineSubjectd", "keys": "subject", "num_frames": 4}],
        }
    }
    preprocessing = ConfigParser(config).get_parsed_content("preprocessing")
    batch = list_data_collate([preprocessing(item) for item in everything])
    assert batch["image"].shape == (2, 1, 9, 4, 128, 128) and batch["plane_mask"].shape == (2, 9)
    assert len(batch["geometry"]) == 2 and batch["id"] == ["s1", "s2"]


def test_extra_sa_passes_read_the_files_once_and_decode_only_their_slices(subject_dir: Path, monkeypatch) -> None:
    """Inference's passes over an SA stack longer than the canonical one: the subject's files are read once for all
    of them, each pass decodes only its SA slices (same logits as decoding every plane), and the merged SA
    segmentation equals the passes run one by one from the files."""
    import scripts.canonical as canonical
    from scripts.presets import build_network
    from scripts.subject_segmenter import SubjectSegmenter

    torch.manual_seed(0)
    network = build_network("heart", "tiny", num_planes=2 + len(LA_PLANES), num_frames=20, image_size=48).eval()
    transform = _transform(num_sa_slices=2)  # 9 source slices: the canonical 2, then 4 passes of the other 7
    reads = []
    with monkeypatch.context() as patch:
        patch.setattr(canonical, "load_subject", lambda *args: reads.append(args) or load_subject(*args))
        # the network's own probabilities: the intensity refinement fits each series over the planes decoded
        # together, so a plane's refined labels depend on which others were decoded with it
        segmenter = SubjectSegmenter(network, transform, "cpu", "fp32", intensity_refinement=False)
        segmentation = segmenter.segment(_item(subject_dir))
    sample, prediction, planes = segmentation.sample, segmentation.prediction, segmentation.planes
    assert len(reads) == 1 and segmentation.sa_slices_unsegmented == []
    assert prediction["labels"].shape == (5, 20, 48, 48) and planes["sa"][0].shape == (FOV_PIXELS, FOV_PIXELS, 9, 20)

    # decoding a subset of the planes: the same logits for those planes (the decoder works plane by plane)
    image, plane_mask = sample["image"][None], sample["plane_mask"][None]
    with torch.no_grad():
        every_plane = network(image, plane_mask)
        subset = network(image, plane_mask, torch.tensor([0, 3]))
    torch.testing.assert_close(subset, every_plane[:, :, [0, 3]], rtol=1e-5, atol=1e-5)
    only_first = segmenter.predict(sample, planes=[0])
    assert torch.equal(only_first["labels"][0], prediction["labels"][0]) and not only_first["labels"][1:].any()
    # a further pass takes the probabilities alone, of the planes it decodes: the same as the full prediction's
    probabilities_alone, pass_geometry = segmenter.predict_pass(sample, planes=[0])
    assert torch.equal(probabilities_alone, only_first["probabilities"][:, [0]])
    assert pass_geometry["planes"] == parse_geometry(sample["geometry"])["planes"][:1]

    merged = probabilities_to_plane_labels([(prediction["probabilities"], sample["geometry"])])["sa"][0]
    for pass_slices in plan_sa_passes(sample["geometry"], sa_slices(sample["geometry"])):
        extra = _transform(num_sa_slices=2, sa_slice_indices=pass_slices)(_item(subject_dir))
        extra_sa = probabilities_to_plane_labels([segmenter.predict_pass(extra, planes=[0, 1])])["sa"][0]
        merged = np.where(merged == UNLABELLED, extra_sa, merged)
    np.testing.assert_array_equal(planes["sa"][0], np.where(merged == UNLABELLED, 0, merged))


def test_centre_shift_moves_every_crop_by_its_share_of_the_shift(subject_dir: Path) -> None:
    """A (1, 1) canonical-pixel shift of the heart centre along the SA axes moves each SA crop by exactly one pixel
    in both directions; the geometry records it and the cache keys the shifted sample apart (an unshifted sample
    keeps the key it had before shifts existed)."""
    unshifted, shifted_transform = _transform()(_item(subject_dir)), _transform(centre_shift_px=(1, 1))
    shifted = shifted_transform(_item(subject_dir))
    before, after = parse_geometry(unshifted["geometry"]), parse_geometry(shifted["geometry"])
    sa_record = next(record for record in before["planes"] if record["source"] == "sa")
    u, v = np.array(sa_record["u"]), np.array(sa_record["v"])  # the canonical SA axes
    np.testing.assert_allclose(np.subtract(after["centre_mm"], before["centre_mm"]), before["spacing_mm"] * (u + v))
    assert after["centre_shift_px"] == [1.0, 1.0] and before["centre_shift_px"] == [0.0, 0.0]
    sa_planes = sa_plane_indices(before)
    moved = shifted["image"][0, sa_planes, :, :-1, :-1] - unshifted["image"][0, sa_planes, :, 1:, 1:]
    assert float(moved.abs().max()) <= 1.5 / 255  # the same positions resampled (uint8 rounding)
    assert float((shifted["image"][0, sa_planes] - unshifted["image"][0, sa_planes]).abs().max()) > 0.1
    assert "centre_shift_px" not in _transform().parameters()
    assert shifted_transform.parameters()["centre_shift_px"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="centre_shift_px"):
        _transform(centre_shift_px=(1, 1, 1))


def test_test_time_shifts_average_every_pass_over_each_slice(subject_dir: Path, monkeypatch) -> None:
    """With test-time shifts, inference runs the canonical pass and its extra SA passes once per shift (files read
    once), cuts every SA slice once per shift, and writes the mean probabilities: where the shifts' own labels agree
    the written label is theirs, and it is not any one shift's labels everywhere."""
    import scripts.canonical as canonical
    import scripts.subject_segmenter as subject_segmenter
    from scripts.presets import build_network

    torch.manual_seed(0)
    network = build_network("heart", "tiny", num_planes=2 + len(LA_PLANES), num_frames=20, image_size=48).eval()
    transform = _transform(num_sa_slices=2)
    shifts = [[1.0, 1.0], [-1.0, -1.0]]
    reads, passes = [], []
    with monkeypatch.context() as patch:
        patch.setattr(canonical, "load_subject", lambda *args: reads.append(args) or load_subject(*args))
        patch.setattr(
            subject_segmenter,
            "probabilities_to_plane_labels",
            lambda given: passes.extend(given) or probabilities_to_plane_labels(given),
        )
        # the passes' average as written back, before the largest-heart step (tested on its own)
        segmenter = subject_segmenter.SubjectSegmenter(
            network, transform, "cpu", "fp32", centre_shifts_px=shifts, sa_largest_component=False
        )
        segmentation = segmenter.segment(_item(subject_dir))
    sample, planes = segmentation.sample, segmentation.planes
    assert len(reads) == 1 and segmentation.sa_slices_unsegmented == []
    geometries = [parse_geometry(geometry) for _, geometry in passes]
    canonical_slices = [record["slice"] for record in geometries[0]["planes"] if record["source"] == "sa"]
    per_shift = 1 + len(plan_sa_passes(sample["geometry"], canonical_slices))  # canonical + extra SA passes
    shifts_of_passes = [[0.0, 0.0]] * per_shift + [shift for shift in shifts for _ in range(per_shift)]
    assert [g["centre_shift_px"] for g in geometries] == shifts_of_passes
    cuts = [record["slice"] for g in geometries for record in g["planes"] if record["source"] == "sa"]
    assert sorted(cuts) == sorted(list(range(9)) * 3)
    # an extra SA pass brings the SA slices it decoded, not the LA views it only encoded
    extra = [g for k, g in enumerate(geometries) if k % per_shift]
    assert extra and all(record["source"] == "sa" for g in extra for record in g["planes"])
    assert all(probabilities.shape[1] == len(g["planes"]) for (probabilities, _), g in zip(passes, geometries))

    own = [probabilities_to_plane_labels(passes[k * per_shift : (k + 1) * per_shift]) for k in range(3)]
    for stem, (written, _) in planes.items():
        labels = [np.where(o[stem][0] == UNLABELLED, 0, o[stem][0]) for o in own]
        agree = (labels[0] == labels[1]) & (labels[1] == labels[2])
        assert agree.mean() > 0.5 and np.array_equal(written[agree], labels[0][agree])
    assert not any(np.array_equal(planes["sa"][0], o["sa"][0]) for o in own)


def test_read_files_leaves_the_reading_to_the_cache_when_there_is_one(subject_dir: Path, tmp_path: Path) -> None:
    assert _transform().read_files(_item(subject_dir)).planes.keys() == {"sa", *LA_PLANES}
    assert _transform(cache_dir=tmp_path / "cache").read_files(_item(subject_dir)) is None
    stems = canonical_to_planes(torch.zeros(9, 20, 48, 48), _transform()(_item(subject_dir))["geometry"], stems=["sa"])
    assert list(stems) == ["sa"]


def test_only_the_largest_heart_of_each_sa_slice_and_frame_is_kept():
    """A label blob apart from the heart (on the chest wall) is removed slice by slice, even where the heart of the
    next slice reaches under it in-plane; the heart's classes, touching each other, stay whole."""
    from scripts.subject_segmenter import largest_heart_component

    labels = np.zeros((40, 40, 2, 3), dtype=np.uint8)
    labels[10:30, 10:30] = 2  # the myocardium ...
    labels[14:26, 14:26] = 1  # ... around the LV blood pool, in every slice and frame
    labels[12:28, 30:36] = 3  # the RV touching it
    labels[2:8, 2:12, 0] = 4  # slice 0: a blob on the chest wall, two rows above the heart
    labels[2:12, 2:12, 1] = 1  # slice 1: the heart reaching up under that blob
    kept = largest_heart_component(labels)
    expected = labels.copy()
    expected[2:8, 2:12, 0] = 0
    np.testing.assert_array_equal(kept, expected)
    assert kept.dtype == np.uint8
