"""A subject's page a cardiologist can check: ``report.html`` and ``report.png`` beside its segmentations.

The page shows what every number of the subject came from:

- every input plane at ED and ES (three SA slices: basal, mid and apical of those holding LV blood pool at ED) with
  the written contours over the image, in the input's own pixels;
- the volume curves (``volume_curves.json``) with the five cardiac phases marked;
- the phenotypes measured on the segmentation and those regressed by the network, beside published normal values
  (:data:`NORMAL_VALUES`);
- the quality-control flags, the planes missing and the loader's problems (``report.json``).

``report.png`` is the same page drawn by matplotlib (images, curves, table and flags), for a PACS viewer or an
e-mail; ``report.html`` holds the picture and the tables as text.
"""

from __future__ import annotations

import html
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import nibabel as nib
import numpy as np

from scripts.files import write_bytes_atomic, write_text_atomic
from scripts.labels import ALL_PLANE_FILES, CLASS_NAMES, PHENOTYPE_NAMES, PHENOTYPE_UNITS, SA_PLANE
from scripts.subject import find_plane_file

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

#: outline colour of each class in :data:`scripts.labels.CLASS_NAMES` order (background unused), bright on grey MR
CLASS_COLOURS = (None, "#ff2a2a", "#2aff2a", "#2a9dff", "#ffd700", "#ff40ff")
#: the cited sources of :data:`NORMAL_VALUES`
SOURCES = {
    "hudsmith2005": "Hudsmith et al., J Cardiovasc Magn Reson 2005;7:775-782: 108 healthy adults (63 men), 1.5 T SSFP",
    "petersen2017": "Petersen et al., J Cardiovasc Magn Reson 2017;19:18: UK Biobank, 804 healthy adults aged "
    "45-74, 1.5 T SSFP",
}
#: Published normal values, mean and SD for men and for women (units of ``PHENOTYPE_UNITS``), and their source. The
#: page shows mean +- 1.96 SD. Hudsmith et al. count papillary muscles in the LV mass, UK Biobank analyses (and this
#: bundle) in the blood pool, so LV volumes here run a few mL above theirs.
NORMAL_VALUES: dict[str, tuple[float, float, float, float, str]] = {
    "LVEDV": (160.0, 29.0, 135.0, 26.0, "hudsmith2005"),
    "LVESV": (50.0, 16.0, 42.0, 12.0, "hudsmith2005"),
    "LVEF": (58.0, 5.0, 61.0, 5.0, "petersen2017"),
    "RVEDV": (190.0, 33.0, 148.0, 35.0, "hudsmith2005"),
    "RVESV": (78.0, 20.0, 56.0, 18.0, "hudsmith2005"),
    "LAVmax": (103.0, 30.0, 89.0, 21.0, "hudsmith2005"),
}
#: largest number of SA slices shown (basal, mid, apical)
SA_SLICES_SHOWN = 3
#: pixels of margin around the labelled heart in each panel
CROP_MARGIN_PX = 12


def normal_range_text(name: str) -> str:
    """``"men 103-217, women 84-186 [hudsmith2005]"`` (mean +- 1.96 SD) or ``""`` without published values."""
    if name not in NORMAL_VALUES:
        return ""
    men_mean, men_sd, women_mean, women_sd, source = NORMAL_VALUES[name]
    men = f"{men_mean - 1.96 * men_sd:.0f}-{men_mean + 1.96 * men_sd:.0f}"
    women = f"{women_mean - 1.96 * women_sd:.0f}-{women_mean + 1.96 * women_sd:.0f}"
    return f"men {men}, women {women} [{source}]"


def _load(path: Path | None) -> np.ndarray | None:
    """A NIfTI file's array as (H, W, S, T) (a 3-D plane file gains its slice axis), or None."""
    if path is None or not path.is_file():
        return None
    array = np.asanyarray(nib.load(str(path)).dataobj)
    return array[:, :, None] if array.ndim == 3 else array


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file's object, or {} where the file is absent (a switch turned it off)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def frame_of_phase(phase_frame: int, num_frames_curve: int, num_frames_view: int) -> int:
    """The frame of a view of ``num_frames_view`` frames at the same point of the cycle as ``phase_frame`` of the
    curve's ``num_frames_curve`` frames."""
    return int(round(phase_frame * num_frames_view / max(1, num_frames_curve))) % max(1, num_frames_view)


def sa_slices_shown(label: np.ndarray, ed_frame: int) -> list[int]:
    """Up to :data:`SA_SLICES_SHOWN` SA slice indices (basal, mid, apical order of the file) holding LV blood pool at
    ``ed_frame`` of ``label`` (H, W, S, T); the middle slice alone where none does."""
    lv_slices = np.flatnonzero((label[..., ed_frame] == CLASS_NAMES.index("LVBP")).any(axis=(0, 1)))
    if lv_slices.size == 0:
        return [label.shape[2] // 2]
    picks = np.linspace(0, lv_slices.size - 1, min(SA_SLICES_SHOWN, lv_slices.size)).round().astype(int)
    return sorted(set(lv_slices[picks].tolist()))


def heart_box(label: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns (of the (H, W) plane) around every label of ``label`` (H, W, T), square, with a margin; the
    whole plane where nothing is labelled."""
    rows, cols = np.nonzero(label.any(axis=-1))
    height, width = label.shape[:2]
    if rows.size == 0:
        return slice(0, height), slice(0, width)
    centre = ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2)
    half = max(rows.max() - rows.min(), cols.max() - cols.min()) / 2 + CROP_MARGIN_PX
    r0, c0 = int(max(0, centre[0] - half)), int(max(0, centre[1] - half))
    return slice(r0, int(min(height, centre[0] + half + 1))), slice(c0, int(min(width, centre[1] + half + 1)))


def class_outlines(label: np.ndarray) -> np.ndarray:
    """RGBA float (H, W, 4) image of the outline of every class of ``label`` (H, W): the pixels of a class with a
    4-neighbour of another class, in the class's colour (:data:`CLASS_COLOURS`); everything else transparent."""
    padded = np.pad(label, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    edge = (
        (centre != padded[:-2, 1:-1])
        | (centre != padded[2:, 1:-1])
        | (centre != padded[1:-1, :-2])
        | (centre != padded[1:-1, 2:])
    )
    outlines = np.zeros((*label.shape, 4))
    for value, colour in enumerate(CLASS_COLOURS):
        if colour is not None:
            outlines[edge & (label == value)] = matplotlib.colors.to_rgba(colour)
    return outlines


def _draw_panel(ax: Any, image: np.ndarray, label: np.ndarray | None, title: str) -> None:
    """One plane at one frame: ``image`` (H, W) in grey with the outline of every class of ``label`` (H, W)."""
    ax.imshow(image.T, cmap="gray", interpolation="nearest")
    if label is not None:
        # one image of pixel outlines: a matplotlib contour per class costs ~10 ms of figure set-up each, most of the
        # report's time, and the outlines show the written labels pixel for pixel
        ax.imshow(class_outlines(label).transpose(1, 0, 2), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def _phase_frames(curves: Mapping[str, Any]) -> tuple[int | None, int | None, int]:
    """ED and ES frames of the volume curves (None where not found) and their frame count."""
    phases = curves.get("phases") or {}
    return phases.get("ED"), phases.get("ES"), int(curves.get("num_frames") or 0)


def view_panels(
    input_dir: Path,
    subject_dir: Path,
    curves: Mapping[str, Any],
    images: Mapping[str, np.ndarray] | None = None,
    labels: Mapping[str, np.ndarray] | None = None,
) -> list[tuple[str, Any, Any, Any]]:
    """The panels of the image grid: (row title, ED image (H, W), ES image (H, W), (ED, ES) labels or None), one row
    per SA slice shown and per long-axis view, cropped around the heart. ``images`` and ``labels`` (file stem ->
    (H, W, S, T)): the planes and their written segmentations already in memory; the others are read from the
    input's and the subject's folders."""
    ed, es, curve_frames = _phase_frames(curves)
    images, labels = images or {}, labels or {}
    rows = []
    for stem in ALL_PLANE_FILES:
        image = images[stem] if stem in images else _load(find_plane_file(input_dir, stem))
        if image is None:
            continue
        label = labels[stem] if stem in labels else _load(subject_dir / f"seg_{stem}.nii.gz")
        frames = image.shape[3]
        ed_view = frame_of_phase(ed, curve_frames, frames) if ed is not None else 0
        es_view = frame_of_phase(es, curve_frames, frames) if es is not None else frames // 2
        slices = sa_slices_shown(label, ed_view) if stem == SA_PLANE and label is not None else [image.shape[2] // 2]
        for z in slices:
            box = heart_box(label[:, :, z]) if label is not None else (slice(None), slice(None))
            title = f"SA slice {z + 1}/{image.shape[2]}" if stem == SA_PLANE else stem
            pair = None if label is None else (label[box + (z, ed_view)], label[box + (z, es_view)])
            rows.append((title, image[box + (z, ed_view)], image[box + (z, es_view)], pair))
    return rows


def phenotype_rows(phenotypes: Mapping[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(name, unit, measured, regressed, normal range) of every phenotype; empty values as "-"."""
    measured = phenotypes.get("phenotypes_from_segmentation") or {}
    regressed = phenotypes.get("phenotypes") or {}

    def text(value: Any) -> str:
        return "-" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.1f}"

    return [
        (name, PHENOTYPE_UNITS[name], text(measured.get(name)), text(regressed.get(name)), normal_range_text(name))
        for name in PHENOTYPE_NAMES
    ]


def report_notes(report: Mapping[str, Any]) -> list[str]:
    """What a reader must know before trusting the numbers: QC flags, missing planes, loader problems and values
    left empty, one line each."""
    notes = [
        f"QC {f.get('view', '')} {f.get('check', '')}: {f.get('reason', '')}" for f in report.get("quality_control", [])
    ]
    if report.get("canonical_planes_missing"):
        notes.append("planes missing: " + ", ".join(report["canonical_planes_missing"]))
    if report.get("sa_slices_beyond_apex"):
        slices = ", ".join(str(z) for z in report["sa_slices_beyond_apex"])
        notes.append(f"SA slices beyond the LV apex, labels cleared: {slices}")
    notes += [f"input: {problem}" for problem in report.get("problems", [])]
    if report.get("phenotypes_implausible"):
        notes.append("left empty (implausible): " + ", ".join(report["phenotypes_implausible"]))
    if report.get("ejection_not_measured"):
        notes.append("ejection not measured: " + ", ".join(report["ejection_not_measured"]))
    return notes


def _draw_curves(ax: Any, curves: Mapping[str, Any]) -> None:
    """Every chamber's volume (mL) against time (ms, else frame), the LV blood-pool signal the phases were read from
    (scaled to the LV volume's range, dashed), the cardiac phases as dotted lines."""
    volumes = curves.get("volumes_ml") or {}
    times = curves.get("frame_times_ms")
    for index, name in enumerate(CLASS_NAMES):
        values = volumes.get(name)
        if values is None or all(v is None for v in values):
            continue
        x = times if times else list(range(len(values)))
        ax.plot(x, [np.nan if v is None else v for v in values], color=CLASS_COLOURS[index], label=name)
    signal, lv = curves.get("lv_blood_pool_signal"), volumes.get("LVBP")
    if signal and lv and None not in signal and None not in lv and np.ptp(signal) > 0:
        # the curve the phases were read from, drawn over the LV volume's range: its shape, not its mL
        scaled = min(lv) + (np.asarray(signal) - min(signal)) / np.ptp(signal) * (max(lv) - min(lv))
        x = times if times else list(range(len(signal)))
        ax.plot(x, scaled, color=CLASS_COLOURS[CLASS_NAMES.index("LVBP")], linestyle="--", linewidth=0.8,
                label="LV blood pool in the images (phases; scaled)")  # fmt: skip
    for phase, frame in (curves.get("phases") or {}).items():
        if frame is not None:
            position = times[frame] if times else frame
            ax.axvline(position, color="grey", linestyle=":", linewidth=0.8)
            ax.text(position, 1.0, phase, rotation=90, fontsize=6, va="top", transform=ax.get_xaxis_transform())
    ax.set_xlabel("time (ms)" if times else "frame")
    ax.set_ylabel("volume (mL)")
    ax.legend(fontsize=6, loc="lower right")
    ax.tick_params(labelsize=7)


def report_figure(
    subject: str, panels: Sequence[tuple[str, Any, Any, Any]], curves: Mapping[str, Any], table: list, notes: list
) -> Any:
    """The page as one matplotlib figure: the plane grid (rows: ``panels``; columns ED, ES) on the left; the volume
    curves, the phenotype ``table`` and the ``notes`` on the right."""
    rows = max(len(panels), 4)
    height_in = 2.1 * rows + 0.6
    figure = plt.figure(figsize=(13, height_in))
    # fixed margins (inches) rather than tight_layout, which draws the whole figure once more to measure it
    grid = figure.add_gridspec(
        rows,
        4,
        width_ratios=(1, 1, 1.6, 1.6),
        left=0.01,
        right=0.97,
        bottom=0.5 / height_in,
        top=1 - 0.6 / height_in,
        wspace=0.12,
        hspace=0.25,
    )
    for row, (title, ed_image, es_image, labels) in enumerate(panels):
        for column, (image, phase) in enumerate(((ed_image, "ED"), (es_image, "ES"))):
            label = None if labels is None else labels[column]
            _draw_panel(figure.add_subplot(grid[row, column]), image, label, f"{title}, {phase}")
    third = max(1, rows // 3)
    if curves.get("volumes_ml"):
        _draw_curves(figure.add_subplot(grid[:third, 2:]), curves)
    text_ax = figure.add_subplot(grid[third:, 2:])
    text_ax.set_axis_off()
    lines = [f"{'phenotype':<8} {'unit':<4} {'measured':>9} {'regressed':>9}  normal (mean +- 1.96 SD)"]
    lines += [f"{n:<8} {u:<4} {m:>9} {r:>9}  {rng}" for n, u, m, r, rng in table]
    lines += ["", *(notes or ["no quality-control flag"])]
    wrapped = [line[:120] for line in lines]
    text_ax.text(0, 1, "\n".join(wrapped), family="monospace", fontsize=7, va="top")
    figure.suptitle(f"{subject}: contours at ED and ES, volume curves, phenotypes", fontsize=10)
    return figure


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table of escaped cells."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def report_html(subject: str, report: Mapping[str, Any], curves: Mapping[str, Any], table: list, notes: list) -> str:
    """The page as HTML: the picture (``report.png``), the phases, the phenotype table with the normal ranges and
    their sources, and the notes."""
    identifiers = report.get("dicom_identifiers") or {}
    phases = curves.get("phases") or {}
    times = curves.get("phase_times_ms") or {}
    phase_rows = [
        (name, frame, "-" if times.get(name) is None else f"{times[name]:.0f}") for name, frame in phases.items()
    ]
    sources = "".join(f"<li>[{key}] {html.escape(text)}</li>" for key, text in SOURCES.items())
    note_items = "".join(f"<li>{html.escape(note)}</li>" for note in notes) or "<li>no quality-control flag</li>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(subject)}: cardiac MR report</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:2px 6px;text-align:right}} img{{max-width:100%}}</style></head>
<body>
<h1 id="subject">{html.escape(subject)}</h1>
{_html_table(["identifier", "value"], [(k, v) for k, v in identifiers.items()]) if identifiers else ""}
<h2>Flags and notes</h2><ul id="notes">{note_items}</ul>
<h2>Contours at ED and ES, volume curves</h2>
<img src="report.png" alt="contours and volume curves of {html.escape(subject)}">
<h2>Cardiac phases</h2>{_html_table(["phase", "frame", "time (ms)"], phase_rows)}
<h2>Phenotypes</h2>
{_html_table(["phenotype", "unit", "measured", "regressed", "normal range (mean +- 1.96 SD)"], table)}
<p>Measured: on the segmentation (the volume curves). Regressed: the reported values of phenotypes.json, by the
measure head on the measured values, or by the embedding head where nothing was measured. Normal ranges:</p>
<ul>{sources}</ul>
</body></html>
"""


def write_subject_report(
    input_dir: str | os.PathLike,
    subject_dir: str | os.PathLike,
    images: Mapping[str, np.ndarray] | None = None,
    labels: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write ``report.png`` and ``report.html`` into ``subject_dir`` (an inference output folder holding
    ``seg_*.nii.gz``, ``phenotypes.json``, ``report.json`` and, where written, ``volume_curves.json``) for the input
    subject folder ``input_dir``. ``images`` and ``labels``: planes (file stem -> (X, Y, S, T)) already in memory
    (inference's input and its written segmentations), not read again."""
    input_dir, subject_dir = Path(input_dir), Path(subject_dir)
    report = _read_json(subject_dir / "report.json")
    curves = _read_json(subject_dir / "volume_curves.json")
    subject = report.get("subject", subject_dir.name)
    table = phenotype_rows(_read_json(subject_dir / "phenotypes.json"))
    notes = report_notes(report)
    panels = view_panels(input_dir, subject_dir, curves, images, labels)
    figure = report_figure(subject, panels, curves, table, notes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72)
    plt.close(figure)
    write_bytes_atomic(buffer.getvalue(), subject_dir / "report.png")
    write_text_atomic(report_html(subject, report, curves, table, notes), subject_dir / "report.html")
