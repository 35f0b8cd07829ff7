"""``prenet evaluate``: held-out simulations, our methods (through the public DataCube methods) beside
py4DSTEM's classical ones, one printed table per task.

Held-out means: structures of the "test" split (:func:`py4dstem_prenet.train.data.split_of`), never seen
in training, simulated in their own library (other orientations, optics and thicknesses).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import py4DSTEM
import torch

from .. import geometry
from ..center import measure_origins
from ..simulate.augment import AugmentRanges, distort, draw_geometry
from ..simulate.library import PatternLibrary
from ..simulate.noise import DetectorEffects, add_noise
from ..train.data import TrainingData
from . import classical

DOSES = (1e2, 1e3, 1e4, 1e5)
READ_NOISE = 0.5  # counts


@dataclass
class Table:
    """Rows of results; ``text()`` renders an aligned plain-text table."""

    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)

    def text(self) -> str:
        cells = [self.columns] + [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r] for r in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        lines = [self.title, "  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
        return "\n".join(lines)


def _center_errors(qx, qy, tx, ty) -> dict[str, float]:
    dx, dy = np.abs(qx - tx), np.abs(qy - ty)
    r = np.hypot(dx, dy)
    return {"MAE-R": float(r.mean()), "MAE-X": float(dx.mean()), "MAE-Y": float(dy.mean()),
            "P95-R": float(np.percentile(r, 95))}


def _ours_center(noisy: np.ndarray, model: str, device: str) -> tuple[np.ndarray, np.ndarray]:
    cube = py4DSTEM.DataCube(data=noisy[None])
    node = cube.prenet_center(model=model, device=device, align=False, progress=False)
    return node.data[0][0], node.data[1][0]


def evaluate_center(library: str, model: str = "default", device: str = "auto", n: int = 200,
                    seed: int = 0, methods: tuple[str, ...] = ("com", "get_origin", "get_origin_friedel")) -> Table:
    """Centre errors (px) by dose and by category / convergence angle / tilt, ours vs classical."""
    data = TrainingData(library, "test", AugmentRanges(shift_frac=0.1))
    meta = PatternLibrary(library).metadata()
    test_rows = np.flatnonzero(np.isin(np.asarray(meta["structure"]).astype(str), data.structures))
    rng = np.random.default_rng([seed, 1])
    pick = rng.integers(0, len(data.patterns), n)
    params = draw_geometry(rng, n, data.shape, data.ranges)
    clean = distort(data.patterns[pick], params)
    groups = {
        "category": np.asarray(meta["category"]).astype(str)[test_rows][pick],
        "semiangle": np.where(np.asarray(meta["semiangle_mrad"])[test_rows][pick] < 3, "alpha<3mrad", "alpha>=3mrad"),
        "tilt": np.where(np.hypot(*np.asarray(meta["tilt_mrad"])[test_rows][pick].T) > 1, "tilted", "on-zone"),
    }
    table = Table(f"Centre: {n} held-out patterns per dose, {data.shape[0]}x{data.shape[1]}, errors in px",
                  ["dose", "group", "method", "MAE-R", "MAE-X", "MAE-Y", "P95-R", "ms/pattern"])
    gen = torch.Generator().manual_seed(seed)
    for dose in DOSES:
        noisy = add_noise(clean, dose, gen, DetectorEffects(read_noise=READ_NOISE)).numpy()
        results = {}
        for name in ("ours", "ours without disk refinement", *methods):
            t0 = time.perf_counter()
            if name == "ours":
                qx, qy = _ours_center(noisy, model, device)
            elif name == "ours without disk refinement":
                found, _, _ = measure_origins(noisy[None], model, device, progress=False, refine=False)
                qx, qy = found.qx0[0], found.qy0[0]
            else:
                qx, qy = classical.CENTER_METHODS[name](noisy)
            results[name] = (qx, qy, 1e3 * (time.perf_counter() - t0) / n)
        for group, labels in [("all", np.full(n, "all"))] + list(groups.items()):
            for value in np.unique(labels):
                sel = labels == value
                for name, (qx, qy, ms) in results.items():
                    e = _center_errors(qx[sel], qy[sel], params["qx0"][sel], params["qy0"][sel])
                    table.rows.append([f"{dose:.0e}", value if group != "all" else "all", name, *e.values(), ms])
    return table


def evaluate_center_scans(library: str, model: str = "default", device: str = "auto", cubes: int = 6,
                          scan: tuple[int, int] = (8, 8), seed: int = 0,
                          methods: tuple[str, ...] = ("com", "get_origin", "get_origin_friedel")) -> Table:
    """Centre errors (px) on held-out scans (:func:`_scan_cube`: two patterns blended across the scan,
    drift of a few px, 0.2 px jitter), ours with and without the scan context, and classical."""
    data = TrainingData(library, "test")
    rng = np.random.default_rng([seed, 4])
    scans = [_scan_cube(data, rng, scan) for _ in range(cubes)]
    gen = torch.Generator().manual_seed(seed)
    table = Table(f"Centre on scans: {cubes} held-out {scan[0]}x{scan[1]} scans per dose, {data.shape[0]}x"
                  f"{data.shape[1]}, errors in px", ["dose", "method", "MAE-R", "MAE-X", "MAE-Y", "P95-R"])
    for dose in DOSES:
        found: dict[str, list] = {k: [] for k in ("ours", "ours without scan context", *methods)}
        truth = []
        for clean, params in scans:
            flat = torch.from_numpy(clean.reshape(-1, *data.shape) * dose)
            noisy = add_noise(flat, 1.0, gen, DetectorEffects(read_noise=READ_NOISE)).numpy()
            truth.append((params["qx0"], params["qy0"]))
            for name, context in (("ours", True), ("ours without scan context", False)):
                o, _, _ = measure_origins(noisy.reshape(clean.shape), model, device, progress=False,
                                          scan_context=context)
                found[name].append((o.qx0.ravel(), o.qy0.ravel()))
            for name in methods:
                found[name].append(classical.CENTER_METHODS[name](noisy))
        tx, ty = (np.concatenate(t) for t in zip(*truth, strict=True))
        for name, res in found.items():
            qx, qy = (np.concatenate(r) for r in zip(*res, strict=True))
            table.rows.append([f"{dose:.0e}", name, *_center_errors(qx, qy, tx, ty).values()])
    return table


def evaluate_ellipse(library: str, model: str = "default", device: str = "auto", n: int = 60,
                     seed: int = 0) -> Table:
    """Axis-ratio and angle errors on noisy means of held-out patterns, ours vs py4DSTEM's fits."""
    data = TrainingData(library, "test")
    rng = np.random.default_rng([seed, 2])
    means, labels = data.ellipse_means(rng, torch.Generator().manual_seed(seed), n, (8, 64))
    table = Table(f"Ellipse: {n} noisy mean patterns of held-out structures (a/b 1.00-1.12, any angle)",
                  ["method", "ratio MAE", "angle MAE (deg, a/b>1.01)", "failures"])
    names = ("ours",) + classical.ELLIPSE_METHODS
    found = {k: [] for k in names}
    for m in means.numpy():
        cube = py4DSTEM.DataCube(data=m[None, None])
        cube.calibration.set_origin(geometry.detector_center(m.shape))
        fit = cube.prenet_ellipse(model=model, device=device, correct=False, progress=False)
        found["ours"].append((fit.ratio, fit.theta))
        for k in classical.ELLIPSE_METHODS:
            found[k].append(classical.py4dstem_fit_ellipse(m, k))
    sel = labels["ratio"] > 1.01
    for k in names:
        ok = np.array([f is not None for f in found[k]])
        r = np.array([f[0] if f else np.nan for f in found[k]])
        t = np.array([f[1] if f else np.nan for f in found[k]])
        ang = np.degrees(geometry.angle_difference(np.nan_to_num(t), labels["theta"]))
        table.rows.append([k, float(np.nanmean(np.abs(r - labels["ratio"]))) if ok.any() else float("nan"),
                           float(np.mean(ang[sel & ok])) if (sel & ok).any() else float("nan"),
                           f"{int((~ok).sum())}/{n}"])
    return table


def _scan_cube(data: TrainingData, rng: np.random.Generator, scan: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """Clean scan ``(Rx, Ry, Q, Q)`` (fractions per pixel): 2 held-out patterns blended across the scan,
    with a smooth descan drift of a few px and an ellipse, as neighbouring positions look in a real scan;
    and its geometry (true ``qx0, qy0`` per position, flat, pixels)."""
    a, b = data.patterns[rng.integers(0, len(data.patterns), 2)]
    w = np.linspace(0, 1, scan[0] * scan[1])
    ideal = (torch.from_numpy(1 - w).float().view(-1, 1, 1) * a + torch.from_numpy(w).float().view(-1, 1, 1) * b)
    u, v = np.meshgrid(np.linspace(-1, 1, scan[0]), np.linspace(-1, 1, scan[1]), indexing="ij")
    cx, cy = geometry.detector_center(data.shape)
    params = {"qx0": (cx + 3 * u + rng.normal(0, 0.2, scan)).ravel(),
              "qy0": (cy - 2 * v + rng.normal(0, 0.2, scan)).ravel(), "ratio": rng.uniform(1, 1.1),
              "theta": rng.uniform(-1.5, 1.5), "rotation": 0.0, "scale": 1.0}
    return distort(ideal, params).numpy().reshape(*scan, *data.shape), params


def evaluate_denoise(library: str, model: str = "default", device: str = "auto", cubes: int = 4,
                     scan: tuple[int, int] = (8, 8), seed: int = 0) -> Table:
    """MSE (counts^2) and PSNR (dB) before and after denoising, by dose: ours vs the oracle Gaussian
    filter and the oracle low-rank reconstruction (both tuned on the truth)."""
    data = TrainingData(library, "test")
    rng = np.random.default_rng([seed, 3])
    clean_cubes = [_scan_cube(data, rng, scan)[0] for _ in range(cubes)]
    gen = torch.Generator().manual_seed(seed)
    table = Table(f"Denoising: {cubes} held-out {scan[0]}x{scan[1]} scans per dose, {data.shape[0]}x{data.shape[1]} "
                  "px; MSE in counts^2, PSNR in dB (peak = max of the clean scan)",
                  ["dose", "method", "MSE", "PSNR", "MSE vs noisy", "PSNR gain"])
    for dose in DOSES:
        scores = {k: [] for k in ("noisy", "ours", "gaussian (oracle)", "low-rank (oracle)")}
        for clean in clean_cubes:
            expected = clean * dose
            flat = torch.from_numpy(expected.reshape(-1, *data.shape)).float()
            noisy = add_noise(flat, 1.0, gen, DetectorEffects(read_noise=READ_NOISE)).numpy().reshape(expected.shape)
            den = py4DSTEM.DataCube(data=noisy).prenet_denoise(model=model, device=device, progress=False).data
            n_flat = noisy.reshape(-1, *data.shape)
            e_flat = expected.reshape(-1, *data.shape)
            for k, est in (("noisy", n_flat), ("ours", den.reshape(n_flat.shape)),
                           ("gaussian (oracle)", classical.gaussian_oracle(n_flat, e_flat)),
                           ("low-rank (oracle)", classical.lowrank_oracle(n_flat, e_flat))):
                scores[k].append((classical.mse(est, e_flat), classical.psnr(est, e_flat)))
        base_mse, base_psnr = np.mean(scores["noisy"], axis=0)
        for k, vals in scores.items():
            m, p = np.mean(vals, axis=0)
            table.rows.append([f"{dose:.0e}", k, float(m), float(p), f"{100 * (m / base_mse - 1):+.1f}%",
                               f"{p - base_psnr:+.2f}"])
    return table


def evaluate_all(library: str, device: str = "auto", quick: bool = False,
                 tasks: tuple[str, ...] = ("center", "center-scans", "ellipse", "denoise")) -> list[Table]:
    """The tables of ``tasks`` (``quick``: fewer samples, for smoke tests)."""
    scale = 0.2 if quick else 1.0
    run = {"center": lambda: evaluate_center(library, device=device, n=max(10, int(200 * scale))),
           "center-scans": lambda: evaluate_center_scans(library, device=device, cubes=max(1, int(6 * scale))),
           "ellipse": lambda: evaluate_ellipse(library, device=device, n=max(6, int(60 * scale))),
           "denoise": lambda: evaluate_denoise(library, device=device, cubes=max(1, int(4 * scale)))}
    return [run[t]() for t in tasks]


def manifest_metrics(table: Table) -> dict:
    """The rows of ``table`` measured for our default model, keyed for the weights manifest."""
    cols = table.columns
    if table.title.startswith("Centre on scans"):
        rows = [r for r in table.rows if r[1] == "ours"]
        return {"held_out_center_scans_px": {r[0]: dict(zip(cols[2:6], r[2:6], strict=True)) for r in rows}}
    if table.title.startswith("Centre"):
        rows = [r for r in table.rows if r[1] == "all" and r[2] == "ours"]
        return {"held_out_center_px": {r[0]: dict(zip(cols[3:7], r[3:7], strict=True)) for r in rows}}
    if table.title.startswith("Ellipse"):
        r = next(r for r in table.rows if r[0] == "ours")
        return {"held_out_ellipse": {"ratio_mae": r[1], "angle_mae_deg": r[2], "failures": r[3]}}
    rows = [r for r in table.rows if r[1] == "ours"]
    return {"held_out_denoise": {r[0]: {"mse_change": r[4], "psnr_gain_db": r[5]} for r in rows}}
