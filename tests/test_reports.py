"""The subject and cohort reports: written by inference through the real runner, opened in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.colors
import nibabel as nib
import numpy as np
import pytest
from conftest import BUNDLE
from PIL import Image
from test_bundle import bundle_run

from scripts.cohort_report import embedding_map
from scripts.labels import PHENOTYPE_NAMES
from scripts.phases import cardiac_phases
from scripts.subject_report import (
    CLASS_COLOURS,
    class_outlines,
    frame_of_phase,
    report_notes,
    view_panels,
    write_subject_report,
)

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser_path() -> str:
    """A Chromium on the PATH (``.ci/run`` installs Debian's), else the test is skipped with the reason."""
    found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if found is None:
        pytest.skip(f"no browser ({', '.join(BROWSERS)}) on the PATH: install Debian's chromium to run this test")
    return found


@pytest.fixture(scope="module")
def reported(tiny_cohort, tmp_path_factory) -> Path:
    """Inference with the shipped weights on two subjects, one without its 3-chamber view; the output folder."""
    dataset = tmp_path_factory.mktemp("reports") / "dataset"
    for name in ("subject_0000", "subject_0001"):
        shutil.copytree(tiny_cohort / name, dataset / name)
    (dataset / "subject_0001" / "la_3ch.nii.gz").unlink()
    out = dataset.parent / "predictions"
    bundle_run(["configs/inference.yaml"], dataset_dir=dataset, output_dir=out, preset="small", centre_shifts_px="[]")
    return out


def test_browser_shows_each_subject_page_and_the_cohort_page_linking_them(reported):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path(), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto((reported / "cohort_report.html").as_uri())
        rows = page.locator("#cohort tr.subject")
        assert rows.count() == 2
        assert page.locator("#embedding-map").evaluate("img => img.complete && img.naturalWidth > 0")
        page.locator("#cohort a", has_text="subject_0001").click()
        page.wait_for_load_state()
        # the link leads to the subject's page, whose picture decodes and whose tables hold every phenotype
        assert page.locator("#subject").inner_text() == "subject_0001"
        assert page.locator("img").evaluate("img => img.complete && img.naturalWidth > 400")
        phenotype_cells = page.locator("table td:first-child").all_inner_texts()
        assert set(PHENOTYPE_NAMES) <= set(phenotype_cells)
        # what the reader must know is on the page: the missing view
        assert "planes missing: la_3ch" in page.locator("#notes").inner_text()
        # the page as drawn: a screenshot of more than one colour (an unrendered page is blank)
        screenshot = reported / "subject_0001_page.png"
        page.screenshot(path=str(screenshot), full_page=True)
        drawn = np.asarray(Image.open(screenshot).convert("RGB"))
        assert drawn.shape[0] > 600 and len(np.unique(drawn.reshape(-1, 3), axis=0)) > 50
        browser.close()
    report = json.loads((reported / "subject_0001" / "report.json").read_text())
    assert "la_3ch" in report["canonical_planes_missing"]
    assert (reported / "subject_0000" / "report.png").stat().st_size > 10_000


def test_panels_show_each_view_at_ed_and_es_around_its_labels(tiny_cohort, tmp_path):
    """The page's plane grid, with a subject's ground truth standing in for the written segmentation: three SA
    slices and the three long-axis views, each crop holding the labels at the curve's ED and ES."""
    subject = tiny_cohort / "subject_0000"
    for path in subject.glob("seg_*.nii.gz"):
        shutil.copy(path, tmp_path / path.name)
    curves = {"num_frames": 10, "phases": {"ED": 0, "ES": 4}}
    panels = view_panels(subject, tmp_path, curves)
    titles = [title for title, *_ in panels]
    assert sum(title.startswith("SA slice") for title in titles) == 3
    assert titles[-3:] == ["la_2ch", "la_3ch", "la_4ch"]
    for title, ed_image, es_image, (ed_label, es_label) in panels:
        assert ed_image.shape == ed_label.shape == es_label.shape, title
        assert ed_label.any() and (ed_label[[0, -1]] == 0).all() and (ed_label[:, [0, -1]] == 0).all(), title


def test_report_drawn_from_planes_in_memory_is_the_one_read_from_the_files(reported, tmp_path):
    """Inference hands the report the planes and segmentations it holds; the picture is the one drawn from the
    subject's files (as a later rerun of the report on the output folder draws it), pixel for pixel."""
    from scripts.subject import load_subject

    written = reported / "subject_0000"
    source = json.loads((written / "report.json").read_text())["source"]
    images = {stem: plane.image for stem, plane in load_subject(source).planes.items()}
    labels = {}
    for path in written.glob("seg_*.nii.gz"):
        array = np.asanyarray(nib.load(str(path)).dataobj)
        labels[path.name.removeprefix("seg_").removesuffix(".nii.gz")] = array[:, :, None] if array.ndim == 3 else array
    pictures = {}
    for name, planes in (("files", {}), ("memory", {"images": images, "labels": labels})):
        folder = tmp_path / name
        shutil.copytree(written, folder)
        (folder / "report.png").unlink()
        write_subject_report(source, folder, **planes)
        pictures[name] = np.asarray(Image.open(folder / "report.png").convert("RGB"))
    assert len(images) == 4 and len(labels) == 4
    np.testing.assert_array_equal(pictures["memory"], pictures["files"])
    assert len(np.unique(pictures["memory"].reshape(-1, 3), axis=0)) > 50


def test_phases_are_read_from_the_blood_pool_the_images_show(reported):
    """The shipped weights on a synthetic subject: the phases come from the LV blood-pool signal written beside the
    volumes, which follows the LV volume curve (no ``phase_signal`` flag)."""
    record = json.loads((reported / "subject_0000" / "volume_curves.json").read_text())
    assert record["phase_source"] == "lv_blood_pool_signal"
    signal = np.asarray(record["lv_blood_pool_signal"])
    assert len(signal) == record["num_frames"] and record["phases"] == cardiac_phases(signal)
    assert np.corrcoef(signal, record["volumes_ml"]["LVBP"])[0, 1] > 0.5
    flags = json.loads((reported / "subject_0000" / "report.json").read_text())["quality_control"]
    assert "phase_signal" not in {flag["check"] for flag in flags}


def test_outlines_are_the_border_pixels_of_each_class_in_its_colour():
    label = np.zeros((12, 12), dtype=np.uint8)
    label[2:10, 2:10] = 2  # myocardium
    label[4:8, 4:8] = 1  # around a blood pool
    label[0, 0] = 3  # a class at the image's edge
    outlines = class_outlines(label)
    for x in range(12):
        for y in range(12):
            neighbours = [
                label[i, j] for i, j in ((x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)) if 0 <= i < 12 and 0 <= j < 12
            ]
            on_border = any(value != label[x, y] for value in neighbours) and label[x, y] != 0
            assert (outlines[x, y, 3] > 0) == on_border, (x, y)
            if on_border:
                assert np.allclose(outlines[x, y, :3], matplotlib.colors.to_rgb(CLASS_COLOURS[label[x, y]]))


def test_phase_frames_map_between_views_of_other_frame_counts():
    assert frame_of_phase(0, 50, 30) == 0
    assert frame_of_phase(25, 50, 30) == 15
    assert frame_of_phase(49, 50, 10) == 0  # the curve's last frame lies nearer the view's first than its last


def test_embedding_map_keeps_groups_of_subjects_apart():
    """t-SNE from 8 subjects on: two groups of embeddings far apart stay apart on the map; fewer go by PCA."""
    rng = np.random.default_rng(0)
    groups = np.concatenate([rng.normal(0, 0.1, (6, 32)), rng.normal(3, 0.1, (6, 32))])
    coordinates, method = embedding_map(groups)
    assert method == "t-SNE" and coordinates.shape == (12, 2)
    first, second = coordinates[:6], coordinates[6:]
    gap = np.linalg.norm(first.mean(0) - second.mean(0))
    spread = max(
        np.linalg.norm(first - first.mean(0), axis=1).max(), np.linalg.norm(second - second.mean(0), axis=1).max()
    )
    assert gap > 2 * spread
    coordinates, method = embedding_map(groups[[0, 1, 7]])
    assert method == "PCA" and coordinates.shape == (3, 2)


def test_embedding_map_of_one_study_given_many_times_is_one_point():
    """Eight equal embeddings (a study exported eight times): one point, where t-SNE would crash the process (run in
    a child process so that a crash fails this test instead of ending the run)."""
    code = (
        "import numpy as np; from scripts.cohort_report import embedding_map; "
        "e = np.tile(np.random.default_rng(0).normal(size=(1, 32)), (8, 1)); "
        "c, m = embedding_map(e); assert m == 'PCA' and c.shape == (8, 2) and not c.any(), (m, c)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=BUNDLE, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_report_notes_name_the_sa_slices_cleared_beyond_the_apex():
    notes = report_notes({"sa_slices_beyond_apex": [11, 12], "quality_control": []})
    assert notes == ["SA slices beyond the LV apex, labels cleared: 11, 12"]
    assert report_notes({"sa_slices_beyond_apex": []}) == []
