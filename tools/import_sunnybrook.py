"""Convert the Sunnybrook Cardiac Data studies into subject folders with LV labels from the manual contours.

Usage: python -m tools.import_sunnybrook --src ../shared/data/sunnybrook --out DIR [--study ID ...]

Each study (every one in link.csv, or those named with --study) becomes DIR/<id>/ with sa.nii.gz (via
scripts.dicom.convert_study), seg_sa.nii.gz and subject.json; DIR/datalist.json lists them under "test";
DIR/SOURCE.md names them above the source's own description, licence and citation.
Labels (project classes): 1 LVBP inside the i-contour (endocardium), 2 LVMYO between the o-contour
(epicardium) and the i-contour, 0 outside the o-contour; slice-frames with an i- but no o-contour (end-systole) get
1 inside, 255 within WALL_MARGIN_MM of the i-contour (where the unknown epicardium lies) and 0 beyond, so an LV that
spills out of the endocardium, e.g. into the RV, is scored and trained against; slice-frames without contours are 255
(not annotated).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import distance_transform_edt

# The bundle's own package `scripts` lives in bundle/; this folder must not shadow it.
import tools  # noqa: F401  (puts the bundle's scripts package on the path)
from scripts.dicom import DicomConversionError, convert_study
from scripts.files import save_nifti_atomic, write_json_atomic, write_text_atomic
from scripts.labels import UNLABELLED
from scripts.progress import progress_bar

LVBP, LVMYO, BACKGROUND = 1, 2, 0
SUBJECT_SIDECAR = {"annotated_classes": [LVBP, LVMYO], "source": "Sunnybrook Cardiac Data, CC0"}
#: Beyond this distance (mm) from the endocardium no slice-frame holds myocardium: end-systolic walls are ~10-15 mm
#: thick, up to ~25 mm in hypertrophy (one of the Sunnybrook groups), so the margin errs on the side of "unknown".
WALL_MARGIN_MM = 30.0
_CONTOUR_NAME = re.compile(r"IM-\d+-(\d+)-([io])contour-manual\.txt$")


def read_contour(path: Path) -> np.ndarray:
    """Contour polygon (N, 2) as (x = column, y = row) pixel coordinates."""
    points = np.loadtxt(path, dtype=float, ndmin=2)
    if points.shape[1] != 2 or len(points) < 3:
        raise ValueError(f"{path}: expected at least 3 lines of 'x y', got shape {points.shape}")
    return points


def polygon_mask(polygon: np.ndarray, num_cols: int, num_rows: int) -> np.ndarray:
    """Boolean mask (X, Y) = (column, row) of pixels whose centre (integer coordinates) lies inside the polygon.

    Even-odd rule: count crossings of a ray from each pixel centre towards +x with the polygon's edges.
    """
    cols, rows = np.meshgrid(np.arange(num_cols, dtype=float), np.arange(num_rows, dtype=float), indexing="ij")
    inside = np.zeros((num_cols, num_rows), dtype=bool)
    starts, ends = polygon, np.roll(polygon, -1, axis=0)
    for (x0, y0), (x1, y1) in zip(starts, ends):
        if y0 == y1:
            continue  # horizontal edges never cross a horizontal ray in the half-open test below
        spans_row = (y0 <= rows) != (y1 <= rows)
        crossing_x = x0 + (rows - y0) * (x1 - x0) / (y1 - y0)
        inside ^= spans_row & (cols < crossing_x)
    return inside


def contour_files(contour_dir: Path) -> dict[int, dict[str, Path]]:
    """{InstanceNumber: {"i": path, "o": path}} from the i-contours/ and o-contours/ folders."""
    found: dict[int, dict[str, Path]] = {}
    for path in sorted(contour_dir.glob("*-contours/*.txt")):
        match = _CONTOUR_NAME.search(path.name)
        if match:
            found.setdefault(int(match.group(1)), {})[match.group(2)] = path
    return found


def label_slice_frame(
    contours: dict[str, Path], num_cols: int, num_rows: int, spacing_mm: tuple[float, float]
) -> np.ndarray:
    """Label map (X, Y) uint8 of one slice-frame from its i- and/or o-contour (``spacing_mm``: pixel size along X,
    Y)."""
    label = np.full((num_cols, num_rows), UNLABELLED, dtype=np.uint8)
    inner = polygon_mask(read_contour(contours["i"]), num_cols, num_rows) if "i" in contours else None
    if inner is not None and "o" not in contours and inner.any():
        label[distance_transform_edt(~inner, sampling=spacing_mm) > WALL_MARGIN_MM] = BACKGROUND
    if "o" in contours:
        outer = polygon_mask(read_contour(contours["o"]), num_cols, num_rows)
        label[:] = BACKGROUND
        # Without an i-contour the blood pool / myocardium split inside the epicardium is unknown.
        label[outer] = LVMYO if inner is not None else UNLABELLED
    if inner is not None:
        label[inner] = LVBP
    return label


def instance_index(report: dict) -> dict[int, tuple[int, int]]:
    """{InstanceNumber: (slice, frame)} of the written SA volume, from the conversion report."""
    index = {}
    for slice_number, slice_info in enumerate(report["written"]["sa"]["slices"]):
        for frame, instance in enumerate(slice_info["instance_numbers"]):
            index[instance] = (slice_number, frame)
    return index


def build_segmentation(
    report: dict, contour_dir: Path, shape: tuple[int, ...], spacing_mm: tuple[float, float]
) -> np.ndarray:
    """Label volume (X, Y, S, T) uint8; 255 wherever no contour was drawn (``spacing_mm``: pixel size along X, Y)."""
    segmentation = np.full(shape, UNLABELLED, dtype=np.uint8)
    index = instance_index(report)
    for instance, contours in contour_files(contour_dir).items():
        if instance not in index:
            raise ValueError(f"{contour_dir}: contour for InstanceNumber {instance}, which is not in the SA stack")
        slice_number, frame = index[instance]
        segmentation[:, :, slice_number, frame] = label_slice_frame(contours, shape[0], shape[1], spacing_mm)
    return segmentation


def read_links(src: Path) -> dict[str, str]:
    """{study id: original contour folder id} from link.csv."""
    with open(src / "link.csv", newline="") as handle:
        return {row["patient_id"]: row["original_id"] for row in csv.DictReader(handle)}


def import_study(src: Path, study_id: str, original_id: str, out: Path) -> None:
    """Convert one study and write its seg_sa.nii.gz and subject.json."""
    subject_dir = out / study_id
    report = convert_study(src / "dicoms" / study_id, subject_dir)
    image = nib.load(subject_dir / "sa.nii.gz")
    spacing_mm = tuple(float(z) for z in image.header.get_zooms()[:2])
    segmentation = build_segmentation(report, src / "contourfiles" / original_id, image.shape, spacing_mm)
    save_nifti_atomic(
        segmentation, image.affine, subject_dir / "seg_sa.nii.gz", report["written"]["sa"]["frame_interval_ms"]
    )
    write_json_atomic(SUBJECT_SIDECAR, subject_dir / "subject.json")
    counts = {c: int((segmentation == c).sum()) for c in (LVBP, LVMYO)}
    print(f"{study_id}: sa {image.shape}, labelled voxels LVBP {counts[LVBP]}, LVMYO {counts[LVMYO]}")


def source_text(src: Path, study_ids: list[str]) -> str:
    """SOURCE.md of the written dataset: which studies it holds and what its files are, then the source's own
    SOURCE.md (description, licence, citation) unchanged."""
    return (
        f"# Sunnybrook Cardiac Data: {', '.join(study_ids)}, as subject folders\n\n"
        "Each study's folder holds `sa.nii.gz` (the short-axis cine as acquired, int16, X x Y x slices x frames) "
        "and `seg_sa.nii.gz` (labels from the study's manual contours: 1 LV blood pool, 2 LV myocardium, 0 outside "
        f"the epicardium or, where only the endocardium was drawn, more than {WALL_MARGIN_MM:g} mm outside it, 255 "
        "where no contour was drawn or the label is unknown), written by `python -m tools.import_sunnybrook` from the "
        "DICOM files and contours of the source. The source's own description, licence and citation follow "
        "unchanged.\n\n---\n\n" + (src / "SOURCE.md").read_text()
    )


def main(argv: list[str] | None = None) -> int:
    """Import the studies of link.csv (all, or those named); return 1 with a message on a conversion error."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="Sunnybrook folder (dicoms/, contourfiles/, link.csv)")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    parser.add_argument(
        "--study", action="append", metavar="ID", help="import this study only (repeatable; default: every study)"
    )
    args = parser.parse_args(argv)
    if not (args.src / "link.csv").is_file():
        print(f"error: {args.src} has no link.csv; pass the Sunnybrook folder as --src", file=sys.stderr)
        return 1
    links = read_links(args.src)
    unknown = sorted(set(args.study or []) - set(links))
    if unknown:
        print(
            f"error: {', '.join(unknown)} not in {args.src / 'link.csv'} (studies: {', '.join(links)})", file=sys.stderr
        )
        return 1
    study_ids = sorted(set(args.study or links))
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for study_id in progress_bar(study_ids, len(study_ids), "import", unit="study"):
            import_study(args.src, study_id, links[study_id], args.out)
    except (DicomConversionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_json_atomic(
        {"training": [], "validation": [], "test": [{"subject": s} for s in study_ids]}, args.out / "datalist.json"
    )
    write_text_atomic(source_text(args.src, study_ids), args.out / "SOURCE.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
