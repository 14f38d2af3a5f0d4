"""The random-appearance augmentation: shapes, range, reproducibility and the variety it draws."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scripts.appearance import RandAppearanced, intensity_curve, lower_resolution
from scripts.subject import SubjectError, mixed_datalist


def stack_with_two_tissues() -> torch.Tensor:
    """(1, 2, 3, 32, 32): a bright disc (blood, 0.9) on grey tissue (0.3), the same in every plane and frame."""
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = ((y - 16) ** 2 + (x - 16) ** 2 < 64).float()
    return (0.3 + 0.6 * disc).expand(1, 2, 3, 32, 32).clone()


def test_intensity_curve_interpolates_between_its_knots():
    image = torch.linspace(0, 1, 101)
    knots = torch.tensor([0.2, 0.9, 0.1, 0.5])
    expected = np.interp(image.numpy(), np.linspace(0, 1, 4), knots.numpy())
    np.testing.assert_allclose(intensity_curve(image, knots).numpy(), expected, atol=1e-6)


def test_lower_resolution_keeps_the_shape_and_the_mean_and_smooths_an_edge():
    image = torch.zeros(4, 32, 32)
    image[:, :, 16:] = 1.0
    blurred = lower_resolution(image, 2.0)
    assert blurred.shape == image.shape
    assert abs(float(blurred.mean()) - 0.5) < 0.02
    assert 0.0 < float(blurred[0, 0, 15]) < 1.0 or 0.0 < float(blurred[0, 0, 16]) < 1.0


def test_appearance_keeps_shape_and_range_is_reproducible_and_varies_the_contrast():
    image = stack_with_two_tissues()
    transform = RandAppearanced("image", prob=1.0, inverted_prob=0.3, nonmonotone_prob=0.3)
    transform.set_random_state(0)
    outs = [transform({"image": image, "label": "untouched"}) for _ in range(40)]
    assert all(o["image"].shape == image.shape and o["label"] == "untouched" for o in outs)
    assert all(0.0 <= float(o["image"].min()) and float(o["image"].max()) <= 1.0 for o in outs)
    disc = image[0, 0, 0] > 0.5
    contrast = [float(o["image"][0, 0, 0][disc].mean() - o["image"][0, 0, 0][~disc].mean()) for o in outs]
    assert min(contrast) < -0.05 and max(contrast) > 0.2, "bright and dark 'blood' both occur"
    again = RandAppearanced("image", prob=1.0, inverted_prob=0.3, nonmonotone_prob=0.3).set_random_state(0)
    torch.testing.assert_close(again({"image": image})["image"], outs[0]["image"])
    unchanged = RandAppearanced("image", prob=0.0)({"image": image})["image"]
    assert torch.equal(unchanged, image)


def test_appearance_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_knots"):
        RandAppearanced("image", num_knots=1)
    with pytest.raises(ValueError, match="inverted_prob"):
        RandAppearanced("image", inverted_prob=1.5)


def test_mixed_datalist_repeats_the_real_split_after_the_synthetic_one(tiny_cohort, tmp_path):
    synthetic = mixed_datalist(tiny_cohort, "training")
    mixed = mixed_datalist(tiny_cohort, "training", real_dataset_dir=tiny_cohort, real_datalist=None, real_repeats=3)
    assert [i["id"] for i in mixed[: len(synthetic)]] == [i["id"] for i in synthetic]
    assert len(mixed) == 4 * len(synthetic)
    assert [i["id"] for i in mixed[len(synthetic) :]] == [i["id"] for i in synthetic for _ in range(3)]
    with pytest.raises(SubjectError, match="real_repeats"):
        mixed_datalist(tiny_cohort, "training", real_dataset_dir=tiny_cohort, real_repeats=0)
    # a real folder that lists its studies under "test" only (as tools.import_sunnybrook writes it) is an error, not
    # a silent synthetic-only training
    only_test = tmp_path / "test_only.json"
    only_test.write_text(json.dumps({"training": [], "validation": [], "test": [{"subject": "subject_0000"}]}))
    with pytest.raises(SubjectError, match="no subject in its 'training' split"):
        mixed_datalist(tiny_cohort, "training", real_dataset_dir=tiny_cohort, real_datalist=only_test)
