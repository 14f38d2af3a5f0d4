"""Unit tests of the evaluation report's summaries (the workflow itself is run in test_bundle.py)."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.evaluation import CohortEvaluator
from scripts.labels import PHENOTYPE_NAMES

LVEF = PHENOTYPE_NAMES.index("LVEF")


def subject(truth_lvef: float, predicted_lvef: float) -> dict:
    truth = np.full(len(PHENOTYPE_NAMES), np.nan)
    predicted = np.full(len(PHENOTYPE_NAMES), np.nan)
    truth[LVEF], predicted[LVEF] = truth_lvef, predicted_lvef
    return {"truth": truth.tolist(), "phenotypes": predicted.tolist()}


def test_phenotype_summary_gives_error_bias_and_mean_guess():
    # an EF read 4 points low in one subject and 2 points high in the other: MAE 3, bias -1
    per_subject = [subject(60.0, 56.0), subject(40.0, 42.0)]
    training_mean = np.full(len(PHENOTYPE_NAMES), np.nan)
    training_mean[LVEF] = 55.0
    summary = CohortEvaluator.summarise_phenotypes(per_subject, training_mean)
    assert set(summary) == {"LVEF"}  # phenotypes without truth or value are left out, not reported as 0
    entry = summary["LVEF"]
    assert entry["mae"] == pytest.approx(3.0)
    assert entry["bias"] == pytest.approx(-1.0)
    assert entry["mean_guess_mae"] == pytest.approx((5.0 + 15.0) / 2)
    assert entry["ratio_to_mean_guess"] == pytest.approx(0.3)
    assert entry["subjects"] == 2
