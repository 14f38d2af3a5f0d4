"""The sample geometry record's helpers (scripts.sample_geometry) on a hand-written record."""

import json

from scripts.labels import SA_PLANE
from scripts.sample_geometry import parse_geometry, sa_plane_indices, sa_slices, with_centre_method

GEOMETRY = {
    "centre_method": "image_centre",
    "planes": [
        {"source": SA_PLANE, "slice": 4},
        {"source": SA_PLANE, "slice": 7},
        {"source": None},
        {"source": "la_4ch"},
    ],
}


def test_sa_planes_and_slices_are_read_from_the_record_or_its_json():
    for geometry in (GEOMETRY, json.dumps(GEOMETRY)):
        assert sa_plane_indices(geometry) == [0, 1]
        assert sa_slices(geometry) == [4, 7]
    assert sa_plane_indices({"planes": [{"source": "la_2ch"}]}) == []


def test_with_centre_method_keeps_the_geometry_as_it_came_and_leaves_the_sample_alone():
    sample = {"image": "pixels", "geometry": json.dumps(GEOMETRY)}
    moved = with_centre_method(sample, "lv_segmentation")
    assert isinstance(moved["geometry"], str) and moved["image"] == "pixels"
    assert parse_geometry(moved["geometry"]) == {**GEOMETRY, "centre_method": "lv_segmentation"}
    assert parse_geometry(sample["geometry"])["centre_method"] == "image_centre"
    assert with_centre_method({"geometry": GEOMETRY}, "lv_labels")["geometry"]["centre_method"] == "lv_labels"
    assert GEOMETRY["centre_method"] == "image_centre"
