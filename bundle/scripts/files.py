"""Atomic file writing shared by every writer of the project: nothing is ever half-written.

Each output goes to a temporary file beside its destination (same folder, so the rename cannot cross devices),
and replaces the destination with one ``os.replace`` once complete; a failure removes the temporary file.
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes, so nibabel/numpy pick the format) that replaces
    ``path`` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    descriptor, temp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name.removesuffix(suffix)}.", suffix=suffix
    )
    os.close(descriptor)
    temp_path = Path(temp_name)
    # mkstemp creates 0600 files; outputs get the usual permissions (0666 less the umask), like open() would give
    umask = os.umask(0)
    os.umask(umask)
    temp_path.chmod(0o666 & ~umask)
    try:
        yield temp_path
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)


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
