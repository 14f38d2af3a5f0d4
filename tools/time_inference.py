"""Seconds and peak memory to segment one subject as the ``inference`` workflow does, with a given checkout's code.

Run it once per checkout, alternating, to compare two versions of the inference code on the same subject on the
same day (the benchmark's numbers move from day to day with the machine; two checkouts timed in turn do not):

    git worktree add ../old COMMIT
    for i in 1 2; do for repo in ../old .; do python -m tools.time_inference SUBJECT --repo $repo; done; done

Each run builds the subject segmenter (network, subject loader, precision and test-time shifts) from the checkout's
own ``configs/inference.yaml`` (as ``python -m monai.bundle run`` would, at ``--preset``), loads its shipped
``bundle/models/model.pt`` or ``--ckpt``, calls its :meth:`scripts.subject_segmenter.SubjectSegmenter.segment` once
to warm up and ``--repeats`` times more, and prints one JSON line: the median and every time in seconds, and the
process's peak resident memory in MB (model, subject and every pass held for the write-back). A checkout without
``scripts/subject_segmenter.py`` is timed with its own copy of this tool.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path, help="subject folder (NIfTI or DICOM, as inference reads it)")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1], help="checkout to time")
    parser.add_argument("--preset", choices=("paper", "small", "tiny"), default="small")
    parser.add_argument("--ckpt", type=Path, default=None, help="weights (default: the checkout's models/model.pt)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (median reported)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    bundle = args.repo.resolve() / "bundle"
    if not (bundle / "scripts" / "subject_segmenter.py").is_file():
        raise SystemExit(
            f"{args.repo}: no bundle/scripts/subject_segmenter.py; give the root of a checkout of this project"
        )
    if args.repeats < 1:
        raise SystemExit(f"--repeats {args.repeats}: give at least 1 timed call")
    if not args.subject.is_dir():
        raise SystemExit(f"{args.subject}: not a subject folder")
    # the checkout's own bundle code, imported after its folder is first on the path
    sys.path.insert(0, str(bundle))
    import torch
    from monai.bundle import ConfigParser

    from scripts.weights import load_network_weights

    config = ConfigParser()
    config.read_config(bundle / "configs" / "inference.yaml")
    config.update({"bundle_root": str(bundle), "preset": args.preset, "device": "$torch.device('cpu')"})
    torch.manual_seed(0)
    weights = args.ckpt or Path(config.get_parsed_content("ckpt"))
    segmenter = config.get_parsed_content("segmenter")
    load_network_weights(segmenter.network, weights).eval()
    shifts = config.get_parsed_content("centre_shifts_px")
    item = {"subject": str(args.subject)}
    times = []
    for _ in range(1 + args.repeats):
        start = time.perf_counter()
        segmenter.segment(item)
        times.append(time.perf_counter() - start)
    result = {
        "repo": str(args.repo),
        "subject": str(args.subject),
        "preset": args.preset,
        "weights": str(weights),
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
