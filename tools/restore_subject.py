"""Copy a subject folder with its plane files stored another way: the same world geometry, other voxel order.

Scanners, vendors and converters store the same cine plane transposed, mirrored or rotated; the bundle's canonical
planes follow the patient's axes, so such a copy must segment exactly as the original. This tool makes the copies
that check it (labels ``seg_<plane>.nii.gz`` are stored the same way as their plane):

    python -m tools.restore_subject SUBJECT_DIR OUT_DIR --storage rot90 [--planes sa la_4ch]

Storages: ``transpose`` (rows and columns swapped, a mirror image), ``flip`` (the first voxel axis reversed, a mirror
image), ``rot90`` (a quarter turn in the plane).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

import tools  # noqa: F401  (puts the bundle's scripts package on the path)
from scripts.files import PARTIAL_MARKER

STORAGES = ("transpose", "flip", "rot90")


def restored(array: np.ndarray, affine: np.ndarray, storage: str) -> tuple[np.ndarray, np.ndarray]:
    """The same plane stored another way: (array (X', Y', ...), affine (4, 4)), every voxel at its world place.

    Args:
        array: (X, Y, ...) voxels of the plane file.
        affine: (4, 4) voxel-to-world affine.
        storage: one of :data:`STORAGES`.
    """
    new = affine.copy()
    size_x, size_y = array.shape[:2]
    if storage == "transpose":
        new[:, [0, 1]] = affine[:, [1, 0]]
        return np.swapaxes(array, 0, 1).copy(), new
    if storage == "flip":
        new[:, 0] = -affine[:, 0]
        new[:3, 3] = affine[:3, 3] + affine[:3, 0] * (size_x - 1)
        return array[::-1].copy(), new
    if storage == "rot90":  # new[i, j] = old[j, Y - 1 - i]
        new[:, 0], new[:, 1] = -affine[:, 1], affine[:, 0]
        new[:3, 3] = affine[:3, 3] + affine[:3, 1] * (size_y - 1)
        return np.rot90(array, 1, axes=(0, 1)).copy(), new
    raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")


def restore_file(src: Path, dst: Path, storage: str) -> None:
    """Write plane file ``src`` stored as ``storage`` to ``dst``."""
    image = nib.load(src)
    array, affine = restored(np.asarray(image.dataobj), image.affine, storage)
    nib.save(nib.Nifti1Image(array, affine, image.header), dst)


def restore_subject(src: Path, dst: Path, storages: dict[str, str]) -> None:
    """Copy subject folder ``src`` to ``dst``, plane file ``<stem>.nii.gz`` (and its labels) stored as
    ``storages[stem]``; other files are copied as they are. The copy is made beside ``dst`` and renamed when whole."""
    partial = dst.with_name(f".{dst.name}{PARTIAL_MARKER}")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(src, partial)
    for stem, storage in storages.items():
        for name in (f"{stem}.nii.gz", f"seg_{stem}.nii.gz"):
            if (src / name).is_file():
                restore_file(src / name, partial / name, storage)
    partial.rename(dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path, help="subject folder (sa.nii.gz, la_*.nii.gz, optional seg_*)")
    parser.add_argument("out", type=Path, help="folder to write (must not exist)")
    parser.add_argument("--storage", choices=STORAGES, required=True)
    parser.add_argument("--planes", nargs="+", default=["sa", "la_2ch", "la_3ch", "la_4ch"], help="plane stems")
    args = parser.parse_args(argv)
    if not args.subject.is_dir():
        parser.error(f"{args.subject} is not a subject folder")
    if args.out.exists():
        parser.error(f"{args.out} exists: give a new folder")
    restore_subject(args.subject, args.out, {stem: args.storage for stem in args.planes})
    print(f"wrote {args.out}: {', '.join(args.planes)} stored as {args.storage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
