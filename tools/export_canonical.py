"""Write subjects' canonical plane stacks as single 4-D NIfTI files (for one-image-per-case tools, e.g. MONAI Label).

    python -m tools.export_canonical SUBJECT_OR_DATASET --out DIR [--num-frames 50 --crop-size 128 --spacing-mm 1.8]

Per subject: ``DIR/<id>.nii.gz`` (H, W, P, T) and, where labels exist, ``DIR/<id>_label.nii.gz``; the plane mask and
the geometry needed to write predictions back travel in the header (see ``scripts.canonical_nifti``).
A subject that cannot be read is reported and skipped; the exit code is 1 if any was.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tools  # noqa: F401  (puts the bundle's scripts package on the path)
from scripts.canonical import LoadCineSubjectd
from scripts.canonical_nifti import write_canonical_nifti
from scripts.labels import UNLABELLED
from scripts.subject import discover_subjects


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="a subject folder or a dataset folder of subject folders")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-sa-slices", type=int, default=6)
    parser.add_argument("--num-frames", type=int, default=50)
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--spacing-mm", type=float, default=1.8)
    args = parser.parse_args()

    load = LoadCineSubjectd(
        num_sa_slices=args.num_sa_slices,
        num_frames=args.num_frames,
        crop_size=args.crop_size,
        spacing_mm=args.spacing_mm,
    )
    failed = 0
    for item in discover_subjects(args.path):
        try:
            sample = load(item)
            labelled = bool((sample["label"] != UNLABELLED).any())
            if not labelled:
                sample.pop("label")
            image_path, label_path = write_canonical_nifti(sample, Path(args.out) / f"{sample['id']}.nii.gz")
            print(f"{sample['id']}: {image_path}" + (f", {label_path}" if label_path else ""))
        except Exception as err:  # keep going past a bad subject, and say why
            failed += 1
            print(f"{item.get('id', item['subject'])}: skipped: {err}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
