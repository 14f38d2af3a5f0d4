"""Clinical measures from segmentations: known shapes give known volumes; missing views give NaN."""

import math

import numpy as np
import pytest

from scripts.labels import PHENOTYPE_NAMES
from scripts.measures import (
    AREA_LENGTH_FACTOR,
    CURVE_QUANTILES,
    MEASURE_FEATURE_NAMES,
    atrial_volume_curve_ml,
    implausible_ejections,
    implausible_values,
    long_axis_length_mm,
    measure_features,
    phenotype_planes,
    phenotypes_from_segmentations,
    phenotypes_from_volumes,
    stack_volume_curves_ml,
    unmeasurable_phenotypes,
)


def stack_affine(pixel_mm: float, slice_mm: float) -> np.ndarray:
    return np.diag([pixel_mm, pixel_mm, slice_mm, 1.0])


def ellipse(shape: tuple[int, int], spacing_mm: float, semi_axes_mm: tuple[float, float]) -> np.ndarray:
    """Boolean ellipse centred in a 2D grid of ``spacing_mm`` pixels."""
    x = (np.arange(shape[0]) - (shape[0] - 1) / 2) * spacing_mm
    y = (np.arange(shape[1]) - (shape[1] - 1) / 2) * spacing_mm
    xx, yy = np.meshgrid(x, y, indexing="ij")
    return (xx / semi_axes_mm[0]) ** 2 + (yy / semi_axes_mm[1]) ** 2 <= 1


def test_stack_volumes_count_voxels_times_slice_spacing():
    seg = np.zeros((20, 20, 4, 3), dtype=np.uint8)
    seg[:10, :10, :2, 0] = 1  # 200 voxels at frame 0
    seg[:5, :10, :2, 1] = 1  # 100 voxels at frame 1
    seg[:4, :5, 3, :] = 2
    volumes = stack_volume_curves_ml(seg, stack_affine(1.5, 10.0))
    voxel_ml = 1.5 * 1.5 * 10.0 / 1000
    np.testing.assert_allclose(volumes["LVBP"], [200 * voxel_ml, 100 * voxel_ml, 0.0])
    np.testing.assert_allclose(volumes["LVMYO"], [20 * voxel_ml] * 3)
    assert not volumes["RVBP"].any()


def test_ventricular_phenotypes_follow_the_lv_curve():
    lv = np.array([120.0, 100.0, 50.0, 80.0])
    rv = np.array([130.0, 110.0, 60.0, 70.0])
    out = phenotypes_from_volumes({"LVBP": lv, "LVMYO": np.full(4, 100.0), "RVBP": rv})
    assert out["LVEDV"] == 120 and out["LVESV"] == 50 and out["LVSV"] == 70
    assert out["LVEF"] == pytest.approx(100 * 70 / 120)
    assert out["LVM"] == pytest.approx(105.0)
    # the RV is read at the LV's ED and ES frames (UK Biobank), not at its own extremes
    assert out["RVEDV"] == 130 and out["RVESV"] == 60
    assert math.isnan(out["LAVmax"]) and math.isnan(out["RAEF"])


def test_ejection_fraction_is_not_reported_when_the_smaller_volume_exceeds_the_larger():
    """An RV barely found at the LV's ED frame but found at ES would give EF = -1,900 %: it is left empty, and
    named, while the volumes themselves are still reported."""
    lv = np.array([120.0, 50.0])
    out = phenotypes_from_volumes({"LVBP": lv, "LVMYO": np.full(2, 100.0), "RVBP": np.array([3.0, 60.0])})
    assert out["RVEDV"] == 3 and out["RVESV"] == 60
    assert math.isnan(out["RVSV"]) and math.isnan(out["RVEF"])
    assert out["LVEF"] == pytest.approx(100 * 70 / 120)
    assert implausible_ejections(out) == ["RV"]


def test_long_axis_length_of_an_ellipse():
    mask = ellipse((200, 200), 0.5, (40.0, 15.0))
    assert long_axis_length_mm(mask, (0.5, 0.5)) == pytest.approx(80.0, abs=1.0)


def test_biplane_area_length_is_exact_for_an_ellipsoid_cut_through_its_long_axis():
    a, b, c = 15.0, 20.0, 30.0  # mm; c is the long axis, in both views
    spacing = 0.25
    view_4ch = ellipse((300, 300), spacing, (c, a)).astype(np.uint8)[:, :, None, None] * 4
    view_2ch = ellipse((300, 300), spacing, (c, b)).astype(np.uint8)[:, :, None, None] * 4
    affine = stack_affine(spacing, 8.0)
    volume = atrial_volume_curve_ml({"la_4ch": (view_4ch, affine), "la_2ch": (view_2ch, affine)}, 4)
    true_ml = 4 / 3 * math.pi * a * b * c / 1000
    assert volume[0] == pytest.approx(true_ml, rel=0.03)
    assert AREA_LENGTH_FACTOR == pytest.approx(0.85, abs=0.003)


def test_missing_views_give_nan_not_guesses():
    sa = np.zeros((16, 16, 3, 5), dtype=np.uint8)
    sa[4:12, 4:12, :, :] = 1
    sa[4:8, 4:12, :, 2] = 2
    out = phenotypes_from_segmentations({"sa": (sa, stack_affine(2.0, 8.0))})
    assert out["LVEDV"] > out["LVESV"] > 0
    assert all(math.isnan(out[name]) for name in PHENOTYPE_NAMES if name.startswith(("LA", "RA")))
    la_only = phenotypes_from_segmentations({"la_4ch": (np.zeros((8, 8, 1, 5), np.uint8), stack_affine(2.0, 8.0))})
    assert math.isnan(la_only["LVEDV"]) and math.isnan(la_only["RVEF"])


def test_measure_features_are_the_phenotypes_then_the_ventricular_curve_quantiles():
    lv = np.array([120.0, 100.0, 50.0, 80.0, 110.0])
    volumes = {"LVBP": lv, "LVMYO": np.full(5, 100.0), "RVBP": lv + 10, "LABP": None, "RABP": None}
    features = measure_features(volumes)
    assert features.shape == (len(MEASURE_FEATURE_NAMES),)
    phenotypes = phenotypes_from_volumes(volumes)
    np.testing.assert_array_equal(features[: len(PHENOTYPE_NAMES)], [phenotypes[n] for n in PHENOTYPE_NAMES])
    named = dict(zip(MEASURE_FEATURE_NAMES, features))
    assert named["LVBP_q0"] == 50 and named["LVBP_q100"] == 120 and named["RVBP_q100"] == 130
    assert np.all(np.diff([named[f"LVBP_q{round(100 * q)}"] for q in CURVE_QUANTILES]) >= 0)
    # without an SA stack the ventricular measures are NaN, never guessed
    no_sa = measure_features({"LABP": np.array([60.0, 40.0]), "RABP": None})
    assert np.isnan(no_sa[[MEASURE_FEATURE_NAMES.index(n) for n in ("LVEDV", "LVBP_q0", "RVBP_q100")]]).all()
    assert no_sa[MEASURE_FEATURE_NAMES.index("LAVmax")] == 60


def test_phenotypes_of_a_missing_view_are_unmeasurable_and_impossible_values_are_named():
    curve = np.array([100.0, 60.0])
    sa_and_4ch = {"LVBP": curve, "LVMYO": curve, "RVBP": curve, "LABP": curve, "RABP": curve}
    assert unmeasurable_phenotypes(sa_and_4ch) == []
    sa_only = {"LVBP": curve, "LVMYO": curve, "RVBP": curve, "LABP": None, "RABP": None}
    assert unmeasurable_phenotypes(sa_only) == [n for n in PHENOTYPE_NAMES if n.startswith(("LA", "RA"))]
    la_only = {"LABP": curve, "RABP": None}
    assert set(unmeasurable_phenotypes(la_only)) == set(PHENOTYPE_NAMES) - {"LAVmax", "LAVmin", "LASV", "LAEF"}
    values = dict.fromkeys(PHENOTYPE_NAMES, 50.0)
    values.update(LVESV=-7.8, RVEF=101.0, LVSV=-0.1, RAEF=float("nan"))
    # a stroke volume above its chamber's largest volume (seen on a real study: LVSV 48 mL beside an LVEDV of 33);
    # equal to it (an atrium emptying fully) or beside an unknown largest volume is possible
    values.update(RASV=50.5, RVSV=49.0, RVEDV=48.0, LAVmax=float("nan"), LASV=400.0)
    assert implausible_values(values) == ["LVESV", "LVSV", "RVSV", "RVEF", "RASV"]


@pytest.mark.parametrize("segmented", [("sa", "la_2ch", "la_3ch", "la_4ch"), ("sa", "la_2ch"), ("la_4ch",), ()])
def test_each_phenotype_names_the_planes_it_is_measured_on_and_none_where_it_is_not_measured(segmented):
    """Ventricles and LV mass on the SA stack, the LA on the 2- and 4-chamber views present, the RA on the 4-chamber
    view; a phenotype without planes is exactly one that the measures leave empty."""
    planes = phenotype_planes(segmented)
    assert set(planes) == set(PHENOTYPE_NAMES)
    assert planes["LVEDV"] == planes["LVM"] == planes["RVEF"] == (["sa"] if "sa" in segmented else [])
    assert planes["LAVmax"] == [stem for stem in ("la_2ch", "la_4ch") if stem in segmented]
    assert planes["RAEF"] == (["la_4ch"] if "la_4ch" in segmented else [])
    shape = (12, 12, 3, 10)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[3:9, 3:9] = np.arange(1, 6).repeat(2)[None, None, None, :10].clip(1, 5)
    affine = stack_affine(1.5, 8.0)
    given = {stem: (labels if stem == "sa" else labels[:, :, :1], affine) for stem in segmented}
    measured = phenotypes_from_segmentations(given)
    assert {name for name, stems in planes.items() if not stems} <= {n for n, v in measured.items() if math.isnan(v)}
