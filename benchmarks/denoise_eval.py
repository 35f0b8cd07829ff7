"""Denoising evaluation: held-out simulated 8 x 8 scans, the self-check's choice and each variant beside
the oracle classical denoisers, true vs estimated MSE, time per pattern. Writes
``benchmarks/results/denoise.txt``.

Scans: 1-4 grains (the crystal example sources, each grain rotated at random, a smooth descan drift of a
few px moved with :func:`geometry.warp`) or amorphous (the two glass sources blended across the scan,
rotated); Poisson noise plus read noise drawn uniformly in 0-2 electrons rms (:mod:`simulate.noise`);
128 x 128 px. PSNR peak = the clean scan's maximum.

    PYTHONPATH=. python benchmarks/denoise_eval.py [--repeats 2] [--realdata]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from py4dstem_prenet import geometry
from py4dstem_prenet.denoise import apply_plan, plan_denoise
from py4dstem_prenet.evaluate import classical
from py4dstem_prenet.example import SOURCES
from py4dstem_prenet.runner import iter_batches
from py4dstem_prenet.simulate.noise import DetectorEffects, add_noise

DOSES = (1e2, 1e3, 1e4, 1e5)
SCAN = (8, 8)
OUT = Path(__file__).resolve().parent / "results" / "denoise.txt"


def _sources() -> dict[str, np.ndarray]:
    with h5py.File(SOURCES, "r") as f:
        return {k: f[k][()].astype(np.float64) for k in f}


def clean_scan(kind: str, rng: np.random.Generator, src: dict[str, np.ndarray]) -> np.ndarray:
    """Clean fractions per pixel ``(64, Q, Q)`` of one held-out scan."""
    q = src["crystal_on_zone"].shape[-1]
    u, v = np.meshgrid(np.linspace(-1, 1, SCAN[0]), np.linspace(-1, 1, SCAN[1]), indexing="ij")
    qx0 = q / 2 + rng.uniform(-3, 3) * u + rng.uniform(-2, 2) * v + rng.normal(0, 0.15, SCAN)
    qy0 = q / 2 + rng.uniform(-2, 2) * u + rng.uniform(-3, 3) * v + rng.normal(0, 0.15, SCAN)
    if kind == "grains":
        k = int(rng.integers(1, 5))
        seeds = rng.uniform(0, SCAN[0], (k, 2))
        pos = np.stack(np.meshgrid(np.arange(SCAN[0]), np.arange(SCAN[1]), indexing="ij"), -1).reshape(-1, 2)
        grain = np.argmin(((pos[:, None] - seeds[None]) ** 2).sum(-1), 1)
        names = rng.choice(["crystal_on_zone", "crystal_tilted"], k)
        rot = rng.uniform(-np.pi, np.pi, k)
        ideal = np.stack([src[names[g]] for g in grain])
        rotation = rot[grain]
    else:
        w = np.linspace(0, 1, SCAN[0] * SCAN[1])[:, None, None]
        ideal = (1 - w) * src["amorphous_a"] + w * src["amorphous_b"]
        rotation = np.full(len(ideal), rng.uniform(-np.pi, np.pi))
    f = geometry.distortion_matrix((q, q), qx0.ravel(), qy0.ravel(), rotation=rotation)
    out = geometry.warp(torch.from_numpy(ideal), geometry.invert(f), preserve_counts=True).clamp_min(0).numpy()
    return out / out.sum(axis=(1, 2), keepdims=True)


def _alone(plan, name):
    return dataclasses.replace(plan, weights={k: float(k == name) for k in plan.weights})


FEATURES = (("strong (>10% of max)", 0.1, 2.0), ("Bragg/ring (1-10%)", 0.01, 0.1),
            ("faint (0.1-1%)", 0.001, 0.01), ("background (<0.1%)", -1.0, 0.001))


def feature_bias(den: np.ndarray, clean: np.ndarray, read: float) -> dict[str, tuple[float, float]]:
    """Per class of pixels (by the clean level relative to its pattern's maximum): the scan's summed
    ``den - clean`` relative to the class's clean intensity, and the Poisson (+ read) error of that sum."""
    rel = clean / clean.max(axis=(1, 2), keepdims=True)
    out = {}
    for name, lo, hi in FEATURES:
        m = (rel > lo) & (rel <= hi)
        tot = float(clean[m].sum())
        out[name] = (float((den[m] - clean[m]).sum()) / max(tot, 1e-12),
                     float(np.sqrt(tot + read**2 * m.sum())) / max(tot, 1e-12))
    return out


def _run(plan, noisy):
    return np.concatenate([apply_plan(plan, torch.from_numpy(b)).numpy()
                           for _, b in iter_batches(noisy, 64, False, neighbours=plan.needs_neighbours)])


def evaluate(repeats: int, seed: int = 0) -> list[str]:
    src = _sources()
    rng = np.random.default_rng([seed, 15])
    gen = torch.Generator().manual_seed(seed)
    rows = {}
    for kind in ("grains", "amorphous"):
        for _ in range(repeats):
            clean = clean_scan(kind, rng, src)
            read = float(rng.uniform(0, 2))
            for dose in DOSES:
                expected = (clean * dose).astype(np.float32)
                noisy = add_noise(torch.from_numpy(expected), 1.0, gen, DetectorEffects(read_noise=read)).numpy()
                cube = noisy.reshape(*SCAN, *noisy.shape[1:])
                t0 = time.perf_counter()
                plan = plan_denoise(cube, device="cpu")
                t1 = time.perf_counter()
                ours = _run(plan, cube)
                ms = (t1 - t0, 1e3 * (time.perf_counter() - t1) / len(noisy))
                est = {"noisy": noisy, "ours (self-check)": ours}
                for name in plan.weights:
                    est[f"variant {name}"] = _run(_alone(plan, name), cube)
                est["gaussian (oracle)"] = classical.gaussian_oracle(noisy, expected)
                est["low-rank (oracle)"] = classical.lowrank_oracle(noisy, expected)
                r = rows.setdefault(dose, {"psnr": {}, "true": [], "est": [], "ms": [], "choice": [], "sum": [],
                                           "bias": {}})
                for name, (b, e) in feature_bias(ours, expected, read).items():
                    r["bias"].setdefault(name, []).append((b, e))
                for k, e in est.items():
                    r["psnr"].setdefault(k, []).append(classical.psnr(e, expected))
                true_red = 1 - classical.mse(ours, expected) / classical.mse(noisy, expected)
                r["true"].append(true_red)
                r["est"].append((plan.decision.reduction, plan.decision.reduction_err))
                r["ms"].append(ms)
                used = {k: round(w, 2) for k, w in plan.weights.items() if w > 0.005}
                r["choice"].append(f"{kind} rn={read:.1f} g={plan.noise.gain:.2f} r={plan.noise.read_noise:.2f}: "
                                   f"{used}, rank {0 if plan.basis is None else len(plan.basis)}")
                tot_in, tot_out, tot_true = noisy.sum((1, 2)), ours.sum((1, 2)), expected.sum((1, 2))
                r["sum"].append(float(np.mean(np.abs(tot_out - tot_in) / np.sqrt(np.maximum(tot_true, 1)
                                                                                 + read**2 * noisy[0].size))))
                print(f"{kind} dose {dose:.0e} read {read:.2f}: true {100 * true_red:.1f}% est "
                      f"{100 * plan.decision.reduction:.1f}% self-check {ms[0]:.1f} s, {ms[1]:.0f} ms/pattern",
                      flush=True)
    lines = [f"Denoising: held-out 8x8 scans, 128 px, {repeats} grain + {repeats} amorphous scans per dose, "
             "read noise 0-2 e rms; mean PSNR (dB, peak = clean max)"]
    for dose, r in rows.items():
        lines.append(f"\ndose {dose:.0e}")
        base = np.mean(r["psnr"]["noisy"])
        for k, v in r["psnr"].items():
            lines.append(f"  {k:40s} {np.mean(v):7.2f}  ({np.mean(v) - base:+.2f} vs noisy, worst "
                         f"{np.min(np.array(v) - np.array(r['psnr']['noisy'])):+.2f})")
        t, e = np.array(r["true"]), np.array(r["est"])
        lines.append("  MSE reduction true vs estimated (per scan): " + ", ".join(
            f"{100 * a:.1f}/{100 * b:.1f}+-{100 * c:.1f}" for a, (b, c) in zip(t, e, strict=True)))
        lines.append(f"  |estimated - true| reduction: mean {100 * np.mean(np.abs(e[:, 0] - t)):.1f} points; "
                     f"estimated/true risk ratio {np.mean((1 - e[:, 0]) / np.maximum(1 - t, 1e-9)):.3f}")
        lines.append(f"  |total out - total in| / Poisson+read error per pattern: mean {np.mean(r['sum']):.2f}")
        for name, v in r["bias"].items():
            v = np.array(v)
            ok = np.abs(v[:, 0]) <= np.maximum(0.01, v[:, 1])
            lines.append(f"  bias {name:22s}: mean {100 * v[:, 0].mean():+.2f}% (Poisson error "
                         f"{100 * v[:, 1].mean():.2f}%); within max(1%, Poisson) in {ok.sum()}/{len(ok)} scans")
        ms = np.array(r["ms"])
        lines.append(f"  time (1 thread, shared machine): self-check {ms[:, 0].mean():.1f} s per scan (fixed, on up "
                     f"to 256 patterns), then {ms[:, 1].mean():.0f} ms per 128x128 pattern")
        lines += [f"  choice: {c}" for c in r["choice"]]
    return lines


def realdata(root: str = "/work/shared/realdata") -> list[str]:
    """The self-check on the measured scans (no truth): noise model, choice, estimated MSE reduction."""
    from rsciio.blockfile import file_reader as read_blo
    from rsciio.quantumdetector import file_reader as read_mib

    sets = {}
    with h5py.File(f"{root}/fpd_rings_2x2/fpd_file_test.hdf5") as f:
        sets["fpd_rings_2x2"] = f["fpd_expt/fpd_data/data"][:, :, 0].astype(np.float32)
    sets["merlin_4x2"] = np.asarray(read_mib(f"{root}/merlin_4x2/001_4x2_6bit.mib")[0]["data"]).astype(np.float32)
    sets["sped_blockfile_3x2"] = np.asarray(read_blo(f"{root}/sped_blockfile_3x2/test1.blo")[0]["data"]).astype(
        np.float32)
    lines = ["\nReal data (no truth): the self-check's noise model and choice"]
    for name, data in sets.items():
        plan = plan_denoise(data, device="cpu")
        n, d = plan.noise, plan.decision
        alone = ", ".join(f"{k} {100 * v:.1f}%" for k, v in d.candidate_reduction.items())
        lines.append(f"  {name} {data.shape}: gain {n.gain:.3g} +- {n.gain_err:.2g}, read {n.read_noise:.3g} e, "
                     f"offset {n.offset:.3g} ({n.source}); {d.summary()}; low-rank rank "
                     f"{0 if plan.basis is None else len(plan.basis)}; each alone: {alone}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--realdata", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = evaluate(args.repeats) + (realdata() if args.realdata else [])
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
