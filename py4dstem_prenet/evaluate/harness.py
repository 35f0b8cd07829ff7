"""``prenet evaluate``: held-out simulations, our methods (through the public DataCube methods) beside
py4DSTEM's classical ones, one printed table per task.

Held-out means: structures of the "test" split (:func:`py4dstem_prenet.train.data.split_of`: structure
families never seen in training), simulated in their own library (e.g. ``prenet simulate --recipe hard
--split test``). Every sample (or scan) is recorded on its own detector from the one detector model
(:func:`simulate.noise.draw_detector`: ideal, counting, integrating; some behind a beam stop), scans come
from :func:`simulate.scans.build_scan`, and every table reports each task by condition (dose, detector,
bit depth, read noise, beam stop, beam near the edge, detector size, category, thickness, tilt,
convergence; scans: drift and specimen) with the Poisson Cramer-Rao bound of the centre
(:func:`evaluate.crb.centre_crb`) beside the centre errors. Inputs the package refuses
(:class:`validation.InputError`) count as failures.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import py4DSTEM
import torch

from .. import geometry
from ..center import measure_origins
from ..simulate.augment import AugmentRanges, distort, draw_geometry
from ..simulate.library import PatternLibrary
from ..simulate.noise import KINDS, DetectorEffects, add_noise, draw_detector, effects_record, expected_counts
from ..simulate.scans import ScanRanges, build_scan
from ..train.data import TrainingData
from ..validation import MIN_DETECTOR, InputError
from . import classical
from .crb import centre_crb

DOSES = (1e2, 1e3, 1e4, 1e5)
BEAM_STOP_FRACTION = 0.3  # samples / scans recorded behind a beam stop
CENTER_COLUMNS = ["condition", "value", "method", "n", "MAE-R", "RMS-R", "P95-R", "failed", "CRB-R", "ms/pattern"]
RING_FRACTION, RING_GRAINS = 0.1, 24  # centre samples that are polycrystals: mean of 24 rotated grains
BINNED_FRACTION = 0.25  # centre samples on a 2 x 2 binned detector (half the pixels; if >= MIN_DETECTOR)


@dataclass
class Table:
    """Rows of results; ``text()`` renders an aligned plain-text table. ``records``: one dict per sample
    (its library row, truth, dose, every detector parameter, conditions and each method's result), for
    tracing a row back to the patterns behind it."""

    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)

    def text(self) -> str:
        cells = [self.columns] + [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r] for r in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        lines = [self.title, "  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
        return "\n".join(lines)


def _center_errors(qx, qy, tx, ty) -> dict[str, float | int]:
    """Radial errors of the measured positions (NaN = not measured: counted in "failed")."""
    r = np.hypot(qx - tx, qy - ty)
    ok = np.isfinite(r)
    r = r[ok]
    if not r.size:
        return {"MAE-R": float("nan"), "RMS-R": float("nan"), "P95-R": float("nan"), "failed": int((~ok).sum())}
    return {"MAE-R": float(r.mean()), "RMS-R": float(np.sqrt((r * r).mean())), "P95-R": float(np.percentile(r, 95)),
            "failed": int((~ok).sum())}


def _or_refused(fn, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``fn()`` -> ``(qx, qy)``, or NaNs (``n`` positions) when the package refuses the input
    (:class:`validation.InputError`, e.g. a scan holding empty patterns behind a beam stop)."""
    try:
        qx, qy = fn()
    except InputError:
        return np.full(n, np.nan), np.full(n, np.nan)
    return np.asarray(qx, dtype=np.float64).ravel(), np.asarray(qy, dtype=np.float64).ravel()


def _ours_center(noisy: np.ndarray, model: str, device: str) -> tuple[np.ndarray, np.ndarray]:
    cube = py4DSTEM.DataCube(data=noisy[None])
    node = cube.prenet_measure_origin(model=model, device=device, progress=False)
    return node.data[0][0], node.data[1][0]


def _rms(values: np.ndarray) -> float:
    """RMS of a bound over samples (``inf`` when any sample holds no information)."""
    return float(np.sqrt(np.mean(np.square(values))))


def _bins(values: np.ndarray, edges: tuple[float, ...], unit: str, fmt: str = "{:g}") -> np.ndarray:
    """Labels ``"lo-hi unit"`` of ``values`` in the bins between ``edges``."""
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    return np.array([f"{fmt.format(edges[k])}-{fmt.format(edges[k + 1])} {unit}" for k in idx])


def _optics_conditions(meta: dict, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Specimen/optics condition labels of library rows: category, thickness, tilt, convergence."""
    tilt = np.hypot(*np.asarray(meta["tilt_mrad"])[rows].T)
    return {
        "category": np.asarray(meta["category"]).astype(str)[rows],
        "thickness": _bins(np.asarray(meta["thickness_A"])[rows] / 10, (0, 10, 20, 30.01), "nm", "{:.0f}"),
        "tilt": np.where(tilt < 0.5, "on zone", _bins(tilt, (0.5, 5, 10, 17.46), "mrad", "{:.3g}")),
        "convergence": _bins(np.asarray(meta["semiangle_mrad"])[rows], (0, 2, 8, 25.01), "mrad", "{:.0f}"),
    }


def _detector_conditions(effects: list[DetectorEffects], kinds: list[str]) -> dict[str, np.ndarray]:
    """Detector condition labels of each sample: type, bit depth, read noise, beam stop."""
    return {
        "detector": np.array(kinds),
        "bit depth": np.array([f"{e.bit_depth} bit" if e.bit_depth else "unlimited" for e in effects]),
        "read noise": np.array(["0 e" if not e.read_noise else "0-1 e" if e.read_noise < 1 else "1-2 e"
                                for e in effects]),
        "beam stop": np.array(["round + arm" if e.stop_radius else "arm" if e.stop_width else "none"
                               for e in effects]),
    }


def _table_rows(table: Table, conditions: dict[str, np.ndarray], results: dict, truth: tuple, crb: np.ndarray,
                ms: dict[str, float]) -> None:
    """One row per (condition, value, method): errors against ``truth`` and the Cramer-Rao bound."""
    n = len(crb)
    for cond, labels in [("all", np.full(n, "all")), *conditions.items()]:
        for value in sorted(np.unique(labels), key=_natural):
            sel = labels == value
            for name, (qx, qy) in results.items():
                e = _center_errors(qx[sel], qy[sel], truth[0][sel], truth[1][sel])
                table.rows.append([cond, value, name, int(sel.sum()), *e.values(), _rms(crb[sel]),
                                   ms[name] if cond == "all" else ""])


def _natural(label: str):
    """Sort key: labels starting with a number sort numerically."""
    head = label.split("-")[0].split(" ")[0]
    try:
        return (0, float(head), label)
    except ValueError:
        return (1, 0.0, label)


def _draw_detectors(rng: np.random.Generator, n: int, shapes: list[tuple[int, int]]
                    ) -> tuple[list[str], list[DetectorEffects]]:
    """One detector per sample: the kinds in turn (ideal, counting, integrating), 30 % with a beam stop."""
    kinds = [KINDS[(i // len(DOSES)) % len(KINDS)] for i in range(n)]
    return kinds, [draw_detector(rng, k, beam_stop=BEAM_STOP_FRACTION, shape=s)
                   for k, s in zip(kinds, shapes, strict=True)]


def _bin2(x: torch.Tensor) -> torch.Tensor:
    """2 x 2 binning (sum) of ``(N, Q, Q)``: a detector of half the pixels."""
    return x.reshape(x.shape[0], x.shape[1] // 2, 2, x.shape[2] // 2, 2).sum((2, 4))


def evaluate_center(library: str, model: str = "default", device: str = "auto", n: int = 800,
                    seed: int = 0, methods: tuple[str, ...] = ("com", "get_origin", "get_origin_friedel")) -> Table:
    """Centre errors (px) of held-out patterns by condition, ours vs classical, beside the Poisson CRB.

    Each sample draws its own pattern (10 % a polycrystal: the mean of 24 in-plane rotations), a shift
    (15 % near or across the detector edge), a dose (cycling
    :data:`DOSES`), a detector (the kinds in turn, :func:`simulate.noise.draw_detector`, 30 % with a beam
    stop) and a detector size (25 % binned 2 x 2). The "CRB-R" column is the RMS over the samples of the
    radial Cramer-Rao bound (:func:`evaluate.crb.centre_crb`) of each sample's clean pattern on its detector,
    comparable to RMS-R.
    """
    data = TrainingData(library, "test", AugmentRanges(shift_frac=0.1, far_fraction=0.15, far_shift_frac=0.45))
    meta = PatternLibrary(library).metadata()
    test_rows = np.flatnonzero(np.isin(np.asarray(meta["structure"]).astype(str), data.structures))
    rng = np.random.default_rng([seed, 1])
    pick = rng.integers(0, len(data.patterns), n)
    params = draw_geometry(rng, n, data.shape, data.ranges)
    clean = distort(data.patterns[pick], params)
    rings = rng.random(n) < RING_FRACTION  # polycrystals: the mean of many in-plane rotations of a grain
    for i in np.flatnonzero(rings):
        geo = {k: np.full(RING_GRAINS, v[i]) for k, v in params.items()}
        geo["rotation"] = rng.uniform(0, 2 * math.pi, RING_GRAINS)
        clean[i] = distort(data.patterns[pick[i]][None].expand(RING_GRAINS, -1, -1), geo).mean(0)
    dose = np.array([DOSES[i % len(DOSES)] for i in range(n)])
    q = data.shape[0]
    binned = (rng.random(n) < BINNED_FRACTION) & (q >= 2 * MIN_DETECTOR)
    shapes = [(q // 2, q // 2) if b else (q, q) for b in binned]
    kinds, effects = _draw_detectors(rng, n, shapes)
    truth = (np.where(binned, (params["qx0"] - 0.5) / 2, params["qx0"]),
             np.where(binned, (params["qy0"] - 0.5) / 2, params["qy0"]))
    edge = np.minimum.reduce([truth[0], truth[1], np.array([s[0] for s in shapes]) - 1 - truth[0],
                              np.array([s[1] for s in shapes]) - 1 - truth[1]])
    gen = torch.Generator().manual_seed(seed)
    noisy, crb = [], np.empty(n)
    for i in range(n):
        c = _bin2(clean[i:i + 1]) if binned[i] else clean[i:i + 1]
        noisy.append(add_noise(c, dose[i], gen, effects[i])[0].numpy())
        crb[i] = centre_crb(c, dose[i], effects[i])[0]
    empty = np.array([np.ptp(p) == 0 for p in noisy])  # no counts at all (low dose behind a beam stop)
    conditions = {"dose": np.array([f"{d:.0e}" for d in dose]), **_detector_conditions(effects, kinds),
                  "detector size": np.array([f"{s[0]} px" for s in shapes]),
                  **_optics_conditions(meta, test_rows[pick])}
    conditions["beam to edge"] = np.where(edge < 8, "0-8 px", np.where(edge < 24, "8-24 px", "24+ px"))
    conditions["specimen"] = np.where(rings, "polycrystal (rings)", "one grain")
    conditions["dose x detector"] = np.array([f"{d:.0e} {k}" for d, k in zip(dose, kinds, strict=True)])
    names = ("ours", "ours without disk refinement", *methods)
    results = {k: (np.empty(n), np.empty(n)) for k in names}
    ms = dict.fromkeys(names, 0.0)
    for size in sorted({s[0] for s in shapes}):
        sel = np.flatnonzero((np.array([s[0] for s in shapes]) == size) & ~empty)
        batch = np.stack([noisy[i] for i in sel])
        for name in names:
            t0 = time.perf_counter()
            if name == "ours":
                qx, qy = _or_refused(partial(_ours_center, batch, model, device), len(sel))
            elif name == "ours without disk refinement":
                qx, qy = _or_refused(partial(_origins, batch[None], model, device, refine=False), len(sel))
            else:
                qx, qy = classical.CENTER_METHODS[name](batch)
            ms[name] += 1e3 * (time.perf_counter() - t0) / n
            results[name][0][sel], results[name][1][sel] = qx, qy
    keep = ~empty
    table = Table(f"Centre: {int(keep.sum())} held-out samples of {len(data.patterns)} library patterns ({q} px; "
                  f"{int(empty.sum())} more held no "
                  "counts at all and are left out), by condition; errors in px; failed: not measured (refused); "
                  "CRB-R: RMS Poisson Cramer-Rao bound of the radial error (compare with RMS-R)",
                  CENTER_COLUMNS)
    _table_rows(table, {k: v[keep] for k, v in conditions.items()},
                {k: (v[0][keep], v[1][keep]) for k, v in results.items()},
                (truth[0][keep], truth[1][keep]), crb[keep], ms)
    rows = np.asarray(PatternLibrary(library).metadata()["index"])[test_rows[pick]]
    for i in range(n):
        table.records.append({
            "library_row": int(rows[i]), "qx0": float(truth[0][i]), "qy0": float(truth[1][i]),
            "dose": float(dose[i]), "detector_px": int(shapes[i][0]), "empty": bool(empty[i]),
            "crb_px": float(crb[i]), "detector": effects_record(effects[i]), "kind": kinds[i],
            **{f"condition {k}": str(v[i]) for k, v in conditions.items()},
            **{f"{name} (qx0, qy0)": [float(results[name][0][i]), float(results[name][1][i])] for name in names}})
    return table


def _origins(cube: np.ndarray, model: str, device: str, **options) -> tuple[np.ndarray, np.ndarray]:
    """:func:`center.measure_origins` of a cube ``(Rx, Ry, Q, Q)``: flat ``(qx0, qy0)``, px."""
    found, _, _ = measure_origins(cube, model, device, progress=False, **options)
    return found.qx0.ravel(), found.qy0.ravel()


def evaluate_center_scans(library: str, model: str = "default", device: str = "auto", cubes: int = 4,
                          scan: tuple[int, int] = (16, 16), seed: int = 0,
                          methods: tuple[str, ...] = ("com", "get_origin", "get_origin_friedel")) -> Table:
    """Centre errors (px) on held-out scans (:func:`simulate.scans.build_scan`: 1-3 grains, descan drift
    (plane or parabola) up to 10 % of the detector, 0.2 px jitter; in turn plain, with precession-like
    halos, polycrystalline rings), one detector per scan (the kinds in turn, 30 % with a beam stop), ours
    with and without the scan context, and classical; by dose, detector, drift and specimen."""
    data = TrainingData(library, "test")
    rng = np.random.default_rng([seed, 4])
    specimens = [{}, {"halo_fraction": 1.0}, {"ring_fraction": 1.0}]  # grains, precession-like halo, rings in turn
    scans = [build_scan(data.patterns, rng, ScanRanges(scan=scan, **specimens[c % len(specimens)]))
             for c in range(cubes)]
    gen = torch.Generator().manual_seed(seed)
    names = ("ours", "ours without scan context", *methods)
    found: dict[str, list] = {k: [] for k in names}
    truth, labels, crbs = [], {k: [] for k in ("dose", "detector", "beam stop", "drift", "specimen")}, []
    meta = PatternLibrary(library).metadata()
    rows = np.asarray(meta["index"])[np.isin(np.asarray(meta["structure"]).astype(str), data.structures)]
    records: list[dict] = []
    for d_index, dose in enumerate(DOSES):
        for c_index, (clean, t) in enumerate(scans):
            kind = KINDS[(d_index + c_index) % len(KINDS)]  # every dose meets several detector kinds
            e = draw_detector(rng, kind, beam_stop=BEAM_STOP_FRACTION, shape=data.shape)
            flat = torch.from_numpy(clean.reshape(-1, *data.shape))
            noisy = add_noise(flat, dose, gen, e).numpy()
            crbs.append(centre_crb(flat, dose, e))
            truth.append((t["qx0"].ravel(), t["qy0"].ravel()))
            m = flat.shape[0]
            drift = f"{t['drift']} {'0-5' if t['drift_px'] < 0.05 * min(data.shape) else '5-10'} % of Q"
            specimen = "rings" if t["rings"] else "halo" if t["halo_px"] else f"{t['grains']} grain(s)"
            for key, value in (("dose", f"{dose:.0e}"), ("detector", kind),
                               ("beam stop", "yes" if e.has_beam_stop else "none"), ("drift", drift),
                               ("specimen", specimen)):
                labels[key].append(np.full(m, value))
            cube = noisy.reshape(clean.shape)
            for name, context in (("ours", True), ("ours without scan context", False)):
                found[name].append(_or_refused(partial(_origins, cube, model, device, scan_context=context), m))
            for name in methods:
                found[name].append(classical.CENTER_METHODS[name](noisy))
            records.append({"dose": float(dose), "kind": kind, "detector": effects_record(e),
                            "source_library_rows": [int(rows[i]) for i in np.unique(t["source"])],
                            **{k: t[k] for k in ("ratio", "theta", "drift", "drift_px", "halo_px", "rings", "grains")},
                            **{f"{name} MAE-R": _center_errors(*found[name][-1], *truth[-1])["MAE-R"]
                               for name in names}})
    tx, ty = (np.concatenate(v) for v in zip(*truth, strict=True))
    results = {name: tuple(np.concatenate(v) for v in zip(*res, strict=True)) for name, res in found.items()}
    table = Table(f"Centre on scans: {cubes} held-out {scan[0]}x{scan[1]} scans per dose, {data.shape[0]}x"
                  f"{data.shape[1]} px; errors in px; failed: positions not measured (the scan was refused); "
                  "CRB-R: RMS Poisson Cramer-Rao bound", CENTER_COLUMNS)
    _table_rows(table, {key: np.concatenate(v) for key, v in labels.items()}, results, (tx, ty),
                np.concatenate(crbs), dict.fromkeys(names, ""))
    table.records = records
    return table


def evaluate_ellipse(library: str, model: str = "default", device: str = "auto", n: int = 60,
                     seed: int = 0, per_mean: tuple[int, int] = (8, 64)) -> Table:
    """Axis-ratio and angle errors on noisy means of held-out patterns, ours vs py4DSTEM's fits, by dose,
    detector and specimen. Each mean: K patterns (one or two structures, random in-plane rotations, one
    camera length and ellipse, 0.05 px centring jitter) counted on one drawn detector."""
    data = TrainingData(library, "test")
    rng = np.random.default_rng([seed, 2])
    gen = torch.Generator().manual_seed(seed)
    labels = draw_geometry(rng, n, data.shape, data.ranges)
    meta = PatternLibrary(library).metadata()
    category = dict(zip(np.asarray(meta["structure"]).astype(str), np.asarray(meta["category"]).astype(str),
                        strict=True))
    kinds, effects = _draw_detectors(rng, n, [data.shape] * n)
    dose = np.array([DOSES[i % len(DOSES)] for i in range(n)])
    means, specimen = [], []
    for i in range(n):
        names, _, clean = data.mean_grains(rng, labels, i, per_mean)
        means.append(add_noise(clean, dose[i], gen, effects[i]).mean(0).numpy())
        specimen.append("+".join(sorted({category[str(s)] for s in names})))
    methods = ("ours",) + classical.ELLIPSE_METHODS
    found = {k: [] for k in methods}
    for m in means:
        cube = py4DSTEM.DataCube(data=m[None, None])
        cube.calibration.set_origin(geometry.detector_center(m.shape))
        fit = cube.prenet_measure_ellipse(model=model, device=device, progress=False)
        found["ours"].append((fit.ratio, fit.theta))
        for k in classical.ELLIPSE_METHODS:
            found[k].append(classical.py4dstem_fit_ellipse(m, k))
    conditions = {"dose": np.array([f"{d:.0e}" for d in dose]), **_detector_conditions(effects, kinds),
                  "specimen": np.array(specimen)}
    table = Table(f"Ellipse: {n} noisy mean patterns of held-out structures (a/b 1.00-1.12, any angle), by "
                  "condition", ["condition", "value", "method", "n", "ratio MAE", "angle MAE (deg, a/b>1.01)",
                                "failures"])
    ok = {k: np.array([f is not None for f in found[k]]) for k in methods}
    ratio = {k: np.array([f[0] if f else np.nan for f in found[k]]) for k in methods}
    ang = {k: np.degrees(geometry.angle_difference(np.array([f[1] if f else 0.0 for f in found[k]]),
                                                    labels["theta"])) for k in methods}
    big = labels["ratio"] > 1.01
    for cond, lab in [("all", np.full(n, "all")), *conditions.items()]:
        for value in sorted(np.unique(lab), key=_natural):
            sel = lab == value
            for k in methods:
                good = sel & ok[k]
                table.rows.append([cond, value, k, int(sel.sum()),
                                   float(np.mean(np.abs(ratio[k][good] - labels["ratio"][good])))
                                   if good.any() else float("nan"),
                                   float(np.mean(ang[k][good & big])) if (good & big).any() else float("nan"),
                                   f"{int((sel & ~ok[k]).sum())}/{int(sel.sum())}"])
    return table


def evaluate_denoise(library: str, model: str = "default", device: str = "auto", cubes: int = 3,
                     scan: tuple[int, int] = (8, 8), seed: int = 0) -> Table:
    """MSE (counts^2) and PSNR (dB) before and after denoising, by dose and detector: ours vs the oracle
    Gaussian filter and the oracle low-rank reconstruction (both tuned on the truth). The truth is the
    noise-free detector output (:func:`simulate.noise.expected_counts`: gain, counter depth, background).
    The detectors have no dead or hot pixels here (they would dominate the MSE; the centre and ellipse
    tables include them)."""
    data = TrainingData(library, "test")
    rng = np.random.default_rng([seed, 3])
    ranges = ScanRanges(scan=scan, drift_frac=0.05)
    clean_cubes = [build_scan(data.patterns, rng, ranges)[0] for _ in range(cubes)]
    gen = torch.Generator().manual_seed(seed)
    table = Table(f"Denoising: {cubes} held-out {scan[0]}x{scan[1]} scans per dose and detector, {data.shape[0]}x"
                  f"{data.shape[1]} px; MSE in counts^2, PSNR in dB (peak = max of the clean scan)",
                  ["condition", "value", "method", "MSE", "PSNR", "MSE vs noisy", "PSNR gain"])
    keys = ("noisy", "ours", "gaussian (oracle)", "low-rank (oracle)")
    scores: dict[tuple[str, str], dict[str, list]] = {}
    for dose in DOSES:
        for kind in KINDS:
            for clean in clean_cubes:
                e = dataclasses.replace(draw_detector(rng, kind, beam_stop=BEAM_STOP_FRACTION, shape=data.shape),
                                        hot_fraction=0.0, dead_fraction=0.0)
                flat = torch.from_numpy(clean.reshape(-1, *data.shape))
                noisy = add_noise(flat, dose, gen, e).numpy()
                e_flat = expected_counts(flat, dose, e).numpy()
                try:
                    den = py4DSTEM.DataCube(data=noisy.reshape(clean.shape)).prenet_denoise(
                        model=model, device=device, progress=False).data
                except InputError:  # refused (e.g. empty patterns behind a beam stop): no score
                    den = np.full(noisy.shape, np.nan, dtype=np.float32)
                for k, est in (("noisy", noisy), ("ours", den.reshape(noisy.shape)),
                               ("gaussian (oracle)", classical.gaussian_oracle(noisy, e_flat)),
                               ("low-rank (oracle)", classical.lowrank_oracle(noisy, e_flat))):
                    mse, psnr = classical.mse(est, e_flat), classical.psnr(est, e_flat)
                    for group in (("dose", f"{dose:.0e}"), ("detector", kind), ("dose x detector",
                                                                                 f"{dose:.0e} {kind}")):
                        scores.setdefault(group, {k: [] for k in keys})[k].append((mse, psnr))
    for (cond, value), per in scores.items():
        base_mse, base_psnr = np.mean(per["noisy"], axis=0)
        for k, vals in per.items():
            m, p = np.nanmean(vals, axis=0) if np.isfinite(vals).any() else (np.nan, np.nan)
            table.rows.append([cond, value, k, float(m), float(p), f"{100 * (m / base_mse - 1):+.1f}%",
                               f"{p - base_psnr:+.2f}"])
    return table


def evaluate_all(library: str, device: str = "auto", quick: bool = False,
                 tasks: tuple[str, ...] = ("center", "center-scans", "ellipse", "denoise")) -> list[Table]:
    """The tables of ``tasks`` (``quick``: fewer samples, for smoke tests)."""
    run = {"center": lambda: evaluate_center(library, device=device, n=200 if quick else 800),
           "center-scans": lambda: evaluate_center_scans(library, device=device, cubes=2 if quick else 4),
           "ellipse": lambda: evaluate_ellipse(library, device=device, n=24 if quick else 96),
           "denoise": lambda: evaluate_denoise(library, device=device, cubes=1 if quick else 3)}
    return [run[t]() for t in tasks]


def manifest_metrics(table: Table) -> dict:
    """The by-dose rows of ``table`` measured for our default model, keyed for the weights manifest."""
    cols = table.columns
    if table.title.startswith("Centre"):
        rows = [r for r in table.rows if r[0] == "dose" and r[2] == "ours"]
        key = "held_out_center_scans_px" if table.title.startswith("Centre on scans") else "held_out_center_px"
        return {key: {r[1]: dict(zip(cols[4:9], r[4:9], strict=True)) for r in rows}}
    if table.title.startswith("Ellipse"):
        r = next(r for r in table.rows if r[0] == "all" and r[2] == "ours")
        return {"held_out_ellipse": {"ratio_mae": r[4], "angle_mae_deg": r[5], "failures": r[6]}}
    rows = [r for r in table.rows if r[0] == "dose" and r[2] == "ours"]
    return {"held_out_denoise": {r[1]: {"mse_change": r[5], "psnr_gain_db": r[6]} for r in rows}}
