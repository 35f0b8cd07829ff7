"""Montage of clean and noisy library patterns across structures and convergence angles (PNG).

Usage: ``python benchmarks/montage.py LIBRARY -o montage.png [--dose 1000] [-n 8]``.
Patterns are picked to span the convergence semi-angles in the library (sorted, evenly spaced), with
crystals and amorphous models both shown when present. Noise: :func:`simulate.noise.add_noise` at the
given dose with 0.5 counts of read noise.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from py4dstem_prenet.simulate.library import PatternLibrary  # noqa: E402
from py4dstem_prenet.simulate.noise import DetectorEffects, add_noise  # noqa: E402


def pick(meta: dict, n: int) -> np.ndarray:
    """Indices spanning the semi-angles, a quarter of them amorphous when available."""
    order = np.argsort(meta["semiangle_mrad"])
    amorphous = order[meta["category"][order] == "amorphous"]
    crystal = order[meta["category"][order] == "crystal"]
    n_am = min(len(amorphous), n // 4)
    take = [crystal[np.linspace(0, len(crystal) - 1, n - n_am).astype(int)]]
    if n_am:
        take.append(amorphous[np.linspace(0, len(amorphous) - 1, n_am).astype(int)])
    return np.concatenate(take)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("library")
    p.add_argument("-o", "--output", default="montage.png")
    p.add_argument("--dose", type=float, default=1e3, help="electrons per pattern")
    p.add_argument("-n", type=int, default=8)
    args = p.parse_args()
    lib = PatternLibrary(args.library)
    meta = lib.metadata()
    idx = pick(meta, args.n)
    clean = lib.patterns(np.sort(idx))[np.argsort(np.argsort(idx))]
    noisy = add_noise(torch.from_numpy(clean), args.dose, torch.Generator().manual_seed(0),
                      DetectorEffects(read_noise=0.5)).numpy()
    fig, ax = plt.subplots(2, len(idx), figsize=(2.6 * len(idx), 5.6))
    for j, k in enumerate(idx):
        tilt = np.hypot(*meta["tilt_mrad"][k])
        ax[0, j].imshow(np.log10(np.clip(clean[j], 1e-7, None)), cmap="magma", vmin=-7)
        ax[0, j].set_title(f"{meta['structure'][k]}\n{meta['semiangle_mrad'][k]:.1f} mrad, "
                           f"{meta['energy_kv'][k]:.0f} kV, tilt {tilt:.0f} mrad", fontsize=7)
        ax[1, j].imshow(np.log10(noisy[j] + 1), cmap="magma")
        ax[1, j].set_title(f"{args.dose:.0e} e-, read noise 0.5", fontsize=7)
    for a in ax.ravel():
        a.set_xticks([])
        a.set_yticks([])
    ax[0, 0].set_ylabel("clean, log10 fraction")
    ax[1, 0].set_ylabel("noisy, log10(1 + counts)")
    fig.tight_layout()
    fig.savefig(args.output, dpi=80)
    print(f"wrote {args.output} ({len(lib)} patterns in the library)")


if __name__ == "__main__":
    main()
