"""Choose the centre model's tuned numbers on VALIDATION cases and write them into its manifest entry.

Usage: ``python benchmarks/center_tune.py [--model center-compact] [--write]``.
Validation cases: :func:`center_cases.analytic_cases` with seed 1 (evaluation uses seed 2; the real
datasets and the example cube are never used here). What it chooses:

* ``fit.correlation``: the standard error is calibrated so that the median of |error| / sigma over the
  patterns within 2 px of the truth equals that of a 2-D Gaussian (1.177);
* ``sigma_flag``: the 95th percentile of the calibrated sigma over the patterns within 0.5 px of the
  truth (so the sigma test flags at most 5 % of good answers), at least 0.2 px.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from center_cases import analytic_cases  # noqa: E402

from py4dstem_prenet import center  # noqa: E402
from py4dstem_prenet.weights import MANIFEST_PATH, load_model  # noqa: E402


def run(model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    errs, sigs, oks = [], [], []
    for _, x, tx, ty in analytic_cases(seed=1):
        o, _, _ = center.measure_origins(x[None], model, "cpu", progress=False, scan_context=False)
        errs.append(np.hypot(o.qx0[0] - tx, o.qy0[0] - ty))
        sigs.append(o.sigma[0])
        oks.append(~o.flag[0])
    return np.concatenate(errs), np.concatenate(sigs), np.concatenate(oks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="center-compact")
    p.add_argument("--write", action="store_true", help="write the chosen numbers into the manifest")
    args = p.parse_args()
    torch.set_num_threads(1)
    loaded = load_model("center", args.model)
    pp = json.loads(json.dumps(loaded.entry.postprocess))
    err, sig, _ = run(args.model)
    near = (err < 2) & np.isfinite(sig)
    ratio = float(np.median(err[near] / sig[near]))
    k = ratio / 1.177
    corr = pp["fit"]["correlation"] * k * k
    print(f"median |err|/sigma = {ratio:.3f} over {int(near.sum())} patterns: correlation "
          f"{pp['fit']['correlation']:.3f} -> {corr:.3f}")
    sig_cal = sig * k
    good = (err < 0.5) & np.isfinite(sig_cal)
    flag = float(max(np.percentile(sig_cal[good], 95), 0.2))
    far = err > 2
    print(f"sigma_flag -> {flag:.2f} px; {int(far.sum())} patterns > 2 px off, "
          f"{int((far & ~(sig_cal <= flag)).sum())} of them above it")
    if args.write:
        manifest = json.loads(MANIFEST_PATH.read_text())
        entry = manifest["models"][args.model]["postprocess"]
        entry["fit"]["correlation"] = round(corr, 3)
        entry["sigma_flag"] = round(flag, 2)
        entry["tuned_by"] = "benchmarks/center_tune.py on center_cases.analytic_cases(seed=1)"
        MANIFEST_PATH.write_text(json.dumps(manifest, indent=2) + "\n")
        print("written to", MANIFEST_PATH)


if __name__ == "__main__":
    main()
