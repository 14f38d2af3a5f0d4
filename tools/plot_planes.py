"""Picture of subjects' canonical plane stacks (one row per subject, one column per plane), labels outlined.

    python -m tools.plot_planes SUBJECT_DIR [SUBJECT_DIR ...] --out bundle/docs/images/planes.png [--frame 0]
        [--frames F [F ...]] [--titles T [T ...]]

Each row is what the network sees: the canonical planes (SA base to apex, then 2ch, 3ch, 4ch) cropped around the
heart found without labels, at one frame; missing planes are shown as "missing".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

import tools  # noqa: F401  (puts the bundle's scripts package on the path)

matplotlib.use("Agg")  # no display: write PNG files only
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from scripts.canonical import LoadCineSubjectd  # noqa: E402
from scripts.labels import UNLABELLED  # noqa: E402
from scripts.sample_geometry import parse_geometry  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subjects", nargs="+", help="subject folders (sa.nii.gz, la_*.nii.gz, optional seg_*)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--frame", type=int, default=0, help="canonical frame to show (0 = end-diastole)")
    parser.add_argument("--frames", type=int, nargs="*", help="one canonical frame per row (default: --frame)")
    parser.add_argument("--titles", nargs="*", help="one row title per subject")
    args = parser.parse_args()
    frames = args.frames or [args.frame] * len(args.subjects)
    if len(frames) != len(args.subjects):
        parser.error(f"--frames gives {len(frames)} frames for {len(args.subjects)} rows")

    load = LoadCineSubjectd()
    samples = [load({"subject": s}) for s in args.subjects]
    num_planes = samples[0]["image"].shape[1]
    figure, axes = plt.subplots(len(samples), num_planes, figsize=(1.6 * num_planes, 1.8 * len(samples)))
    axes = np.atleast_2d(axes)
    for row, (sample, frame) in enumerate(zip(samples, frames)):
        geometry = parse_geometry(sample["geometry"])
        for k in range(num_planes):
            axis = axes[row, k]
            axis.set_xticks([])
            axis.set_yticks([])
            name = geometry["planes"][k]["name"]
            if row == 0:
                axis.set_title(name, fontsize=8)
            if not bool(sample["plane_mask"][k]):
                axis.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=8, transform=axis.transAxes)
                axis.set_facecolor("0.85")
                continue
            # (H, W) index i runs along the plane's u axis: transpose so u is horizontal
            axis.imshow(sample["image"][0, k, frame].numpy().T, cmap="gray", vmin=0, vmax=1)
            label = sample["label"][0, k, frame].numpy().T.astype(float)
            label[label == UNLABELLED] = np.nan
            if np.isfinite(label).any() and np.nanmax(label) > 0:
                axis.contour(label, levels=np.arange(0.5, 6), colors=["r", "y", "c", "m", "g"], linewidths=0.6)
        title = args.titles[row] if args.titles and row < len(args.titles) else Path(args.subjects[row]).name
        axes[row, 0].set_ylabel(f"{title}\n({geometry['centre_method']})", fontsize=7)
    figure.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
