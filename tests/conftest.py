"""Shared fixtures: a tiny synthetic cohort made once per test run with the real CLI."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
SHARED = REPO.parent / "shared"

# the bundle's code is importable in-process as ``scripts.*`` exactly as monai.bundle puts it on sys.path
if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))
# users run the tools as ``python -m tools.NAME`` from the repository root; PYTHONPATH stands for that root when a
# test runs one from another folder
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


try:  # the property-based tests: the same examples on every run (a CI result depends on the code alone);
    # HYPOTHESIS_PROFILE=explore draws new ones each run to look for more failures
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True)
    settings.register_profile("explore", derandomize=False)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # the MONAI Label environment runs its own tests without hypothesis
    pass


def load_tool(name: str) -> ModuleType:
    """A command-line tool of the top-level ``tools`` package, imported as a module."""
    return importlib.import_module(f"tools.{name}")


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """Six tiny synthetic subjects (4 training, 1 validation, 1 test) written by ``python -m tools.synthesize``."""
    out = tmp_path_factory.mktemp("cohort") / "synthetic"
    subprocess.run(
        [sys.executable, "-m", "tools.synthesize", "--out", str(out), "--subjects", "6",
         "--seed", "7", "--tiny", "--split", "0.67,0.17,0.16"],
        check=True,
        cwd=REPO,
    )  # fmt: skip
    return out
