"""Experiment tracking: MONAI's ``--tracking mlflow`` through the real bundle runner, and the pieces of the TensorBoard
images (the TensorBoard event files of the real workflows are read in ``test_bundle.py``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import BUNDLE
from mlflow.tracking import MlflowClient

from scripts.config_check import refuse_unknown_overrides
from scripts.tracking import CLASS_COLOURS, class_boundaries, draw_contours, shown_plane, spread_frames, tile

PRETRAIN = ["configs/inference.yaml", "configs/train.yaml", "configs/pretrain.yaml"]


def test_spread_frames_covers_the_cycle_and_never_repeats():
    assert spread_frames(10, 4).tolist() == [0, 3, 6, 9]
    assert spread_frames(3, 4).tolist() == [0, 1, 2]
    assert spread_frames(50, 1).tolist() == [0]


def test_shown_plane_falls_back_to_the_first_present_plane():
    plane_mask = torch.tensor([False, True, False, True])
    assert shown_plane(plane_mask, 3) == 3
    assert shown_plane(plane_mask, 2) == 1
    assert shown_plane(plane_mask, 7) == 1


def test_tile_puts_panel_r_c_at_row_r_column_c():
    panels = torch.arange(2 * 3, dtype=torch.float32).reshape(2, 3, 1, 1, 1).expand(2, 3, 3, 4, 5)
    grid = tile(panels)
    assert grid.shape == (3, 2 * 4, 3 * 5)
    for r in range(2):
        for c in range(3):
            assert bool((grid[:, r * 4 : (r + 1) * 4, c * 5 : (c + 1) * 5] == 3 * r + c).all())


def test_class_boundaries_are_the_inner_ring_of_each_class_and_skip_unlabelled_pixels():
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[0, 2:6, 2:6] = 1  # a 4 x 4 LVBP square
    label[0, :, 7] = 255  # an unlabelled column at the border: no class, no contour of its own
    contours = class_boundaries(label)
    assert contours.shape == (1, 5, 8, 8)
    ring = torch.zeros(8, 8, dtype=torch.bool)
    ring[2:6, 2:6] = True
    ring[3:5, 3:5] = False
    assert torch.equal(contours[0, 0], ring)
    assert not bool(contours[0, 1:].any())

    drawn = draw_contours(torch.zeros(1, 3, 8, 8), label)
    assert torch.equal(drawn[0, :, 2, 2], CLASS_COLOURS[0]) and bool((drawn[0, :, 3, 3] == 0).all())


def test_tracking_settings_keys_are_known_overrides_only_with_tracking(monkeypatch):
    monkeypatch.chdir(BUNDLE)
    overrides = ["--config_file", repr(PRETRAIN), "--tracking_uri", "sqlite:///x.db", "--experiment_name", "mae"]
    with pytest.raises(SystemExit, match="unknown override --tracking_uri"):
        refuse_unknown_overrides(overrides)
    refuse_unknown_overrides(["--tracking", "mlflow", *overrides])


def test_mlflow_tracking_logs_the_loss_the_learning_rate_and_the_validation_metric(tiny_cohort, tmp_path):
    """``monai.bundle run --tracking mlflow`` (MONAI's default settings) on a local SQLite store, read back with
    mlflow's client: one training loss and learning rate per iteration, the validation metric per epoch."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(PRETRAIN), "--preset", "tiny",
        "--dataset_dir", str(tiny_cohort), "--output_dir", str(tmp_path / "out"), "--max_epochs", "1",
        "--tracking", "mlflow", "--tracking_uri", store, "--experiment_name", "pretrain",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("pretrain")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    iterations = int(run.data.params["epoch_length"])
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    rates = client.get_metric_history(run.info.run_id, "lr_group_0")
    assert [m.step for m in losses] == list(range(1, iterations + 1))
    assert all(0 < m.value < 10 for m in losses)
    # the warm-up's rates after each step (the learning rate is 1.5e-4): rising from 0, none above it
    values = [m.value for m in rates]
    assert len(values) == iterations and values == sorted(values) and 0 < values[0] < values[-1] <= 1.5e-4
    (validation,) = client.get_metric_history(run.info.run_id, "val_mae_loss")
    assert validation.step == 1 and 0 < validation.value < 10
