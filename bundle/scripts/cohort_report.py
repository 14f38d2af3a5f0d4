"""A cohort's overview page: ``cohort_report.html`` and ``cohort_embedding.png`` in the inference output folder.

One row per subject (linking its ``report.html``) with the main phenotypes and its quality-control flag count, and a
2-D map of the subjects' embeddings (``embedding.npy``) coloured by a phenotype, as Fig. 2 of Zhang et al. (MICCAI
2024) shows the representation: t-SNE (scikit-learn) from :data:`MIN_SUBJECTS_TSNE` subjects on, the first two
principal components below that (t-SNE needs a neighbourhood to preserve).
"""

from __future__ import annotations

import html
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np

from scripts.files import write_bytes_atomic, write_text_atomic
from scripts.labels import PHENOTYPE_NAMES, PHENOTYPE_UNITS

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

#: the phenotypes in the cohort table
COHORT_COLUMNS = ("LVEDV", "LVEF", "LVM", "RVEDV", "RVEF", "LAVmax", "RAVmax")
#: fewer subjects than this are mapped by principal components instead of t-SNE
MIN_SUBJECTS_TSNE = 8
#: embeddings closer than this (relative to their largest value) are the same point: float rounding, not spread
IDENTICAL_TOLERANCE = 1e-6


def checked_colour_by(name: str) -> str:
    """``name`` if it is a phenotype (the map can be coloured by it), else a ValueError naming the choices."""
    if name not in PHENOTYPE_NAMES:
        raise ValueError(f"--report_colour_by {name!r} is not a phenotype; choose one of {', '.join(PHENOTYPE_NAMES)}")
    return name


def embedding_map(embeddings: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates (N, 2) of N embeddings (N, D) and the method's name (``"t-SNE"`` or ``"PCA"``).

    Embeddings that are all equal (the same study given N times) map to one point: scikit-learn's t-SNE divides by
    their zero spread and its Barnes-Hut step then crashes the process (a segmentation fault, not an exception)."""
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    scale = max(1.0, float(np.abs(embeddings).max(initial=0.0)))
    if len(embeddings) < 2 or np.abs(centred).max() <= IDENTICAL_TOLERANCE * scale:
        return np.zeros((len(embeddings), 2)), "PCA"
    if len(embeddings) < MIN_SUBJECTS_TSNE:
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        coordinates = centred @ components[:2].T
        return np.pad(coordinates, ((0, 0), (0, 2 - coordinates.shape[1]))), "PCA"
    from sklearn.manifold import TSNE  # imported here: only a cohort map needs it

    perplexity = float(min(30, (len(embeddings) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(centred.astype(np.float32)), "t-SNE"


def _subject_rows(output_dir: Path, subjects: Sequence[str]) -> list[dict[str, Any]]:
    """Per subject: its id, reported phenotypes, flag count and embedding (None where absent)."""
    rows = []
    for subject in subjects:
        folder = output_dir / subject
        phenotypes = json.loads((folder / "phenotypes.json").read_text()).get("phenotypes", {})
        report = json.loads((folder / "report.json").read_text())
        embedding_file = folder / "embedding.npy"
        rows.append(
            {
                "subject": subject,
                "phenotypes": phenotypes,
                "flags": len(report.get("quality_control", [])),
                "embedding": np.load(embedding_file) if embedding_file.is_file() else None,
                "has_page": (folder / "report.html").is_file(),
            }
        )
    return rows


def _map_png(rows: list[dict[str, Any]], colour_by: str) -> tuple[bytes | None, str]:
    """The embedding map as PNG bytes (None with fewer than two embeddings) and its caption."""
    mapped = [row for row in rows if row["embedding"] is not None]
    if len(mapped) < 2:
        return None, "fewer than two subjects: no embedding map"
    coordinates, method = embedding_map(np.stack([row["embedding"] for row in mapped]).astype(np.float64))
    values = np.array(
        [np.nan if row["phenotypes"].get(colour_by) is None else row["phenotypes"][colour_by] for row in mapped]
    )
    figure, ax = plt.subplots(figsize=(6, 5))
    points = ax.scatter(coordinates[:, 0], coordinates[:, 1], c=values, cmap="viridis", s=30, plotnonfinite=True)
    figure.colorbar(points, ax=ax, label=f"{colour_by} ({PHENOTYPE_UNITS[colour_by]})")
    for (x, y), row in zip(coordinates, mapped):
        ax.annotate(row["subject"], (x, y), fontsize=6, alpha=0.7)
    ax.set_title(f"embeddings of {len(mapped)} subjects ({method}), coloured by {colour_by}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue(), f"{method} of the {len(mapped)} embeddings, coloured by {colour_by}"


def write_cohort_report(output_dir: str | os.PathLike, subjects: Sequence[str], colour_by: str = "LVEF") -> None:
    """Write ``cohort_report.html`` (and ``cohort_embedding.png``) into ``output_dir`` for the ``subjects`` done (each
    a folder of it holding ``phenotypes.json`` and ``report.json``), the map coloured by the phenotype ``colour_by``."""
    checked_colour_by(colour_by)
    output_dir = Path(output_dir)
    rows = _subject_rows(output_dir, subjects)
    png, caption = _map_png(rows, colour_by)
    figure_html = f"<p>{html.escape(caption)}</p>"
    if png is not None:
        write_bytes_atomic(png, output_dir / "cohort_embedding.png")
        figure_html += f'<img id="embedding-map" src="cohort_embedding.png" alt="{html.escape(caption)}">'
    header = "".join(f"<th>{name} ({PHENOTYPE_UNITS[name]})</th>" for name in COHORT_COLUMNS)
    body = []
    for row in rows:
        name = html.escape(row["subject"])
        link = f'<a href="{name}/report.html">{name}</a>' if row["has_page"] else name
        values = "".join(
            f"<td>{'-' if row['phenotypes'].get(c) is None else format(row['phenotypes'][c], '.1f')}</td>"
            for c in COHORT_COLUMNS
        )
        body.append(f'<tr class="subject"><td>{link}</td>{values}<td>{row["flags"]}</td></tr>')
    flagged = sum(row["flags"] > 0 for row in rows)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Cohort report: {len(rows)} subjects</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:2px 6px;text-align:right}}</style></head>
<body>
<h1>{len(rows)} subjects, {flagged} with quality-control flags</h1>
{figure_html}
<table id="cohort"><tr><th>subject</th>{header}<th>QC flags</th></tr>
{"".join(body)}
</table>
<p>Phenotypes as reported in phenotypes.csv; empty values (-) were not measured or implausible.</p>
</body></html>
"""
    write_text_atomic(page, output_dir / "cohort_report.html")
