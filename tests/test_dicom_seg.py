"""DICOM SEG output: inference on a real multi-view DICOM study writes SEGs that reference the source instances and
hold, per source instance, exactly the labels of the written NIfTI segmentations (read back with highdicom/pydicom).

The study is a subset of the biv-me example study (three single-slice short-axis series merged into one SA stack,
and one 4-chamber series), segmented by the shipped weights through the real ``monai.bundle`` runner.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import BUNDLE, SHARED

from scripts.labels import CLASS_NAMES

BIVME = SHARED / "data" / "bivme_patient1" / "dicoms"
#: three adjacent single-slice SA series (one SA stack of 3 slices) and a 4-chamber series, 25 phases each
SERIES = ("Se1", "Se2", "Se3", "Se6")
PHASES = 25
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: the SNOMED-CT segmented property type each class must carry
EXPECTED_TYPES = {"LVBP": "87878005", "LVMYO": "49848007", "RVBP": "53085002", "LABP": "82471001", "RABP": "73829009"}

pytestmark = pytest.mark.skipif(not BIVME.is_dir(), reason=f"biv-me example study not found at {BIVME}")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the study folder, the inference output folder) of one inference run on the study subset."""
    root = tmp_path_factory.mktemp("dicom_seg")
    study = root / "study"
    for series in SERIES:
        shutil.copytree(BIVME / series, study / series)
    out = root / "predictions"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--preset", "small",
        "--dataset_dir", str(study), "--output_dir", str(out), "--centre_shifts_px", "[]",
        "--write_reports", "false",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return study, out / "study"


def source_images(study: Path) -> dict[str, pydicom.Dataset]:
    """Every source image of the study with its pixels, by SOPInstanceUID."""
    datasets = (pydicom.dcmread(path) for path in sorted(study.rglob("*.dcm")))
    return {str(dataset.SOPInstanceUID): dataset for dataset in datasets}


def pixel_voxels(dataset: pydicom.Dataset, affine_ras: np.ndarray) -> np.ndarray:
    """(rows, columns, 3) voxel indices (x, y, slice) of a NIfTI grid at every pixel centre of a source image,
    computed from the image's own position, orientation and spacing (independent of the writer's mapping)."""
    orientation = np.asarray(dataset.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(v) for v in dataset.PixelSpacing)
    rows, cols = np.meshgrid(np.arange(dataset.Rows), np.arange(dataset.Columns), indexing="ij")
    lps = (
        np.asarray(dataset.ImagePositionPatient, dtype=float)
        + cols[..., None] * col_spacing * orientation[:3]
        + rows[..., None] * row_spacing * orientation[3:]
    )
    world = np.concatenate([lps, np.ones(lps.shape[:2] + (1,))], axis=-1) @ LPS_TO_RAS.T
    voxels = world @ np.linalg.inv(affine_ras).T
    assert np.abs(voxels[..., :3] - np.round(voxels[..., :3])).max() < 0.05, "pixel centres fall on voxel centres"
    return np.round(voxels[..., :3]).astype(int)


def test_dicom_seg_references_every_source_instance_and_equals_the_nifti_labels(predicted):
    study, subject = predicted
    sources = source_images(study)
    by_series = defaultdict(set)
    for uid, dataset in sources.items():
        by_series[str(dataset.SeriesInstanceUID)].add(uid)
    report = json.loads((subject / "report.json").read_text())
    assert set(report["segmented_planes"]) == {"sa", "la_4ch"}
    seg_files = sorted((subject / "dicom_seg").glob("*.dcm"))
    # one SEG instance per phase of each of the 4 source series (none is empty: every series shows the heart)
    assert len(seg_files) == len(SERIES) * PHASES

    referenced_per_seg_series: dict[str, list[str]] = defaultdict(list)
    source_series_of: dict[str, str] = {}
    classes_per_seg_series: dict[str, set[int]] = {}
    present_per_seg_series: dict[str, set[int]] = defaultdict(set)
    compared_pixels, segment_pixels = 0, 0
    # per plane: the written labels (X, Y, S, T), their affine and the converted image they were segmented on
    planes = {
        stem: (
            np.asarray(nib.load(subject / f"seg_{stem}.nii.gz").dataobj),
            nib.load(subject / f"seg_{stem}.nii.gz").affine,
            np.asarray(nib.load(subject / "converted" / f"{stem}.nii.gz").dataobj),
        )
        for stem in ("sa", "la_4ch")
    }
    metadata = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    for path in seg_files:
        labels, affine, image = planes["sa" if path.name.startswith("seg_sa_") else "la_4ch"]
        raw = pydicom.dcmread(path)
        assert raw.Modality == "SEG" and raw.SOPClassUID == pydicom.uid.SegmentationStorage
        assert raw.SegmentationType == "BINARY"
        seg = hd.seg.segread(path)
        (algorithm,) = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (metadata["name"], metadata["version"])
        segments = {}
        for description in seg.SegmentSequence:
            name = description.SegmentLabel
            assert description.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # anatomical structure
            assert description.SegmentedPropertyTypeCodeSequence[0].CodeValue == EXPECTED_TYPES[name]
            segments[int(description.SegmentNumber)] = CLASS_NAMES.index(name)
        references = seg.get_source_image_uids()
        uids = [sop for _, _, sop in references]
        # every referenced instance is in the study, as are the SEG itself and the referenced series
        assert all(
            study_uid == sources[sop].StudyInstanceUID == seg.StudyInstanceUID for study_uid, _, sop in references
        )
        assert all(series_uid == sources[sop].SeriesInstanceUID for _, series_uid, sop in references)
        (source_series,) = {series_uid for _, series_uid, _ in references}
        seg_series = str(seg.SeriesInstanceUID)
        assert source_series_of.setdefault(seg_series, source_series) == source_series, "one SEG series per source"
        referenced_per_seg_series[seg_series].extend(uids)
        # every frame of every segment of every referenced instance, empty ones included
        assert raw.NumberOfFrames == len(segments) * len(uids)

        assert classes_per_seg_series.setdefault(seg_series, set(segments.values())) == set(segments.values())
        for uid in uids:
            source = sources[uid]
            voxels = pixel_voxels(source, affine)
            assert (voxels >= 0).all() and (voxels < labels.shape[:3]).all()
            x, y, k = voxels[..., 0], voxels[..., 1], voxels[..., 2]
            # the frame of the cine this instance is: the one whose converted pixels equal its own
            pixels = source.pixel_array * float(source.get("RescaleSlope", 1) or 1)
            pixels = pixels + float(source.get("RescaleIntercept", 0) or 0)
            matching = [t for t in range(image.shape[3]) if np.array_equal(image[x, y, k, t], pixels)]
            assert len(matching) == 1, f"{uid}: frames {matching} show this image"
            expected = labels[x, y, k, matching[0]]
            present_per_seg_series[seg_series] |= set(np.unique(expected).tolist()) - {0}
            masks = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[uid], segment_numbers=sorted(segments), combine_segments=False
            )[0]
            assert masks.shape == (source.Rows, source.Columns, len(segments))
            for index, number in enumerate(sorted(segments)):
                np.testing.assert_array_equal(masks[..., index], expected == segments[number], err_msg=f"{path} {uid}")
                segment_pixels += int(masks[..., index].sum())
            compared_pixels += expected.size

    # each SEG series covers every instance of its source series exactly once: all slices and frames of the cine
    assert len(referenced_per_seg_series) == len(SERIES)
    # one segment per class present in the source series' labels (over all its phases), no more
    assert classes_per_seg_series == present_per_seg_series
    for seg_series, uids in referenced_per_seg_series.items():
        assert sorted(uids) == sorted(by_series[source_series_of[seg_series]])
    assert compared_pixels == sum(ds.Rows * ds.Columns for ds in sources.values())
    assert segment_pixels > 0, "the comparison saw segmented pixels, not only background"

    conversion = json.loads((subject / "converted" / "conversion.json").read_text())
    recorded = [
        uid for plane in conversion["written"].values() for s in plane["slices"] for uid in s["sop_instance_uids"]
    ]
    assert sorted(recorded) == sorted(sources), "the conversion report names each instance at its voxels"


def test_a_missing_source_image_fails_naming_subject_plane_and_series(tmp_path):
    """A SEG that cannot reference its source fails the subject with its name; a NIfTI subject gets no SEG."""
    from scripts.dicom import convert_study
    from scripts.dicom_seg import DicomSegError, write_dicom_segs

    study = tmp_path / "study"
    shutil.copytree(BIVME / "Se6", study / "Se6")  # described "4CH": one la_4ch plane
    report = convert_study(study, tmp_path / "subject" / "converted")
    converted = nib.load(tmp_path / "subject" / "converted" / "la_4ch.nii.gz")
    labels = np.zeros(converted.shape, dtype=np.uint8)
    labels[100:120, 90:110] = 1
    planes = {"la_4ch": (labels, converted.affine)}
    assert write_dicom_segs(tmp_path, planes, tmp_path / "nifti_subject") == [], "no conversion report: no SEG"
    written = write_dicom_segs(tmp_path / "subject" / "converted", planes, tmp_path / "subject")
    assert len(written) == PHASES

    (study / report["written"]["la_4ch"]["slices"][0]["files"][3]).unlink()
    series_uid = report["written"]["la_4ch"]["series_instance_uid"][0]
    with pytest.raises(DicomSegError, match=rf"^subject: DICOM SEG of plane la_4ch, series {series_uid} .* is gone"):
        write_dicom_segs(tmp_path / "subject" / "converted", planes, tmp_path / "subject")
    shifted = converted.affine.copy()
    shifted[:3, 3] += 1.0
    with pytest.raises(DicomSegError, match="not on the grid of the converted series"):
        write_dicom_segs(tmp_path / "subject" / "converted", {"la_4ch": (labels, shifted)}, tmp_path / "subject")
