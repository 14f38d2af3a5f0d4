"""Realistic synthetic multi-view cine CMR cohort: the bundle's embedded default dataset.

Each subject is one analytic 3D+T heart in world millimetres (RAS, as nibabel affines use) inside a static torso
(:mod:`scripts.synthetic_heart`, :mod:`scripts.synthetic_body`), imaged on planes planned as a CMR technologist would
(:mod:`scripts.synthetic_acquisition`) with a sampled appearance (:mod:`scripts.synthetic_appearance`) by
:mod:`scripts.synthetic_render`; the wide variety adds :mod:`scripts.synthetic_heart_detail` and
:mod:`scripts.synthetic_body_detail`. Labels are the class at the slice centre. Phenotypes are integrated from the 3D
model on a fine grid, never from the slices.
"""

from __future__ import annotations

import contextlib
import csv
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scripts import labels
from scripts.files import atomic_path, save_nifti_atomic, write_json_atomic
from scripts.measures import phenotypes_from_volumes
from scripts.phases import cardiac_phases
from scripts.progress import progress_bar
from scripts.synthetic_acquisition import (
    ANATOMY_TO_RAS,
    PlaneStack,
    plan_acquisition,
    plan_wide_acquisition,
    ras_affine,
)
from scripts.synthetic_appearance import Contrast, WideAppearance, sample_contrast, sample_wide_appearance
from scripts.synthetic_body import Body, sample_body
from scripts.synthetic_body_detail import BodyDetail, sample_wide_body
from scripts.synthetic_heart import Design, Heart, build_heart, model_volumes, sample_design
from scripts.synthetic_heart_detail import HeartDetail, sample_heart_detail
from scripts.synthetic_render import render, render_wide

DEFAULT_FRAMES = 50
TINY_FRAMES = 20
#: ``classic``: the cohort the shipped weights were trained and evaluated on (one bSSFP-like look, ellipsoid
#: anatomy); ``wide``: appearance, acquisition and anatomy drawn over what real scanners and bodies show, so that a
#: network trained on it has to rely on shape.
VARIETIES = ("classic", "wide")
#: Fewest frames per cycle of a wide-variety subject.
WIDE_MIN_FRAMES = 20


def subject_name(index: int) -> str:
    """Folder name of the index-th subject."""
    return f"subject_{index:04d}"


def subject_rng(seed: int, index: int) -> np.random.Generator:
    """Independent stream per (cohort seed, subject index): another seed gives other subjects, workers don't matter."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index,)))


@dataclass
class SyntheticSubject:
    """Everything sampled for one subject (before imaging).

    Attributes:
        appearance: the classic :class:`Contrast` or the wide variety's :class:`WideAppearance`.
        detail: the wide variety's heart and body detail; None in the classic variety.
    """

    design: Design
    heart: Heart
    phases: dict[str, float]
    body: Body
    planes: list[PlaneStack]
    appearance: Contrast | WideAppearance
    rng: np.random.Generator
    detail: tuple[HeartDetail, BodyDetail] | None = None


def sample_subject(
    seed: int, index: int, frames: int = DEFAULT_FRAMES, tiny: bool = False, variety: str = "classic"
) -> SyntheticSubject:
    """Draw one subject's heart, body, acquisition plan and appearance; deterministic in (seed, index, variety).

    Args:
        frames: frames per cycle; in the wide variety the most, each subject drawing from :data:`WIDE_MIN_FRAMES`
            up to it.
        variety: a name of :data:`VARIETIES`.
    """
    if variety not in VARIETIES:
        raise ValueError(f"unknown variety {variety!r}; choose one of {VARIETIES}")
    rng = subject_rng(seed, index)
    design = sample_design(rng)
    if variety == "classic":
        heart, phases = build_heart(design, rng, frames)
        body = sample_body(rng, heart)
        planes = plan_acquisition(heart, rng, tiny)
        return SyntheticSubject(design, heart, phases, body, planes, sample_contrast(rng), rng)
    frames = int(rng.integers(WIDE_MIN_FRAMES, frames + 1)) if frames > WIDE_MIN_FRAMES else frames
    heart, phases = build_heart(design, rng, frames)
    body, body_detail = sample_wide_body(rng, sample_body(rng, heart), heart)
    planes = plan_wide_acquisition(heart, rng, tiny)
    appearance = sample_wide_appearance(rng, len(planes), [plane.shape[1] for plane in planes])
    detail = (sample_heart_detail(rng), body_detail)
    return SyntheticSubject(design, heart, phases, body, planes, appearance, rng, detail)


def synthesize_subject(
    out_dir: str | Path, seed: int, index: int, frames: int, tiny: bool, variety: str = "classic"
) -> dict[str, float]:
    """Render one subject into ``out_dir/subject_NNNN/`` and return its ground-truth phenotypes.

    The wide variety is written in RAS (the classic one keeps the anatomy world, mirrored in x) and its sidecar also
    records each plane's breath-hold offsets (``breath_hold_offsets_mm``: file stem -> one RAS displacement (mm) per
    slice; a pixel at world x shows the anatomy that lay at x - offset where the planes were planned). Every sidecar
    holds the true LV volume curve (``lv_volume_ml``, one value per frame) and its cardiac phases (``cardiac_phases``:
    name -> frame, :mod:`scripts.phases`).
    """
    subject = sample_subject(seed, index, frames, tiny, variety)
    folder = Path(out_dir) / subject_name(index)
    folder.mkdir(parents=True, exist_ok=True)
    frame_seconds = float(subject.rng.uniform(0.8, 1.1)) / len(subject.heart.frames)  # one RR interval
    if subject.detail is None:
        rendered = render(subject.heart, subject.body, subject.planes, subject.appearance, subject.rng)
    else:
        rendered = render_wide(
            subject.heart, subject.body, subject.planes, subject.detail, subject.appearance, subject.rng
        )
    for plane, (image, label) in zip(subject.planes, rendered):
        affine = plane.affine
        if subject.detail is not None:  # the wide variety is written in RAS (see ANATOMY_TO_RAS)
            affine, image, label = ras_affine(plane), image[::-1], label[::-1]
        save_nifti_atomic(image, affine, folder / f"{plane.name}.nii.gz", frame_seconds * 1000)
        save_nifti_atomic(label, affine, folder / f"seg_{plane.name}.nii.gz", frame_seconds * 1000)
    sidecar: dict[str, object] = {"label_map": "project", "annotated_classes": list(range(1, labels.NUM_CLASSES))}
    if subject.detail is not None:
        sidecar["breath_hold_offsets_mm"] = {
            plane.name: np.round(plane.breath_hold_offsets @ ANATOMY_TO_RAS[:3, :3], 3).tolist()
            for plane in subject.planes
        }
    volumes = model_volumes(subject.heart)
    # the true LV volume curve and its keyframes, to score the phases inference finds on its own segmentations
    sidecar["lv_volume_ml"] = np.round(volumes["LVBP"], 3).tolist()
    sidecar["cardiac_phases"] = cardiac_phases(volumes["LVBP"])
    write_json_atomic(sidecar, folder / "subject.json")
    return phenotypes_from_volumes(volumes)


def split_counts(num_subjects: int, fractions: tuple[float, float, float]) -> list[int]:
    """Training / validation / test sizes: largest-remainder rounding, then one or more per non-zero fraction."""
    weights = np.asarray(fractions, dtype=np.float64) / np.sum(fractions)
    counts = np.floor(weights * num_subjects).astype(int)
    for i in np.argsort(-(weights * num_subjects - counts))[: num_subjects - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((counts == 0) & (weights > 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


def make_datalist(names: list[str], seed: int, fractions: tuple[float, float, float]) -> dict[str, list[dict]]:
    """Random training / validation / test split of subject folder names, deterministic in ``seed``."""
    order = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(2**31,))).permutation(len(names))
    counts = split_counts(len(names), fractions)
    bounds = np.cumsum([0] + counts)
    return {
        key: [{"subject": names[i]} for i in sorted(order[bounds[k] : bounds[k + 1]])]
        for k, key in enumerate(("training", "validation", "test"))
    }


def synthesize_cohort(
    out_dir: str | Path,
    num_subjects: int,
    seed: int,
    frames: int = DEFAULT_FRAMES,
    tiny: bool = False,
    workers: int = 1,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    variety: str = "classic",
    progress: bool = False,
) -> list[str]:
    """Write a synthetic cohort: subject folders, ``phenotypes.csv`` and ``datalist.json``.

    Args:
        out_dir: dataset folder (created).
        num_subjects: how many subjects.
        seed: cohort seed; the same seed reproduces identical arrays, another seed gives other subjects.
        frames: frames per cycle (``tiny`` caps it at :data:`TINY_FRAMES`).
        tiny: small matrix (:data:`TINY_MATRIX` px) and few frames, for tests.
        workers: parallel processes.
        split: training / validation / test fractions.
        variety: a name of :data:`VARIETIES`; ``classic`` reproduces the shipped weights' cohort byte for byte.
        progress: show the subjects written and the time left on stderr (:func:`scripts.progress.progress_bar`).

    Returns:
        The subject folder names.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = min(frames, TINY_FRAMES) if tiny else frames
    names = [subject_name(i) for i in range(num_subjects)]
    if variety not in VARIETIES:
        raise ValueError(f"unknown variety {variety!r}; choose one of {VARIETIES}")
    jobs = [(out, seed, i, frames, tiny, variety) for i in range(num_subjects)]
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            # in subject order, as each one is written: the count lags a worker that finished early, never leads
            results = pool.map(synthesize_subject, *zip(*jobs))
        else:
            results = (synthesize_subject(*job) for job in jobs)
        rows = list(progress_bar(results, num_subjects, "synthesis") if progress else results)

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["subject", *labels.PHENOTYPE_NAMES])
            for name, row in zip(names, rows):
                writer.writerow([name] + [f"{row[key]:.3f}" for key in labels.PHENOTYPE_NAMES])

    with atomic_path(out / "phenotypes.csv") as temp_path:
        write_csv(temp_path)
    write_json_atomic(make_datalist(names, seed, split), out / "datalist.json")
    return names
