"""Tests of the synthetic cine CMR cohort: the real CLI on a few tiny subjects of each variety, plus model-level
checks."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

from scripts import labels, synthetic  # noqa: E402
from scripts.measures import phenotypes_from_segmentations  # noqa: E402
from scripts.synthetic_acquisition import (  # noqa: E402
    TINY_MATRIX,
    WIDE_LA_ERROR_DEGREES,
    WIDE_PIXEL_MM,
    WIDE_SA_SLICES,
    WIDE_SA_TILT_DEGREES,
    WIDE_THICKNESS_MM,
    in_plane_direction,
)
from scripts.synthetic_body_detail import detailed_body_tissue  # noqa: E402
from scripts.synthetic_geometry import grid_points  # noqa: E402
from scripts.synthetic_heart import heart_tissue, model_volumes, structure_boxes  # noqa: E402
from scripts.synthetic_heart_detail import detailed_heart_tissue, pericardial_sac  # noqa: E402
from scripts.synthetic_tissues import TISSUE_TO_CLASS, Tissue  # noqa: E402

SEED = 7
NUM_SUBJECTS = 3
#: The wide cohort: its seed gives bright- and dark-blood subjects among the first few.
WIDE_SEED = 5
NUM_WIDE_SUBJECTS = 4


def run_cli(out: Path, subjects: int, seed: int, variety: str | None = None) -> None:
    """Run ``python -m tools.synthesize --tiny`` as a user would (``--variety`` only when given)."""
    command = [sys.executable, "-m", "tools.synthesize", "--out", str(out)]
    command += ["--subjects", str(subjects), "--seed", str(seed), "--tiny", "--split", "0.4,0.3,0.3"]
    command += ["--variety", variety] if variety else []
    subprocess.run(command, check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    run_cli(out, NUM_SUBJECTS, SEED)
    return out


@pytest.fixture(scope="module")
def wide_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wide")
    run_cli(out, NUM_WIDE_SUBJECTS, WIDE_SEED, "wide")
    return out


@pytest.fixture(params=["classic", "wide"])
def any_cohort(request: pytest.FixtureRequest) -> Path:
    """Each variety's cohort in turn, for the checks of labels against geometry that hold for both."""
    return request.getfixturevalue("cohort" if request.param == "classic" else "wide_cohort")


def load(folder: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) of ``folder/stem.nii.gz``."""
    image = nib.load(folder / f"{stem}.nii.gz")
    return np.asarray(image.dataobj), image.affine


def read_phenotypes(cohort: Path) -> list[dict[str, str]]:
    with open(cohort / "phenotypes.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_files_shapes_and_classes(cohort: Path) -> None:
    names = [f"subject_{i:04d}" for i in range(NUM_SUBJECTS)]
    for name in names:
        folder = cohort / name
        sa, _ = load(folder, "sa")
        assert sa.dtype == np.int16 and sa.ndim == 4
        assert sa.shape[:2] == (TINY_MATRIX,) * 2 and sa.shape[3] == synthetic.TINY_FRAMES
        assert 8 <= sa.shape[2] <= 15
        assert sa.max() > 100 and np.percentile(sa, 1) >= 0
        seen: set[int] = set()
        for stem in labels.ALL_PLANE_FILES:
            image, affine = load(folder, stem)
            seg, seg_affine = load(folder, f"seg_{stem}")
            assert seg.dtype == np.uint8 and seg.shape == image.shape
            np.testing.assert_allclose(seg_affine, affine)
            if stem != "sa":
                assert image.shape[2] == 1 and image.shape[3] == synthetic.TINY_FRAMES
            seen |= set(np.unique(seg).tolist())
        assert seen == set(range(labels.NUM_CLASSES))
    with open(cohort / "phenotypes.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["subject", *labels.PHENOTYPE_NAMES]
    assert [row["subject"] for row in read_phenotypes(cohort)] == names
    datalist = json.loads((cohort / "datalist.json").read_text())
    splits = [[item["subject"] for item in datalist[key]] for key in ("training", "validation", "test")]
    assert all(len(split) == 1 for split in splits)
    assert sorted(sum(splits, [])) == names


def test_same_seed_same_arrays_other_seed_other_subjects(cohort: Path, tmp_path: Path) -> None:
    run_cli(tmp_path / "again", 1, SEED)
    run_cli(tmp_path / "other", 1, SEED + 1)
    for stem in ("sa", "seg_sa", "la_4ch", "seg_la_4ch"):
        first, first_affine = load(cohort / "subject_0000", stem)
        again, again_affine = load(tmp_path / "again" / "subject_0000", stem)
        assert np.array_equal(first, again) and np.array_equal(first_affine, again_affine)
        other, other_affine = load(tmp_path / "other" / "subject_0000", stem)
        assert first.shape != other.shape or not np.array_equal(first, other)
        assert not np.allclose(first_affine, other_affine)
    other_row = read_phenotypes(tmp_path / "other")[0]
    assert other_row["LVEDV"] != read_phenotypes(cohort)[0]["LVEDV"]


def world_to_voxel(affine: np.ndarray, world: np.ndarray) -> np.ndarray:
    """World points (N, 3) -> continuous voxel indices (N, 3)."""
    inverse = np.linalg.inv(affine)
    return world @ inverse[:3, :3].T + inverse[:3, 3]


def breath_hold_offsets(folder: Path, stem: str, num_slices: int) -> np.ndarray:
    """(S, 3) RAS breath-hold offsets (mm) of a plane from the sidecar; zeros where none are recorded (classic)."""
    recorded = json.loads((folder / "subject.json").read_text()).get("breath_hold_offsets_mm", {})
    return np.asarray(recorded.get(stem, np.zeros((num_slices, 3))), dtype=float).reshape(num_slices, 3)


@pytest.mark.parametrize("view", ["la_4ch", "la_2ch"])
def test_labels_agree_where_planes_intersect(any_cohort: Path, view: str) -> None:
    """Where an LA pixel and an SA voxel show the same anatomy (the same point once each plane's breath-hold offset
    is taken off), their labels agree."""
    for folder in sorted(any_cohort.glob("subject_*")):
        sa_seg, sa_affine = load(folder, "seg_sa")
        la_seg, la_affine = load(folder, f"seg_{view}")
        sa_offsets = breath_hold_offsets(folder, "sa", sa_seg.shape[2])
        nx, ny = la_seg.shape[:2]
        ii, jj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
        la_voxels = np.stack([ii.ravel(), jj.ravel(), np.zeros(ii.size)], axis=1)
        anatomy = la_voxels @ la_affine[:3, :3].T + la_affine[:3, 3] - breath_hold_offsets(folder, view, 1)[0]
        spacing = np.linalg.norm(sa_affine[:3, 2])
        la_index, sa_index = [], []
        for k in range(sa_seg.shape[2]):
            sa_voxels = world_to_voxel(sa_affine, anatomy + sa_offsets[k])
            nearest = np.rint(sa_voxels).astype(int)
            on_slice = (nearest[:, 2] == k) & (np.abs(sa_voxels[:, 2] - k) * spacing < 0.75)
            keep = np.flatnonzero(on_slice & np.all((nearest >= 0) & (nearest < sa_seg.shape[:3]), axis=1))
            la_index.append(keep)
            sa_index.append(nearest[keep])
        keep, nearest = np.concatenate(la_index), np.concatenate(sa_index)
        for t in (0, la_seg.shape[3] // 3):
            la_values = la_seg[..., 0, t].ravel()[keep]
            sa_values = sa_seg[nearest[:, 0], nearest[:, 1], nearest[:, 2], t]
            heart = (la_values > 0) | (sa_values > 0)
            assert heart.sum() > 40, "the planes should cross inside the heart"
            assert np.mean(la_values[heart] == sa_values[heart]) > 0.9  # ~0.98; a 6 mm in-plane error gives ~0.7


def test_lv_volume_curve_from_sa_labels(any_cohort: Path) -> None:
    for folder in sorted(any_cohort.glob("subject_*")):
        seg, _ = load(folder, "seg_sa")
        lv = (seg == 1).sum(axis=(0, 1, 2)).astype(float)
        frames = len(lv)
        assert 0.25 <= np.argmin(lv) / frames <= 0.45
        assert lv[0] >= 0.95 * lv.max()
        # atrial kick: the volume still rises in the last tenth of the cycle
        assert lv[-1] > lv[int(0.8 * frames)]


def test_phenotypes_consistent(any_cohort: Path) -> None:
    for row in read_phenotypes(any_cohort):
        p = {name: float(row[name]) for name in labels.PHENOTYPE_NAMES}
        for prefix, big, small in (
            ("LV", "EDV", "ESV"),
            ("RV", "EDV", "ESV"),
            ("LA", "Vmax", "Vmin"),
            ("RA", "Vmax", "Vmin"),
        ):
            edv, esv = p[prefix + big], p[prefix + small]
            assert p[prefix + "SV"] == pytest.approx(edv - esv, abs=0.01)
            assert p[prefix + "EF"] == pytest.approx(100 * (edv - esv) / edv, abs=0.01)
        assert 60 < p["LVEDV"] < 400 and 10 < p["LVEF"] < 85 and 50 < p["LVM"] < 350
        assert 50 < p["RVEDV"] < 500 and 15 < p["LAVmax"] < 250 and 15 < p["RAVmax"] < 250
        # Summation of discs on the SA labels must roughly agree with the model's integral.
        seg, affine = load(any_cohort / row["subject"], "seg_sa")
        voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1e3
        assert (seg[..., 0] == 1).sum() * voxel_ml == pytest.approx(p["LVEDV"], rel=0.25)


def test_the_4ch_view_cuts_both_atria_near_their_middle(cohort: Path) -> None:
    """The 4ch view is planned through both AV valves, so the single-plane area-length RA volume on its labels comes
    close to the model's true RA volume (it was 0-41 % of it for most subjects when the RA lay off the plane)."""
    ratios = []
    for row in read_phenotypes(cohort):
        folder = cohort / row["subject"]
        planes = {stem: load(folder, f"seg_{stem}") for stem in labels.ALL_PLANE_FILES}
        measured = phenotypes_from_segmentations(planes)
        ratios.append([measured[name] / float(row[name]) for name in ("RAVmax", "LAVmax")])
    ratios = np.asarray(ratios)
    assert (ratios > 0.4).all(), f"an atrium is barely in the 4ch view: measured / true (RA, LA) {ratios.tolist()}"
    assert 0.7 <= ratios.mean() <= 1.2, ratios.tolist()


def test_sa_slice_centres_lie_on_the_long_axis(cohort: Path) -> None:
    for i in range(NUM_SUBJECTS):
        folder = cohort / f"subject_{i:04d}"
        seg, sa_affine = load(folder, "seg_sa")
        _, two = load(folder, "la_2ch")
        _, four = load(folder, "la_4ch")
        # The LV long axis is where the 2- and 4-chamber planes meet.
        n2, n4 = two[:3, 2] / np.linalg.norm(two[:3, 2]), four[:3, 2] / np.linalg.norm(four[:3, 2])
        direction = np.cross(n2, n4)
        direction /= np.linalg.norm(direction)
        point = np.linalg.lstsq(np.stack([n2, n4]), np.array([n2 @ two[:3, 3], n4 @ four[:3, 3]]), rcond=None)[0]
        sa_normal = sa_affine[:3, 2] / np.linalg.norm(sa_affine[:3, 2])
        assert abs(sa_normal @ direction) > 0.99
        checked = 0
        for k in range(seg.shape[2]):
            ii, jj = np.nonzero(seg[:, :, k, 0] == 1)
            if len(ii) < 20:
                continue
            centre = sa_affine[:3, :3] @ np.array([ii.mean(), jj.mean(), k]) + sa_affine[:3, 3]
            offset = centre - point
            assert np.linalg.norm(offset - (offset @ direction) * direction) < 2.5
            checked += 1
        assert checked >= 4


def test_model_motion_and_volume_integration() -> None:
    subject = synthetic.sample_subject(SEED, 0, frames=synthetic.TINY_FRAMES)
    volumes = model_volumes(subject.heart)
    myo = volumes["LVMYO"]
    assert myo.max() / myo.min() - 1 < 0.02
    lv = volumes["LVBP"]
    assert int(np.argmax(lv)) == 0
    assert np.argmin(lv) / len(lv) == pytest.approx(subject.phases["es"], abs=1.0 / len(lv))
    assert 0.3 <= np.argmax(volumes["LABP"]) / len(lv) <= 0.5  # atria fill while the ventricles empty
    assert subject.heart.descent[np.argmin(lv)] == pytest.approx(subject.heart.descent.max())
    # The analytic LV volumes equal a grid integration of the very tissue function that labels the images.
    frame = subject.heart.frames[0]
    lo, hi = structure_boxes(frame)["heart"]
    classes = TISSUE_TO_CLASS[heart_tissue(grid_points(lo, hi, 1.0), frame)]
    assert np.count_nonzero(classes == 1) / 1e3 == pytest.approx(lv[0], rel=0.02)
    assert np.count_nonzero(classes == 2) / 1e3 == pytest.approx(myo[0], rel=0.02)
    assert np.count_nonzero(classes == 3) / 1e3 == pytest.approx(volumes["RVBP"][0], rel=0.03)


def test_split_counts() -> None:
    assert synthetic.split_counts(100, (0.8, 0.1, 0.1)) == [80, 10, 10]
    assert synthetic.split_counts(3, (0.8, 0.1, 0.1)) == [1, 1, 1]
    assert synthetic.split_counts(5, (1.0, 0.0, 0.0)) == [5, 0, 0]


def test_wide_files_acquisition_ranges_and_orientation(wide_cohort: Path) -> None:
    """The wide variety through the CLI: the same files and classes, pixel, slice and stack sizes in the stated ranges,
    written in RAS (the base right, posterior and superior of the apex) with right-handed voxel grids."""
    for folder in sorted(wide_cohort.glob("subject_*")):
        sa, sa_affine = load(folder, "sa")
        assert sa.dtype == np.int16 and sa.ndim == 4 and sa.shape[3] == synthetic.TINY_FRAMES
        assert WIDE_SA_SLICES[0] <= sa.shape[2] <= WIDE_SA_SLICES[1]
        pixel = np.linalg.norm(sa_affine[:3, :2], axis=0)
        assert WIDE_PIXEL_MM[0] - 1e-4 <= pixel.min() and pixel.max() <= WIDE_PIXEL_MM[1] + 1e-4
        spacing = np.linalg.norm(sa_affine[:3, 2])
        assert WIDE_THICKNESS_MM[0] - 1e-4 <= spacing <= WIDE_THICKNESS_MM[1] + 4.0 + 1e-4  # thickness + gap
        assert (sa_affine[:3, 2] / spacing) @ np.array([1.0, -1.0, 1.0]) / np.sqrt(3) < -0.5  # slices run to the apex
        seen: set[int] = set()
        for stem in labels.ALL_PLANE_FILES:
            image, affine = load(folder, stem)
            seg, seg_affine = load(folder, f"seg_{stem}")
            assert seg.dtype == np.uint8 and seg.shape == image.shape and np.linalg.det(affine[:3, :3]) > 0
            np.testing.assert_allclose(seg_affine, affine)
            seen |= set(np.unique(seg).tolist())
        assert seen == set(range(labels.NUM_CLASSES))
    assert len(read_phenotypes(wide_cohort)) == NUM_WIDE_SUBJECTS


def test_wide_lv_blood_against_myocardium_varies_and_inverts(wide_cohort: Path) -> None:
    """Blood is bright in some subjects and darker than the myocardium (dark blood, inverted) in others."""
    ratios = []
    for folder in sorted(wide_cohort.glob("subject_*")):
        sa, _ = load(folder, "sa")
        seg, _ = load(folder, "seg_sa")
        blood = np.median(sa[..., 0][seg[..., 0] == 1])
        myocardium = np.median(sa[..., 0][seg[..., 0] == 2])
        ratios.append(blood / max(myocardium, 1.0))
    assert max(ratios) > 1.5 and min(ratios) < 0.7, ratios
    modes, ratios = set(), []
    for index in range(40):
        appearance = synthetic.sample_subject(WIDE_SEED, index, tiny=True, variety="wide").appearance
        modes.add(appearance.mode)
        look = appearance.looks[0]
        ratios.append(float(look.mean[Tissue.LV_BLOOD] / max(look.mean[Tissue.LV_MYOCARDIUM], 1e-3)))
    assert modes == {"bright_blood", "gradient_echo", "dark_blood", "inverted", "low_contrast", "random"}
    assert np.mean(np.asarray(ratios) < 1.0) > 0.2 and np.mean(np.asarray(ratios) > 2.0) > 0.2


def cross_plane_agreement(folder: Path, view: str, offsets: bool) -> float:
    """Fraction of heart pixels where the LA view's label equals the SA label at the same anatomy (frame 0), with or
    without taking each plane's breath-hold offset off."""
    sa_seg, sa_affine = load(folder, "seg_sa")
    la_seg, la_affine = load(folder, f"seg_{view}")
    sa_offsets = breath_hold_offsets(folder, "sa", sa_seg.shape[2]) * offsets
    ii, jj = np.meshgrid(np.arange(la_seg.shape[0]), np.arange(la_seg.shape[1]), indexing="ij")
    world = np.stack([ii.ravel(), jj.ravel(), np.zeros(ii.size)], axis=1) @ la_affine[:3, :3].T + la_affine[:3, 3]
    anatomy = world - breath_hold_offsets(folder, view, 1)[0] * offsets
    spacing = np.linalg.norm(sa_affine[:3, 2])
    same, heart = 0, 0
    for k in range(sa_seg.shape[2]):
        sa_voxels = world_to_voxel(sa_affine, anatomy + sa_offsets[k])
        nearest = np.rint(sa_voxels).astype(int)
        on_slice = (nearest[:, 2] == k) & (np.abs(sa_voxels[:, 2] - k) * spacing < 0.75)
        keep = np.flatnonzero(on_slice & np.all((nearest >= 0) & (nearest < sa_seg.shape[:3]), axis=1))
        la_values = la_seg[..., 0, 0].ravel()[keep]
        sa_values = sa_seg[nearest[keep, 0], nearest[keep, 1], k, 0]
        in_heart = (la_values > 0) | (sa_values > 0)
        same, heart = same + np.sum(la_values[in_heart] == sa_values[in_heart]), heart + in_heart.sum()
    return same / max(heart, 1)


def test_wide_sa_slices_carry_breath_hold_offsets(wide_cohort: Path) -> None:
    """Every SA slice and LA view has a recorded offset of a few mm, the SA slices not all the same one, and the
    images show it: ignoring the offsets, the labels of crossing planes agree less."""
    gains = []
    for folder in sorted(wide_cohort.glob("subject_*")):
        recorded = json.loads((folder / "subject.json").read_text())["breath_hold_offsets_mm"]
        seg, _ = load(folder, "seg_sa")
        sa = np.asarray(recorded["sa"])
        assert sa.shape == (seg.shape[2], 3) and all(np.asarray(recorded[v]).shape == (1, 3) for v in labels.LA_PLANES)
        assert np.linalg.norm(sa, axis=1).max() <= 10.0 + 1e-3 and np.ptp(sa, axis=0).max() > 0.5
        gains += [cross_plane_agreement(folder, v, True) - cross_plane_agreement(folder, v, False) for v in ("la_4ch",)]
    assert min(gains) > -0.02 and max(gains) > 0.03, gains


def test_wide_acquisition_ranges_and_planning_errors() -> None:
    """Per subject (default size): 20-50 frames, pixel, thickness, gap and SA slice count in range, the SA stack tilted
    at most a few degrees from the LV axis, each LA view 2-15 degrees off its ideal plane."""
    frame_counts = []
    for index in range(12):
        subject = synthetic.sample_subject(WIDE_SEED, index, frames=synthetic.DEFAULT_FRAMES, variety="wide")
        heart = subject.heart
        frame_counts.append(len(heart.frames))
        assert synthetic.WIDE_MIN_FRAMES <= frame_counts[-1] <= synthetic.DEFAULT_FRAMES
        sa, long_axis = subject.planes[0], heart.axes[:, 2]
        pixel, spacing = np.linalg.norm(sa.affine[:3, 0]), np.linalg.norm(sa.affine[:3, 2])
        assert WIDE_PIXEL_MM[0] <= pixel <= WIDE_PIXEL_MM[1] and WIDE_THICKNESS_MM[0] <= sa.thickness <= spacing + 1e-9
        assert spacing <= WIDE_THICKNESS_MM[1] + 4.0 + 1e-9 and WIDE_SA_SLICES[0] <= sa.shape[2] <= WIDE_SA_SLICES[1]
        assert sa.shape[0] <= 256
        tilt = np.degrees(np.arccos(abs(sa.affine[:3, 2] / spacing @ long_axis)))
        assert tilt <= WIDE_SA_TILT_DEGREES[1] + 1e-6
        ideal = {"la_2ch": np.pi / 2, "la_3ch": np.arctan2(heart.aortic_valve_xy[1], heart.aortic_valve_xy[0])}
        ideal["la_4ch"] = 0.0
        for plane in subject.planes[1:]:
            ideal_normal = np.cross(in_plane_direction(heart, ideal[plane.name]), -long_axis)
            normal = plane.affine[:3, 2] / np.linalg.norm(plane.affine[:3, 2])
            error = np.degrees(np.arccos(min(1.0, abs(normal @ ideal_normal))))
            assert WIDE_LA_ERROR_DEGREES[0] - 1e-6 <= error <= WIDE_LA_ERROR_DEGREES[1] + 1e-6
    assert len(set(frame_counts)) > 3


def test_wide_heart_detail_keeps_the_class_volumes() -> None:
    """The warped heart with trabeculae and fat holds the same class volumes as the analytic model (the phenotypes'
    truth): the warp preserves volume and the details only swap tissues within a class or in the background."""
    subject = synthetic.sample_subject(WIDE_SEED, 1, frames=synthetic.TINY_FRAMES, variety="wide")
    heart_detail, _ = subject.detail
    volumes = model_volumes(subject.heart)
    frame = subject.heart.frames[0]
    lo, hi = structure_boxes(frame)["heart"]
    points = grid_points(lo - heart_detail.warp.reach, hi + heart_detail.warp.reach, 1.0)
    tissue = detailed_heart_tissue(heart_detail.warp(points), frame, heart_detail)
    classes = TISSUE_TO_CLASS[tissue]
    for value, name, tolerance in ((1, "LVBP", 0.02), (2, "LVMYO", 0.02), (3, "RVBP", 0.03), (4, "LABP", 0.04)):
        assert np.count_nonzero(classes == value) / 1e3 == pytest.approx(volumes[name][0], rel=tolerance), name
    present = set(np.unique(tissue).tolist())
    assert {Tissue.LV_TRABECULAE, Tissue.RV_TRABECULAE, Tissue.PAPILLARY, Tissue.EPICARDIAL_FAT} <= present


def test_wide_body_has_the_anatomy_around_the_heart() -> None:
    """Fat, pericardium, abdominal organs, spine, ribs and vessels in the lungs appear in the detailed anatomy."""
    found: set[int] = set()
    for index in range(3):
        subject = synthetic.sample_subject(WIDE_SEED, index, tiny=True, variety="wide")
        heart_detail, body_detail = subject.detail
        centre = np.array([*subject.body.centre_xy, subject.heart.base_world[2]])
        points = grid_points(centre - [260, 180, 200], centre + [260, 180, 120], 4.0)
        found |= set(np.unique(detailed_body_tissue(points, subject.body, body_detail)).tolist())
        local = subject.heart.to_heart(points.T).T.astype(np.float32)
        found |= set(np.unique(pericardial_sac(heart_detail.warp(local), subject.heart.frames[0], heart_detail)))
    expected = {Tissue.FAT, Tissue.LIVER, Tissue.STOMACH_WALL, Tissue.GASTRIC_CONTENT, Tissue.SPLEEN, Tissue.MARROW}
    expected |= {Tissue.DISC, Tissue.BONE, Tissue.LUNG_VESSEL, Tissue.PERICARDIUM, Tissue.PERICARDIAL_FAT}
    assert expected <= found, expected - found
    details = [synthetic.sample_subject(WIDE_SEED, i, tiny=True, variety="wide").detail[1] for i in range(12)]
    assert any(detail.breasts for detail in details) and any(detail.arms for detail in details)


def test_the_cli_shows_the_subjects_written_and_the_time_left_with_worker_processes(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tools.synthesize", "--out", str(tmp_path), "--subjects", "3", "--seed", "1"]
    result = subprocess.run(command + ["--tiny", "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    # stderr is a pipe here, as in a CI log: whole lines, the first and the last at least, no bar redrawn in place
    assert lines[0].startswith("synthesis [0/3]") and "\r" not in result.stderr, result.stderr
    assert re.fullmatch(r"synthesis \[3/3\] 100% \d\d:\d\d elapsed, 00:00 left \( *[\d.]+s/subject\)", lines[-1])
    assert len(lines) <= 4, "a line every few seconds, not one per redraw"
