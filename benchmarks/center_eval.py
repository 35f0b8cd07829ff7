"""Beam-centre evaluation by condition: ours against py4DSTEM's get_origin, get_origin_friedel and the
centre of mass (on scans also + py4DSTEM ``fit_origin``), with the reliability table and throughput.

Usage: ``python benchmarks/center_eval.py [--model default] [--n 32] [-o benchmarks/results/center_eval.txt]``.
Cases: :mod:`center_cases` (analytic CBED-like single patterns, evaluation seed 2; the example scan and its
variants). Errors are radial, px. Reliability: of the patterns with sigma < 0.2 px, the share within 0.5 px;
of the patterns more than 2 px off, the share flagged.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from center_cases import analytic_cases, example_cases  # noqa: E402

from py4dstem_prenet import center  # noqa: E402
from py4dstem_prenet.evaluate import classical  # noqa: E402


def stats(e: np.ndarray) -> str:
    return f"{e.mean():8.3f} {np.median(e):8.3f} {np.percentile(e, 95):8.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--skip-classical", action="store_true")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    lines = [f"model {args.model}; columns: MAE-R, median, P95 (px); ours: flagged / n, "
             "[sig<0.2: within 0.5 px], [>2 px: flagged]"]
    rel_ok, rel_n, far_f, far_n = 0, 0, 0, 0
    cases = [(n, x[None], tx[None], ty[None], False) for n, x, tx, ty in analytic_cases(seed=2, n=args.n)]
    cases += [(*c, True) for c in example_cases()]
    for name, x, tx, ty, scan in cases:  # the analytic patterns are independent: no scan consensus
        o, _, _ = center.measure_origins(x, args.model, "cpu", progress=False, scan_context=scan)
        e = np.hypot(o.qx0 - tx, o.qy0 - ty).ravel()
        s, f = o.sigma.ravel(), o.flag.ravel()
        rel_ok += int(((s < 0.2) & (e < 0.5)).sum())
        rel_n += int((s < 0.2).sum())
        far_f += int(((e > 2) & f).sum())
        far_n += int((e > 2).sum())
        row = (f"{name:22s} ours {stats(e)}  flag {int(f.sum()):3d}/{len(e):3d}  "
               f"[{int(((s < 0.2) & (e < 0.5)).sum())}/{int((s < 0.2).sum())}] "
               f"[{int(((e > 2) & f).sum())}/{int((e > 2).sum())}]")
        if not args.skip_classical:
            flat = x.reshape(-1, *x.shape[-2:]).astype(np.float32)
            for m, fn in classical.CENTER_METHODS.items():
                qx, qy = fn(flat)
                row += f" | {m} {stats(np.hypot(qx - tx.ravel(), qy - ty.ravel()))}"
            if x.ndim == 4 and min(x.shape[:2]) >= 4:
                from py4DSTEM.process.calibration.origin import fit_origin

                qx, qy = classical.center_of_mass(flat)
                fx, fy, _, _ = fit_origin((qx.reshape(x.shape[:2]), qy.reshape(x.shape[:2])), fitfunction="parabola",
                                          robust=True)
                row += f" | com+fit_origin {stats(np.hypot(fx - tx, fy - ty).ravel())}"
        lines.append(row)
        print(row, flush=True)
    lines.append(f"reliability: sigma < 0.2 px -> within 0.5 px: {rel_ok}/{rel_n} = {rel_ok / max(rel_n, 1):.3f}; "
                 f"> 2 px off -> flagged: {far_f}/{far_n} = {far_f / max(far_n, 1):.3f}")
    for q in (128, 256):
        rng = np.random.default_rng(0)
        from center_cases import analytic

        x, _, _ = analytic(64, rng, q=q, radius=(0.04 * q, 0.15 * q))
        cube = x.reshape(8, 8, q, q)
        center.measure_origins(cube[:1], args.model, "cpu", progress=False)
        t0 = time.perf_counter()
        center.measure_origins(cube, args.model, "cpu", progress=False)
        ours = 64 / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        classical.py4dstem_get_origin_friedel(x)
        fried = 64 / (time.perf_counter() - t0)
        lines.append(f"throughput {q} x {q}, 1 thread: ours {ours:.0f} patterns/s, get_origin_friedel {fried:.0f}")
    print("\n".join(lines[-3:]))
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
