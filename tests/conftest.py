"""Shared fixtures: a tiny synthetic cohort made once per test session with the real CLI."""

from __future__ import annotations

import importlib.util
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


def load_tool(name: str) -> ModuleType:
    """A command-line tool of the top-level ``scripts/`` folder (run as files, not a package) loaded as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """Six tiny synthetic subjects (4 training, 1 validation, 1 test) written by ``scripts/synthesize.py``."""
    out = tmp_path_factory.mktemp("cohort") / "synthetic"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "synthesize.py"), "--out", str(out), "--subjects", "6",
         "--seed", "7", "--tiny", "--split", "0.67,0.17,0.16"],
        check=True,
        cwd=REPO,
    )  # fmt: skip
    return out
