"""Figures: the summary PNG of a processed cube (``prenet demo``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import py4DSTEM  # noqa: E402


def _show(ax, img, title, cmap="magma", log=True, label="counts"):
    data = np.log10(np.clip(img, 0, None) + 1) if log else img
    im = ax.imshow(data, cmap=cmap, origin="upper")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("qy (px)" if img.shape[0] > 32 else "ry (scan px)")
    ax.set_ylabel("qx (px)" if img.shape[0] > 32 else "rx (scan px)")
    plt.colorbar(im, ax=ax, fraction=0.046, label=f"log10(1 + {label})" if log else label)


def summary_figure(raw: py4DSTEM.DataCube, result: py4DSTEM.DataCube, truth: dict | None,
                   path: str | Path) -> Path:
    """Six panels: a raw and a processed pattern, the measured origin maps (and their error when the
    truth is known), and the mean centred pattern before and after the ellipse correction."""
    origin = raw.tree("prenet_origin")
    ell = raw.tree("prenet_ellipse")
    md = ell.metadata["prenet_ellipse"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 8))
    _show(axes[0, 0], raw.data[0, 0], "raw pattern (0, 0)")
    _show(axes[0, 1], result.data[0, 0], "denoised + centred + ellipse-corrected (0, 0)")
    _show(axes[0, 2], origin.data[0], "measured qx0 (px)", cmap="viridis", log=False, label="px")
    if truth is not None:
        err = np.hypot(origin.data[0] - truth["qx0"], origin.data[1] - truth["qy0"])
        _show(axes[1, 0], err, f"radial centre error (px), mean {err.mean():.3f}", cmap="cividis", log=False,
              label="px")
    else:
        _show(axes[1, 0], origin.data[2], "centre confidence", cmap="cividis", log=False, label="0..1")
    _show(axes[1, 1], ell.data[0], "mean centred pattern (before ellipse correction)")
    title = f"after: a/b = {md['ratio']:.4f}, theta = {np.degrees(md['theta']):.1f} deg"
    if truth is not None:
        title += f"\n(truth {truth['ratio']:.4f}, {np.degrees(truth['theta']):.1f} deg)"
    _show(axes[1, 2], ell.data[1], title)
    fig.suptitle("py4dstem-prenet summary", fontsize=12)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
