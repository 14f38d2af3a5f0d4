"""The geometry record that travels with a canonical sample (``docs/CONTRACTS.md``): reading it, and the questions
every stage asks of it.

A sample's ``geometry`` is a JSON string (a dict once parsed) with, among others, ``planes``: one record per
canonical plane whose ``source`` is the plane's view (:data:`scripts.labels.SA_PLANE` for the SA stack) and, for SA
planes, ``slice`` (its index in the subject's stack); ``centre_method``: how the crop centre was found.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from scripts.labels import SA_PLANE

__all__ = ["parse_geometry", "sa_plane_indices", "sa_slices", "with_centre_method"]


def parse_geometry(geometry: str | Mapping[str, Any]) -> dict[str, Any]:
    """The geometry record of a sample as a dict (accepts the JSON string stored in samples)."""
    return json.loads(geometry) if isinstance(geometry, str) else dict(geometry)


def sa_plane_indices(geometry: str | Mapping[str, Any]) -> list[int]:
    """Indices among the sample's canonical planes of its SA planes (empty where it has none)."""
    return [k for k, record in enumerate(parse_geometry(geometry)["planes"]) if record.get("source") == SA_PLANE]


def sa_slices(geometry: str | Mapping[str, Any]) -> list[int]:
    """The subject's SA slice numbers that the sample's SA planes hold, in plane order."""
    return [record["slice"] for record in parse_geometry(geometry)["planes"] if record.get("source") == SA_PLANE]


def with_centre_method(sample: Mapping[str, Any], method: str) -> dict[str, Any]:
    """``sample`` with its geometry's ``centre_method`` set to ``method`` (the geometry stays a JSON string where it
    was one): a sample cut again around a centre found after loading says how."""
    geometry = parse_geometry(sample["geometry"])
    geometry["centre_method"] = method
    return {**sample, "geometry": json.dumps(geometry) if isinstance(sample["geometry"], str) else geometry}
