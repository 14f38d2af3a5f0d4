"""Convert a DICOM cine study folder into a subject folder (sa.nii.gz, la_*.nii.gz, conversion.json).

Usage: python -m tools.convert_dicom STUDY_DIR --out SUBJECT_DIR

A folder of studies (one subfolder per study, told apart by StudyInstanceUID) becomes one subject folder per study,
OUT/<study folder name>, with the studies converted and the time left shown on stderr; a study that fails is named
and the others are still converted (exit status 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The bundle's own package `scripts` lives in bundle/; this folder must not shadow it.
import tools  # noqa: F401  (puts the bundle's scripts package on the path)
from scripts.dicom import DicomConversionError, convert_study, dicom_studies
from scripts.progress import progress_bar


def summarise(report: dict) -> str:
    """One line per written plane, skipped series, repaired file, dropped file and slice, repeated image whose pixels
    differ from the one kept, and removed earlier plane."""
    lines = [
        f"wrote {info['file']} {tuple(info['shape'])} ({info['identified_by']})" for info in report["written"].values()
    ]
    lines += [
        f"skipped series {entry['series_number']} {entry['series_description']!r}: {entry['reason']}"
        for entry in report["skipped"]
    ]
    lines += [f"repaired {entry['file']}: {entry['repair']}" for entry in report["repaired_files"]]
    lines += [f"dropped {entry['file']}: {entry['reason']}" for entry in report["dropped_files"]]
    lines += [
        f"dropped the slice at {entry['position_along_normal_mm']:.1f} mm of series {entry['series_number']} "
        f"({len(entry['files'])} images): {entry['reason']}"
        for entry in report["dropped_slices"]
    ]
    lines += [
        f"ignored {entry['file']}: {entry['reason']}" for entry in report["ignored_files"] if entry.get("pixels_differ")
    ]
    lines += [f"removed {name} of an earlier conversion" for name in report["removed_earlier_planes"]]
    if report["ignored_files"]:
        lines.append(
            f"ignored {len(report['ignored_files'])} file(s) (not images, second copies or images, localiser images "
            "without geometry): see the report"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Convert the study, or each study of a folder of studies; print each DicomConversionError message and return 1
    when a study failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_dir", type=Path, help="folder holding the study's DICOM files (any nesting)")
    parser.add_argument("--out", type=Path, required=True, help="subject folder to write")
    args = parser.parse_args(argv)
    try:
        studies = dicom_studies(args.study_dir) if args.study_dir.is_dir() else [args.study_dir]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if studies == [args.study_dir]:
        try:
            report = convert_study(args.study_dir, args.out)
        except DicomConversionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(summarise(report))
        return 0
    failed = []
    for study in progress_bar(studies, len(studies), "conversion", unit="study"):
        try:
            report = convert_study(study, args.out / study.name)
        except DicomConversionError as exc:
            # a batch keeps going past a bad study, as folder inference does
            print(f"error: {exc}", file=sys.stderr)
            failed.append(study.name)
            continue
        print(f"{study.name} -> {args.out / study.name}\n{summarise(report)}")
    if failed:
        print(f"error: {len(failed)} of {len(studies)} studies failed ({', '.join(failed)})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
