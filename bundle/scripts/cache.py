"""On-disk cache of canonical stacks (:func:`scripts.canonical.build_canonical` results), one ``.npz`` per subject
and set of transform parameters.

A cache file is named ``<subject folder name>-<key>.npz``; the key hashes the subject's input files (path, size,
mtime) and the parameters, so a touched file or another grid is a new entry and a stale one is never read. Contents:
``image_u8`` uint8 (1, P, T, H, W), the label uint8 (1, P, T, H, W) zlib-compressed, ``plane_mask`` bool (P,),
``class_mask`` bool (C,), the geometry JSON and the problems (JSON list), all without pickle. MONAI's
PersistentDataset is not used: it keys on the data item (the folder path), not on the files' contents, and pickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from scripts.files import atomic_path
from scripts.subject import subject_files

CACHE_VERSION = 1


def cache_key(folder: str | os.PathLike, parameters: Mapping[str, Any]) -> str:
    """Hash of the subject's input files (path, size, mtime) and the transform parameters (JSON-serialisable)."""
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in subject_files(folder)]
    content = json.dumps({"version": CACHE_VERSION, "files": stats, "parameters": parameters}, sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()[:20]


def cache_file(cache_dir: Path, folder: str | os.PathLike, parameters: Mapping[str, Any]) -> Path:
    """The cache file of subject ``folder`` built with ``parameters`` (it may not exist yet)."""
    return cache_dir / f"{Path(folder).name}-{cache_key(folder, parameters)}.npz"


def save_cached(path: Path, built: Mapping[str, Any]) -> None:
    """Store a :func:`scripts.canonical.build_canonical` result atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    label = built["label"]
    arrays = {
        "image_u8": built["image_u8"],
        "label_zlib": np.frombuffer(zlib.compress(label.tobytes(), 1), dtype=np.uint8),
        "label_shape": np.array(label.shape),
        "plane_mask": built["plane_mask"],
        "class_mask": built["class_mask"],
        "geometry": np.array(built["geometry"]),
        "problems": np.array(json.dumps(built["problems"])),
    }
    with atomic_path(path) as temp_path:
        np.savez(temp_path, **arrays)


def load_cached(path: Path) -> dict[str, Any]:
    """Read a cache file written by :func:`save_cached` (the keys of :func:`scripts.canonical.build_canonical`)."""
    with np.load(path, allow_pickle=False) as stored:
        label_shape = tuple(int(n) for n in stored["label_shape"])
        label = np.frombuffer(zlib.decompress(stored["label_zlib"].tobytes()), dtype=np.uint8).reshape(label_shape)
        return {
            "image_u8": stored["image_u8"],
            "label": label,
            "plane_mask": stored["plane_mask"],
            "class_mask": stored["class_mask"],
            "geometry": str(stored["geometry"]),
            "problems": json.loads(str(stored["problems"])),
        }
