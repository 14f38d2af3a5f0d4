"""Unit tests of the evaluation report's summaries (the workflow itself is run in test_bundle.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.evaluation import CohortEvaluator, dice_on_input_planes, paired_comparison, sign_test_p
from scripts.labels import PHENOTYPE_NAMES
from scripts.subject import Plane, Subject
from scripts.subject_segmenter import SubjectSegmenter

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


def _plane(name: str, label: np.ndarray) -> Plane:
    return Plane(name, Path(f"{name}.nii.gz"), np.zeros(label.shape, np.float32), np.eye(4), label, Path(f"seg_{name}"))


def test_dice_on_input_planes_scores_every_slice_and_frame_per_view_and_pooled():
    # SA: 2 slices x 3 frames of 4 x 4 pixels; the LV blood pool (class 1) is 4 px in every slice and frame
    sa_label = np.zeros((4, 4, 2, 3), np.uint8)
    sa_label[:2, :2] = 1
    sa_label[3, 3, 1, :] = 255  # not annotated: never scored
    sa_written = sa_label.copy()
    sa_written[sa_written == 255] = 1
    sa_written[0, 0, 1, 2] = 0  # one LV pixel missed in the second slice's last frame (not a canonical slice)
    # 4ch: the RA (class 5) labelled on 2 px, written on 4 px of which 2 are right
    la_label = np.zeros((4, 4, 1, 3), np.uint8)
    la_label[0, :2, 0, 0] = 5
    la_written = np.zeros_like(la_label)
    la_written[0, :, 0, 0] = 5
    reference = Subject("s1", Path("s1"), {"sa": _plane("sa", sa_label), "la_4ch": _plane("la_4ch", la_label)})
    written = {"sa": (sa_written, np.eye(4)), "la_4ch": (la_written, np.eye(4)), "la_2ch": (la_written, np.eye(4))}
    class_mask = torch.ones(6, dtype=torch.bool)
    dice = dice_on_input_planes(written, reference, class_mask)
    assert set(dice) == {"sa", "la_4ch", "all"}  # la_2ch has no label file: not scored
    lv_pixels = 4 * 2 * 3
    assert dice["sa"][0] == pytest.approx(2 * (lv_pixels - 1) / (2 * lv_pixels - 1))
    assert np.isnan(dice["sa"][4]) and np.isnan(dice["la_4ch"][0])  # no reference structure: no score
    assert dice["la_4ch"][4] == pytest.approx(2 * 2 / (2 + 4))
    assert dice["all"][0] == pytest.approx(dice["sa"][0]) and dice["all"][4] == pytest.approx(dice["la_4ch"][4])
    with pytest.raises(ValueError, match="s1: the segmentation of sa has shape"):
        dice_on_input_planes({"sa": (sa_written[:, :, :1], np.eye(4))}, reference, class_mask)


@pytest.mark.parametrize(
    "wins, losses, p", [(6, 0, 2 / 64), (0, 6, 2 / 64), (3, 3, 1.0), (1, 4, 12 / 32), (12, 4, 0.076812)]
)
def test_sign_test_gives_the_exact_two_sided_binomial_tail(wins, losses, p):
    # (1, 4): 2 x P(at most 1 of 5) = 2 x 6 / 32; (12, 4): 2 x 2517 / 65536
    assert sign_test_p(wins, losses) == pytest.approx(p, abs=1e-6)


def test_sign_test_without_a_decided_subject_says_nothing():
    assert sign_test_p(0, 0) == 1.0


def test_paired_comparison_counts_subjects_where_both_models_have_a_value():
    first = [{"A": 0.9, "B": None}, {"A": 0.8, "B": 0.5}, {"A": 0.7, "B": 0.6}]
    second = [{"A": 0.8, "B": 0.4}, {"A": 0.8, "B": 0.6}, {"A": 0.6, "B": float("nan")}]
    dice = paired_comparison(first, second, higher_is_better=True)
    counts = [dice["A"][k] for k in ("subjects", "first_better", "second_better", "ties")]
    assert counts == [3, 2, 0, 1]
    assert dice["A"]["mean_difference"] == pytest.approx(0.2 / 3)
    assert dice["A"]["sign_test_p"] == pytest.approx(0.5)
    # B: the first subject lacks the first model's value and the third the second's: only the second subject counts
    assert (dice["B"]["subjects"], dice["B"]["first_better"], dice["B"]["second_better"]) == (1, 0, 1)
    # for an error a smaller value is better: the same differences, the other way round
    errors = paired_comparison(first, second, higher_is_better=False)
    assert (errors["A"]["first_better"], errors["A"]["second_better"]) == (0, 2)
    assert errors["A"]["mean_difference"] == pytest.approx(dice["A"]["mean_difference"])


def test_evaluator_reads_each_subject_once_and_each_model_keeps_its_own_heads(tiny_cohort, tmp_path, monkeypatch):
    """Two checkpoints scored subject by subject: every subject's files are read once for both models, and weights
    without a measure head (saved before it existed) do not borrow the first checkpoint's fitted one."""
    from monai.bundle import ConfigParser

    import scripts.evaluation as evaluation

    bundle = Path(__file__).resolve().parents[1] / "bundle"
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.yaml"), str(bundle / "configs" / "evaluate.yaml")])
    parser.update({"bundle_root": str(bundle), "dataset_dir": str(tiny_cohort), "preset": "tiny", "device": "cpu"})
    torch.manual_seed(0)
    network = parser.get_parsed_content("network")
    head = network.measure_head
    head.set_target_stats(torch.full((len(PHENOTYPE_NAMES),), 50.0), torch.full((len(PHENOTYPE_NAMES),), 10.0))
    head.set_linear(torch.zeros_like(head.mlp[0].weight), torch.zeros_like(head.mlp[0].bias))
    with_head, without_head = tmp_path / "with_head.pt", tmp_path / "without_head.pt"
    torch.save(network.state_dict(), with_head)
    torch.save({k: v for k, v in network.state_dict().items() if not k.startswith("measure_head.")}, without_head)

    reads = []
    real_load_subject = evaluation.load_subject
    monkeypatch.setattr(evaluation, "load_subject", lambda *a, **kw: reads.append(a[0]) or real_load_subject(*a, **kw))
    segmenter = SubjectSegmenter(
        parser.get_parsed_content("network", lazy=False),  # built afresh, as the workflow builds it
        parser.get_parsed_content("load_subject"),
    )
    evaluator = CohortEvaluator(
        segmenter,
        {"first": str(with_head), "second": str(without_head)},
        str(tmp_path / "evaluation"),
    )
    report = evaluator.run(tiny_cohort, "test")

    assert len(reads) == len(report["subjects"]) == 1, reads
    assert "phenotypes_from_measures" in report["models"]["first"]
    assert "phenotypes_from_measures" not in report["models"]["second"]
    # same weights otherwise: the same segmentation and embedding, subject by subject
    first, second = (report["models"][name]["per_subject"][0] for name in ("first", "second"))
    assert first["dice_input_planes"] == second["dice_input_planes"]
