"""Atomic file writing shared by every writer of the project: nothing is ever half-written.

Each output goes to a temporary file beside its destination (same folder, so the rename cannot cross devices),
and replaces the destination with one ``os.replace`` once complete; a failure removes the temporary file. A process
killed mid-write leaves its temporary file behind: hidden, named ``.<stem>.<random>.partial<suffixes>``, which
:func:`remove_partial_files` finds and removes at the next run's start.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import nibabel as nib
import numpy as np

#: marks the temporary files of :func:`atomic_path` (before their suffixes, which nibabel and numpy read)
PARTIAL_MARKER = ".partial"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes, so nibabel/numpy pick the format) that replaces
    ``path`` when the block ends without error.

    ``durable``: also flush the file and the folder's entry to the disk (fsync) before returning, so that a power
    loss or system crash right after leaves the new file or the old one, never an empty one (for checkpoints; a
    killed process alone cannot lose what it wrote, the kernel still holds it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    descriptor, temp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name.removesuffix(suffix)}.", suffix=f"{PARTIAL_MARKER}{suffix}"
    )
    os.close(descriptor)
    temp_path = Path(temp_name)
    # mkstemp creates 0600 files; outputs get the usual permissions (0666 less the umask), like open() would give
    umask = os.umask(0)
    os.umask(umask)
    temp_path.chmod(0o666 & ~umask)
    try:
        yield temp_path
        if durable:
            _fsync(temp_path)
        os.replace(temp_path, path)
        if durable:
            _fsync(path.parent)
    finally:
        temp_path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk through a read-only handle, as POSIX systems allow
    (Windows opens no folder and commits no read-only handle: there the flush is left to the system)."""
    if os.name != "posix":
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that writers killed mid-write left in ``folder`` (not in its subfolders); returns
    them. Call it at a run's start only: a file being written now by another process looks the same."""
    removed = sorted(Path(folder).glob(f".*{PARTIAL_MARKER}.*"))
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    with atomic_path(path) as temp_path:
        temp_path.write_bytes(data)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    write_bytes_atomic(text.encode(), path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def json_number(value: float | None) -> float | None:
    """``value`` as a float, or None (JSON null) where it is unknown: JSON has no NaN or infinity."""
    return float(value) if value is not None and np.isfinite(value) else None


def write_json_atomic(payload: Any, path: str | os.PathLike) -> None:
    """Pretty-printed JSON (numpy scalars and arrays, paths allowed)."""
    write_text_atomic(json.dumps(payload, indent=2, default=_json_default) + "\n", path)


def save_nifti_atomic(
    data: np.ndarray, affine: np.ndarray, path: str | os.PathLike, frame_interval_ms: float = 0.0
) -> None:
    """Write an (X, Y, S[, T]) array with its RAS millimetre ``affine`` (as sform and qform, scanner code), units
    mm and ms, and the frame interval (ms) as the time spacing of 4-D images when known."""
    image = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    image.header.set_xyzt_units("mm", "msec")
    if data.ndim == 4 and frame_interval_ms > 0:
        image.header.set_zooms(image.header.get_zooms()[:3] + (frame_interval_ms,))
    with atomic_path(path) as temp_path:
        nib.save(image, temp_path)
