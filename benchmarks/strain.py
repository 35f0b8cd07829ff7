"""Strain maps of an unstrained crystal: py4DSTEM's classical calibration beside ours
(:mod:`py4dstem_prenet.evaluate.strain`).

Usage: ``python benchmarks/strain.py [--scan 16 16] [--dose 2000] [--seeds 0 1 2] [--device cpu]
[--sources crystal_on_zone crystal_tilted] [--out benchmarks/results]``. After a line naming the default
weights: for every source the full table for the first seed and the RMS strain error of every route over
all seeds. Writes ``strain.txt`` (the printed text) and ``strain_maps.png`` (the four maps of every route,
first source and seed, one colour scale in %) to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import py4dstem_prenet  # noqa: E402, F401  (registers the DataCube methods)
from py4dstem_prenet.evaluate.harness import Table  # noqa: E402
from py4dstem_prenet.evaluate.strain import COMPONENTS, StrainComparison, compare_strain  # noqa: E402
from py4dstem_prenet.weights import load_model  # noqa: E402

LABELS = {"e_xx": "e_xx (%)", "e_yy": "e_yy (%)", "e_xy": "e_xy (%)", "theta": "theta (0.01 rad)"}


def plot_maps(result: StrainComparison, path: Path, limit: float) -> None:
    """One row per route, one column per component, all on the colour scale +-``limit`` (%); positions
    without a lattice fit in grey; each panel titled with its mean +- standard deviation."""
    routes = result.routes
    fig, axes = plt.subplots(len(routes), len(COMPONENTS), figsize=(3.2 * len(COMPONENTS), 2.9 * len(routes)),
                             squeeze=False, constrained_layout=True)
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("0.6")
    image = None
    for row, (name, route) in zip(axes, routes.items(), strict=True):
        m = route.fitted
        for i, (ax, comp) in enumerate(zip(row, COMPONENTS, strict=True)):
            image = ax.imshow(route.strain[i], cmap=cmap, vmin=-limit, vmax=limit)
            stats = f"{np.mean(route.strain[i, m]):+.2f} +- {np.std(route.strain[i, m]):.2f}" if m.any() else "no fit"
            ax.set_title(f"{LABELS[comp]}: {stats}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name, fontsize=9)
    t = result.truth
    fig.suptitle(f"Unstrained {t['source']}, true ellipse a/b {t['ratio']:.3f} at {math.degrees(t['theta']):.0f} deg, "
                 f"{t['dose']:.0f} e-/pattern: strain error maps (truth 0; grey: no lattice fit)", fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.5, extend="both", label="% (theta: 0.01 rad)")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scan", type=int, nargs=2, default=[16, 16])
    p.add_argument("--dose", type=float, default=2000.0, help="electrons per pattern")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sources", nargs="+", default=["crystal_on_zone", "crystal_tilted"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=float, default=5.0, help="colour scale of the maps, +-%%")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    models = [load_model(task, "default").entry for task in ("denoise", "center", "ellipse")]
    texts = ["Default weights: " + ", ".join(f"{m.name} (sha256 {m.sha256[:12]})" for m in models)]
    print(texts[0], flush=True)
    for k, source in enumerate(args.sources):
        runs = []
        for seed in args.seeds:
            t0 = time.perf_counter()
            runs.append(compare_strain(tuple(args.scan), args.dose, seed=seed, device=args.device, source=source))
            seconds = time.perf_counter() - t0
            if seed == args.seeds[0]:
                texts.append(runs[0].table().text() + f"\n(seed {seed}; whole comparison {seconds:.1f} s, "
                             f"torch threads {torch.get_num_threads()}, device {args.device})")
                print(texts[-1], flush=True)
                if k == 0:
                    plot_maps(runs[0], args.out / "strain_maps.png", args.limit)
        summary = Table(f"RMS strain error (%) of {source} over seeds {args.seeds}",
                        ["route", *[f"seed {s}" for s in args.seeds], "mean", "fitted (mean)"])
        for name in runs[0].routes:
            rms = [r.routes[name].rms() for r in runs]
            fitted = np.mean([r.routes[name].fitted.mean() for r in runs])
            summary.rows.append([name, *rms, float(np.mean(rms)), f"{100 * fitted:.0f}%"])
        texts.append(summary.text())
        print(texts[-1], flush=True)
    (args.out / "strain.txt").write_text("\n\n".join(texts) + "\n")


if __name__ == "__main__":
    main()
