"""The QA report of a processed cube: one PNG and an HTML page that embeds it (``prenet report``).

Panels (pixels are detector pixels, angles degrees, intensities counts):

1. Shift of the optical axis from the detector centre, x and y, before centring (the measurement in
   ``prenet_origin``) and after (measured again on the corrected patterns, on the disk itself with
   :func:`center.refine_on_disk` started at the detector centre: an independent check), and the centre
   network's per-pattern confidence.
2. With the raw input: a pattern before, the same only centred and corrected, after (denoised too), the
   residual (after minus corrected raw: only the denoising shows) and the mean residual over 256
   random positions (a systematic bias of the denoiser would show there).
3. The mean centred pattern before and after the ellipse correction (with the fitted a/b, angle, their
   sigmas and the ring centre's offset from the direct beam), and its polar transform before and after
   (rings become straight lines).
5. Ring radius versus azimuth before the correction (the ring fit of the mean: its data and its
   model) and after (measured again on the corrected mean: :func:`rings.ring_harmonic`), with the
   residual second harmonic and its sigma.
4. The radial profile of the mean pattern, and the relative spread of the intensity along each ring
   (standard deviation over the azimuth / mean): an elliptical distortion shows as peaks of that spread
   at the rings, which the correction removes.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import py4DSTEM  # noqa: E402
import torch  # noqa: E402

from . import geometry  # noqa: E402
from .batches import iter_batches  # noqa: E402
from .center import refine_on_disk  # noqa: E402
from .ellipse import ring_settings  # noqa: E402
from .rings import fit_rings, ring_harmonic  # noqa: E402
from .validation import InputError  # noqa: E402


def polar_transform(pattern: np.ndarray, n_r: int | None = None, n_theta: int = 360) -> np.ndarray:
    """``(n_theta, n_r)`` polar transform of a pattern about the detector centre: rows are azimuths
    ``360 k / n_theta`` degrees from qx towards qy, columns radii ``0 .. min(Qx, Qy)/2 - 1`` pixels
    (one per pixel by default); bilinear sampling."""
    h, w = pattern.shape
    n_r = n_r or int(min(h, w) // 2)
    cx, cy = geometry.detector_center((h, w))
    angles = torch.arange(n_theta, dtype=torch.float32) * (2 * np.pi / n_theta)
    qx, qy = geometry.polar_positions(cx, cy, torch.linspace(0, min(h, w) / 2 - 1, n_r), angles)
    img = torch.as_tensor(np.asarray(pattern, dtype=np.float32))[None, None]
    return geometry.sample_bilinear(img, qx.T[None], qy.T[None])[0, 0].numpy()


def ring_statistics(pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(radius px, mean over the azimuth, standard deviation over the azimuth / mean)`` of a centred
    pattern, one value per pixel of radius; the spread is NaN where the mean is below 1% of the
    profile's 90th percentile (dark gaps between rings)."""
    polar = polar_transform(pattern)
    mean = polar.mean(axis=0)
    radius = np.linspace(0, min(pattern.shape) / 2 - 1, polar.shape[1])
    spread = polar.std(axis=0) / np.where(mean > 0, mean, 1.0)
    floor = 0.01 * np.percentile(mean, 90)  # radii with almost no intensity have no meaningful spread
    return radius, mean, np.where(mean > floor, spread, np.nan)


def residual_shifts(cube: Any, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Shift ``(dqx, dqy)`` (pixels) of each corrected pattern's direct-beam disk from the detector
    centre, measured on the disk itself (:func:`center.refine_on_disk` started at the centre)."""
    rx, ry = cube.shape[:2]
    cx, cy = geometry.detector_center(cube.shape)
    out = np.empty((2, rx * ry))
    for start, block in iter_batches(cube, batch_size, progress=False):
        n = len(block)
        qx, qy = refine_on_disk(torch.from_numpy(block), np.full(n, cx), np.full(n, cy))
        out[:, start:start + n] = qx - cx, qy - cy
    return out[0].reshape(rx, ry), out[1].reshape(rx, ry)


def _image(ax, img, title, cmap="magma", log=True, label="counts", scan=False, **kw):
    data = np.log10(np.clip(img, 0, None) + 1) if log else img
    im = ax.imshow(data, cmap=cmap, origin="upper", **kw)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("ry (scan px)" if scan else "qy (px)", fontsize=8)
    ax.set_ylabel("rx (scan px)" if scan else "qx (px)", fontsize=8)
    ax.tick_params(labelsize=7)
    plt.colorbar(im, ax=ax, fraction=0.046, label=f"log10(1 + {label})" if log else label)


def _node(cube: py4DSTEM.DataCube, name: str):
    try:
        return cube.tree(name)
    except (AssertionError, KeyError) as exc:
        raise InputError(f"the cube has no {name} node: report() needs a cube processed by prenet_preprocess "
                         "(or the file written by prenet run)") from exc


def _patterns(data: Any, idx: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Float32 patterns ``(n, Qx, Qy)`` at scan positions ``idx = (rx, ry)`` of a cube of any storage."""
    return np.stack([np.asarray(data[i, j], dtype=np.float32) for i, j in zip(*idx, strict=True)])


def _corrected_raw(raw: py4DSTEM.DataCube, origin: np.ndarray, meta, idx: tuple[np.ndarray, np.ndarray]
                   ) -> np.ndarray:
    """Raw patterns at scan positions ``idx`` put through the same geometric correction as the output."""
    block = torch.from_numpy(_patterns(raw.data, idx))
    f = geometry.distortion_matrix(tuple(block.shape[-2:]), origin[0][idx], origin[1][idx], meta["ratio"],
                                   meta["theta"])
    return geometry.warp(block, f, preserve_counts=True).numpy()


def _example_row(fig, grid, raw, result, origin, meta, n_mean: int = 256) -> None:
    """Row 2: a raw pattern, the same corrected without denoising, the processed one, their residual,
    and the mean residual over up to ``n_mean`` random positions (a systematic bias would show there)."""
    rng = np.random.default_rng(0)
    n = origin[0].size
    flat = rng.choice(n, min(n, n_mean), replace=False)
    idx = np.unravel_index(flat, origin[0].shape)
    corrected = _corrected_raw(raw, origin, meta, idx)
    processed = _patterns(result.data, idx)
    i, j = idx[0][0], idx[1][0]
    _image(fig.add_subplot(grid[1, 0]), np.asarray(raw.data[i, j], dtype=np.float32), f"raw pattern ({i}, {j})")
    _image(fig.add_subplot(grid[1, 1]), corrected[0], "raw, centred + ellipse-corrected")
    _image(fig.add_subplot(grid[1, 2]), processed[0], "processed (denoised, centred, corrected)")
    for col, (res, title) in enumerate(((processed[0] - corrected[0], "residual processed - raw (counts)"),
                                        ((processed - corrected).mean(0),
                                         f"mean residual over {len(flat)} patterns (counts)")), start=3):
        lim = max(float(np.abs(res).max()), 1e-6)
        _image(fig.add_subplot(grid[1, col]), res, title, cmap="RdBu_r", log=False, vmin=-lim, vmax=lim)


def _ring_panel(ax, mean_before: np.ndarray, mean_after: np.ndarray, meta) -> dict[str, float]:
    """Ring radius minus its mean versus azimuth, before (ring fit of the mean: data points = residual +
    model, line = model) and after (measured on the corrected mean); returns the summary numbers."""
    settings = ring_settings()
    fit = fit_rings(mean_before, settings=settings)
    out = {"ellipse_measurable": float(fit.measurable)}
    if fit.measurable:
        cx, cy = geometry.detector_center(mean_before.shape)
        phi = fit.azimuth
        e = (fit.ratio - 1) / (fit.ratio + 1)
        for k, radius in enumerate(fit.radii[: fit.shift.shape[0]]):
            model = radius * e * np.cos(2 * (phi - fit.theta))
            line = ax.plot(np.degrees(phi), model, "-", lw=1)[0]
            ax.plot(np.degrees(phi), fit.shift[k] + model, "o", ms=3, color=line.get_color(),
                    label=f"before, ring {radius:.0f} px")
        ux, uy = geometry.correct_points(np.array([fit.x0]), np.array([fit.y0]), cx, cy, fit.ratio, fit.theta)
        after = ring_harmonic(mean_after, x0=cx + ux[0], y0=cy + uy[0], settings=settings)
        if after.measurable:
            for k in range(after.shift.shape[0]):
                ax.plot(np.degrees(after.azimuth), after.shift[k], "k.", ms=3, label="after" if k == 0 else None)
            out.update(harmonic_after_px=after.amplitude, harmonic_after_sigma_px=after.sigma)
            ax.set_title(f"ring radius vs azimuth\n2nd harmonic before {fit.radii.mean() * e:.2f} px, after "
                         f"{after.amplitude:.3f} +- {after.sigma:.3f} px", fontsize=9)
        out.update(ratio_sigma=fit.ratio_sigma, theta_sigma_deg=float(np.degrees(fit.theta_sigma)),
                   ring_offset_qx_px=fit.x0 - cx, ring_offset_qy_px=fit.y0 - cy)
    else:
        ax.set_title(f"ring radius vs azimuth: not measurable\n{fit.reason[:70]}", fontsize=8)
    ax.set(xlabel="azimuth from qx (deg)", ylabel="ring radius - mean (px)")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    return out


def report_figure(result: py4DSTEM.DataCube, raw: py4DSTEM.DataCube | None = None,
                  truth: dict | None = None) -> tuple[plt.Figure, dict[str, float]]:
    """The report figure of a processed cube (see the module docstring) and its summary numbers.

    ``result``: the cube returned by ``prenet_preprocess`` or read from ``prenet run``'s output;
    ``raw``: the input cube (for example patterns before processing; optional); ``truth``: known
    ``qx0, qy0`` maps (pixels) of a simulated cube, shown as the centre error instead of the confidence.
    """
    origin = _node(result, "prenet_origin").data
    ell_node = _node(result, "prenet_ellipse")
    meta = dict(ell_node.metadata["prenet_ellipse"]._params)
    mean_before, mean_after = ell_node.data
    cx, cy = geometry.detector_center(result.data.shape)
    after_x, after_y = residual_shifts(result.data)
    before_x, before_y = origin[0] - cx, origin[1] - cy
    lim = max(np.abs(before_x).max(), np.abs(before_y).max(), 1e-3)
    fig = plt.figure(figsize=(20, 17))
    grid = fig.add_gridspec(4, 5, height_ratios=[1, 1, 1, 0.9])
    shift_kw = {"cmap": "RdBu_r", "log": False, "label": "px", "scan": True}
    _image(fig.add_subplot(grid[0, 0]), before_x, "qx shift before centring (px)", vmin=-lim, vmax=lim, **shift_kw)
    _image(fig.add_subplot(grid[0, 1]), before_y, "qy shift before centring (px)", vmin=-lim, vmax=lim, **shift_kw)
    res_lim = max(np.abs(after_x).max(), np.abs(after_y).max(), 1e-3)
    _image(fig.add_subplot(grid[0, 2]), after_x, f"qx shift after (px), rms {np.sqrt(np.mean(after_x**2)):.3f}",
           vmin=-res_lim, vmax=res_lim, **shift_kw)
    _image(fig.add_subplot(grid[0, 3]), after_y, f"qy shift after (px), rms {np.sqrt(np.mean(after_y**2)):.3f}",
           vmin=-res_lim, vmax=res_lim, **shift_kw)
    numbers = {"ratio": float(meta["ratio"]), "theta_deg": float(np.degrees(meta["theta"])),
               "mean_confidence": float(origin[2].mean()), "mean_shift_before_px": float(np.hypot(before_x, before_y)
                                                                                       .mean()),
               "rms_shift_after_px": float(np.sqrt(np.mean(after_x**2 + after_y**2)))}
    if truth is not None:
        err = np.hypot(origin[0] - truth["qx0"], origin[1] - truth["qy0"])
        numbers["centre_error_mean_px"] = float(err.mean())
        _image(fig.add_subplot(grid[0, 4]), err, f"centre error vs truth (px), mean {err.mean():.3f}",
               cmap="cividis", log=False, label="px", scan=True)
    else:
        _image(fig.add_subplot(grid[0, 4]), origin[2], "centre confidence", cmap="cividis", log=False,
               label="0..1", scan=True, vmin=0, vmax=1)
    if raw is not None:
        _example_row(fig, grid, raw, result, origin, meta)
    _image(fig.add_subplot(grid[2, 0]), mean_before, "mean centred pattern, before ellipse correction")
    if int(meta.get("measurable", 1)):
        title = (f"after: a/b = {meta['ratio']:.4f} +- {meta.get('ratio_sigma', np.nan):.4f} at "
                 f"{np.degrees(meta['theta']):.1f} +- {np.degrees(meta.get('theta_sigma', np.nan)):.1f} deg"
                 "\nring centre "
                 f"- direct beam = ({meta.get('ring_center_offset_qx', np.nan):.2f}, "
                 f"{meta.get('ring_center_offset_qy', np.nan):.2f}) px")
    else:
        title = f"not measurable: {str(meta.get('reason', ''))[:60]}\n(no ellipse correction)"
    _image(fig.add_subplot(grid[2, 1]), mean_after, title)
    for col, (m, when) in enumerate(((mean_before, "before"), (mean_after, "after")), start=2):
        ax = fig.add_subplot(grid[2, col])
        polar = np.log10(np.clip(polar_transform(m), 0, None) + 1)
        im = ax.imshow(polar, aspect="auto", cmap="magma", extent=(0, min(m.shape) / 2 - 1, 360, 0))
        ax.set_title(f"polar transform {when} (rings straight after)", fontsize=9)
        ax.set_xlabel("radius (px)", fontsize=8)
        ax.set_ylabel("azimuth from qx (deg)", fontsize=8)
        plt.colorbar(im, ax=ax, fraction=0.046, label="log10(1 + counts)")
    ax_p, ax_s = fig.add_subplot(grid[3, 0:2]), fig.add_subplot(grid[3, 2:4])
    numbers.update(_ring_panel(fig.add_subplot(grid[3, 4]), mean_before, mean_after, meta))
    for m, when, style in ((mean_before, "before", "--"), (mean_after, "after", "-")):
        radius, profile, spread = ring_statistics(m)
        ax_p.semilogy(radius, np.clip(profile, 1e-6, None), style, label=when)
        ax_s.plot(radius, spread, style, label=f"{when}: median {np.nanmedian(spread[radius > 3]):.3f}")
    ax_p.set(xlabel="radius (px)", ylabel="mean counts per pattern", title="radial profile of the mean pattern")
    ax_s.set(xlabel="radius (px)", ylabel="std / mean along the ring",
             title="spread of the intensity along each ring (ellipticity shows as peaks at the rings)")
    for ax in (ax_p, ax_s):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"py4dstem-prenet report: {result.name}, scan {result.data.shape[:2]}, detector "
                 f"{result.data.shape[2:]}", fontsize=13)
    fig.tight_layout()
    return fig, numbers


#: Figure formats :func:`report` writes, by the output's suffix.
REPORT_FORMATS = (".png", ".pdf", ".svg")


def report(result: py4DSTEM.DataCube, path: str | Path, raw: py4DSTEM.DataCube | None = None,
           truth: dict | None = None) -> tuple[Path, Path]:
    """Write the report figure to ``path`` in the format its suffix names (.png, .pdf or .svg; no
    suffix: .png) and an HTML page beside it (same name, ``.html``) that embeds a PNG of it with the
    summary numbers and the models used. Returns ``(figure, html)``."""
    path = Path(path)
    path = path if path.suffix else path.with_suffix(".png")
    if path.suffix.lower() not in REPORT_FORMATS:
        raise ValueError(f"report figure {path}: the suffix must be one of {REPORT_FORMATS}")
    fig, numbers = report_figure(result, raw, truth)
    fig.savefig(path, dpi=72)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    plt.close(fig)
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" for k, v in numbers.items())
    models = []
    for name in ("prenet_origin", "prenet_ellipse"):
        (meta,) = result.tree(name).metadata.values()
        models.append(f"<li>{html.escape(meta.name)}: {html.escape(str(meta['model']))} "
                      f"(sha256 {html.escape(str(meta['weights_sha256'])[:12])}..., version "
                      f"{html.escape(str(meta['version']))})</li>")
    png = base64.b64encode(buffer.getvalue()).decode()
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>prenet report: {html.escape(result.name)}"
            f"</title></head><body><h1>py4dstem-prenet report: {html.escape(result.name)}</h1>"
            f"<table border='1' cellpadding='4'>{rows}</table><ul>{''.join(models)}</ul>"
            f"<img src='data:image/png;base64,{png}' style='max-width:100%'></body></html>")
    page_path = path.with_suffix(".html")
    page_path.write_text(page)
    return path, page_path
