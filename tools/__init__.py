"""Command-line tools of the project, run from the repository root as ``python -m tools.NAME``.

The bundle's code is the ``scripts`` package of a MONAI bundle, importable from the bundle root exactly as
``monai.bundle run`` puts it on ``sys.path``; the tools put that root on the path here, once.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"

if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))
