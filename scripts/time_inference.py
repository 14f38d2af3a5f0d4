"""Seconds and peak memory to segment one subject as the ``inference`` workflow does, with a given checkout's code.

Run it once per checkout, alternating, to compare two versions of the inference code on the same subject on the
same day (the benchmark's numbers move from day to day with the machine; a comparison within one sitting does not):

    git worktree add /tmp/old 61fe5f1
    for i in 1 2; do for repo in /tmp/old .; do python scripts/time_inference.py SUBJECT --repo $repo; done; done

Each run loads the checkout's network (its shipped ``bundle/models/model.pt`` at ``small``, random weights at
``tiny``), calls its :func:`scripts.inference.segment_subject` once to warm up and ``--repeats`` times more with the
test-time shifts of its ``configs/inference.yaml``, and prints one JSON line: the median and every time in seconds,
and the process's peak resident memory in MB (model, subject and every pass held for the write-back).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

#: canonical grid per preset, as in inference.yaml: (frames, crop size px, spacing mm)
GRIDS = {"tiny": (10, 32, 7.2), "small": (50, 128, 1.8)}
NUM_SA_SLICES = 6  # the canonical stack's SA slices (9 planes with the 3 LA views)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path, help="subject folder (NIfTI or DICOM, as inference reads it)")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1], help="checkout to time")
    parser.add_argument("--preset", choices=sorted(GRIDS), default="small")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (median reported)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    bundle = args.repo.resolve() / "bundle"
    if not (bundle / "scripts" / "inference.py").is_file():
        raise SystemExit(f"{args.repo}: no bundle/scripts/inference.py; give the root of a checkout of this project")
    if args.repeats < 1:
        raise SystemExit(f"--repeats {args.repeats}: give at least 1 timed call")
    if not args.subject.is_dir():
        raise SystemExit(f"{args.subject}: not a subject folder")
    # the checkout's own bundle code, imported after its folder is first on the path
    sys.path.insert(0, str(bundle))
    import torch
    import yaml

    from scripts.canonical import LoadCineSubjectd
    from scripts.inference import load_network_weights, segment_subject
    from scripts.net import build_network

    frames, size, spacing = GRIDS[args.preset]
    torch.manual_seed(0)
    network = build_network("heart", args.preset, num_planes=NUM_SA_SLICES + 3, num_frames=frames, image_size=size)
    weights = bundle / "models" / "model.pt"
    if args.preset == "small":
        load_network_weights(network, weights)
    network.eval()
    load = LoadCineSubjectd(
        keys="subject", num_sa_slices=NUM_SA_SLICES, num_frames=frames, crop_size=size, spacing_mm=spacing
    )
    shifts = yaml.safe_load((bundle / "configs" / "inference.yaml").read_text())["centre_shifts_px"]
    item, device = {"subject": str(args.subject)}, torch.device("cpu")
    times = []
    for _ in range(1 + args.repeats):
        start = time.perf_counter()
        segment_subject(network, load, item, device, centre_shifts_px=shifts)
        times.append(time.perf_counter() - start)
    result = {
        "repo": str(args.repo),
        "subject": str(args.subject),
        "preset": args.preset,
        "weights": str(weights) if args.preset == "small" else "random",
        "centre_shifts_px": shifts,
        "seconds_median": statistics.median(times[1:]),
        "seconds": times[1:],
        "warmup_seconds": times[0],
        # ru_maxrss is in KiB on Linux
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
