"""Write the synthetic multi-view cine CMR cohort (the bundle's default dataset).

Usage: ``python -m tools.synthesize --out DIR --subjects N --seed S [--frames 50] [--workers 2]
[--split 0.8,0.1,0.1] [--tiny] [--variety classic|wide]``

``--variety wide`` draws appearance, acquisition and anatomy over what real scanners and bodies show (contrast per
tissue and plane, bias, noise, blur, artefacts, 1.2-2.5 mm pixels, 5-10 mm slices with gaps, 20 to ``--frames``
frames, breath-hold offsets, fat, pericardium, trabeculae, abdominal organs, warped shapes); the default ``classic``
is the cohort the shipped weights were trained on, unchanged.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import tools  # noqa: F401  (puts the bundle's scripts package on the path)
from scripts.synthetic import DEFAULT_FRAMES, VARIETIES, synthesize_cohort


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> (0.8, 0.1, 0.1); three non-negative numbers with a positive sum."""
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 3 or min(values) < 0 or sum(values) <= 0:
        raise argparse.ArgumentTypeError("--split needs three non-negative fractions, e.g. 0.8,0.1,0.1")
    return values  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    parser.add_argument("--subjects", required=True, type=int, help="number of subjects")
    parser.add_argument("--seed", required=True, type=int, help="cohort seed (same seed, same arrays)")
    parser.add_argument(
        "--frames", type=int, default=DEFAULT_FRAMES, help="frames per cardiac cycle (wide: the most per subject)"
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--split", type=parse_split, default=(0.8, 0.1, 0.1), help="train,val,test fractions")
    parser.add_argument("--tiny", action="store_true", help="20 frames and a 96 px matrix, for tests")
    parser.add_argument("--variety", choices=VARIETIES, default="classic", help="classic (default) or wide")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Synthesise the cohort, showing the subjects written and the time left on stderr, and report the time taken."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    names = synthesize_cohort(
        args.out,
        args.subjects,
        args.seed,
        args.frames,
        args.tiny,
        args.workers,
        args.split,
        args.variety,
        progress=True,
    )
    print(f"wrote {len(names)} subjects to {args.out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
