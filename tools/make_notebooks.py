"""Write the notebooks in ``notebooks/`` from the cell sources below (run after editing them; outputs are
not stored: ``tests/test_notebooks.py`` executes every notebook top to bottom)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parents[1] / "notebooks"


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str):
    return new_code_cell(text.strip())


QUICKSTART = [
    md("""
# Quick start: py4dstem-prenet on the built-in example cube

The example is a 16 x 16 scan of 128 x 128 patterns simulated with abTEM (Si near [011], a Cu-Zr glass
and a mixed band), with descan drift, an elliptical distortion (a/b = 1.06 at 35 deg) and 2000 electrons
per pattern. Because it is simulated, the true centres and ellipse are known and printed beside ours.
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import py4DSTEM

import py4dstem_prenet  # registers DataCube.prenet_denoise / prenet_center / prenet_ellipse / prenet_preprocess
from py4dstem_prenet.example import load_example

cube, truth = load_example()
cube
"""),
    md("## Denoise\nCounts in, counts out: a new DataCube; the input is not modified."),
    code("""
denoised = cube.prenet_denoise(progress=False)
fig, ax = plt.subplots(1, 2, figsize=(9, 4))
for a, data, title in zip(ax, (cube.data[3, 3], denoised.data[3, 3]), ("recorded", "denoised"), strict=True):
    a.imshow(np.log1p(data), cmap="magma")
    a.set_title(title)
"""),
    md("## Centre\nThe measured origins go to py4DSTEM's calibration (`origin_meas`, `origin`); "
       "the returned cube is aligned."),
    code("""
centered = cube.prenet_center(progress=False)
qx0, qy0 = cube.calibration.get_origin_meas()
error = np.hypot(qx0 - truth["qx0"], qy0 - truth["qy0"])
print(f"mean centre error {error.mean():.3f} px, max {error.max():.3f} px")
print("aligned cube's origin:", centered.calibration.get_origin())
plt.imshow(qx0, cmap="RdBu_r")
plt.colorbar(label="qx0 (px)")
plt.title("measured qx0 over the scan")
plt.show()
"""),
    md("## Ellipse\nMeasured on the mean centred pattern; written with `set_ellipse((a, b, theta))`, b = 1."),
    code("""
corrected = centered.prenet_ellipse(progress=False)
a, b, theta = centered.calibration.get_ellipse()
print(f"ours a/b = {a / b:.4f} at {np.degrees(theta):.1f} deg; truth {truth['ratio']:.4f} at "
      f"{np.degrees(truth['theta']):.1f} deg")
"""),
    md("## The whole chain, the EMD tree, save and read back"),
    code("""
result = cube.prenet_preprocess(progress=False)
cube.tree(show=True)
result.tree(show=True)
py4DSTEM.save("quickstart.h5", result, mode="o")
back = py4DSTEM.read("quickstart.h5")
assert np.array_equal(back.data, result.data)
print(back.tree("prenet_origin").metadata["prenet_center"])
"""),
    md("## Files of any size\n`open_cube` keeps the data in the file; `run_file` (= `prenet run`) streams "
       "the result to disk."),
    code("""
py4DSTEM.save("example_raw.h5", cube, mode="o")
lazy = py4dstem_prenet.open_cube("example_raw.h5")
print(type(lazy.data))
out, measured = py4dstem_prenet.run_file("example_raw.h5", "example_processed.h5", overwrite=True, progress=False)
print(out, py4DSTEM.read(str(out)).data.shape)
"""),
    md("""
## Other detectors: a saturated 6-bit counter and a camera with read noise

What users try first is their own detector. `load_example(detector=...)` records the same scan on a
6-bit counting detector (Medipix/Merlin-like, 20,000 electrons per pattern: the direct beam saturates at
63 counts; charge sharing, flat field, dead and hot pixels) and on an integrating CMOS-like camera
(8 counts per electron, 1.5 electrons rms read noise, a dark residual leaving negative values). The truth
records every detector parameter.
"""),
    code("""
fig, ax = plt.subplots(1, 2, figsize=(9, 4))
for a, kind in zip(ax, ("counting", "integrating"), strict=True):
    other, other_truth = load_example(detector=kind)
    node = other.prenet_measure_origin(progress=False)
    err = np.hypot(node.data[0] - other_truth["qx0"], node.data[1] - other_truth["qy0"])
    d = other_truth["detector"]
    print(f"{kind}: values {other.data.min():.0f}..{other.data.max():.0f}, bit depth {d['bit_depth'] or '-'}, "
          f"read noise {d['read_noise']} e, gain {d['gain']}; mean centre error {err.mean():.3f} px")
    a.imshow(np.sign(other.data[3, 3]) * np.log1p(np.abs(other.data[3, 3])), cmap="magma")
    a.set_title(kind)
"""),
    md("## QA report\nThe same PNG + HTML page as `prenet report`."),
    code("""
from IPython.display import Image

png, page = py4dstem_prenet.report(result, "quickstart_report.png", raw=cube, truth=truth)
Image(str(png))
"""),
]

VS_CLASSICAL = [
    md("""
# Our methods against py4DSTEM's classical ones

The evaluation harness (`prenet evaluate`) runs our DataCube methods and py4DSTEM's classical ones
side by side on held-out patterns: structures that no network saw in training. Here a small held-out
library is simulated on the spot (set `PATTERNS` higher for a real evaluation; the full tables are in
`benchmarks/results/evaluation.txt`).
"""),
    code("""
import matplotlib.pyplot as plt

from py4dstem_prenet.evaluate.harness import evaluate_center, evaluate_denoise, evaluate_ellipse
from py4dstem_prenet.simulate.library import generate_library
from py4dstem_prenet.simulate.structures import list_structures
from py4dstem_prenet.train.data import split_of

PATTERNS = 8  # held-out patterns to simulate (about 1-2 s each)
held_out = [s.name for s in list_structures() if split_of(s.name) == "test"]
print("held-out structures:", held_out)
stats = generate_library("heldout.h5", PATTERNS, seed=1, structures=held_out, workers=1, progress=False)
print(stats)
"""),
    md("## Centre: mean radial error (px) by dose, beside the Poisson Cramer-Rao bound"),
    code("""
center = evaluate_center("heldout.h5", n=24)
print(center.text())
rows = [r for r in center.rows if r[0] == "dose"]  # also by detector, bit depth, read noise, beam stop, ...
methods = sorted({r[2] for r in rows})
doses = sorted({r[1] for r in rows}, key=float)
for m in methods:
    plt.semilogy([float(d) for d in doses], [next(r[4] for r in rows if r[1] == d and r[2] == m) for d in doses],
                 "o-", label=m)
plt.semilogy([float(d) for d in doses], [next(r[8] for r in rows if r[1] == d) for d in doses], "k--",
             label="Cramer-Rao bound (RMS)")
plt.xscale("log")
plt.xlabel("electrons per pattern")
plt.ylabel("MAE-R (px)")
plt.legend()
plt.show()
"""),
    md("## Ellipse: axis-ratio and angle errors on noisy mean patterns"),
    code("""
print(evaluate_ellipse("heldout.h5", n=6).text())
"""),
    md("## Denoising: MSE and PSNR before and after, against oracle classical denoisers"),
    code("""
print(evaluate_denoise("heldout.h5", cubes=1, scan=(4, 4)).text())
"""),
    md("## The full evaluation (held-out library of 1696 patterns, 200 patterns per dose)"),
    code("""
from pathlib import Path

full = Path("../benchmarks/results/evaluation.txt")
print(full.read_text() if full.exists() else "run: prenet evaluate LIBRARY -o benchmarks/results/evaluation.txt")
"""),
    md("The hard held-out evaluation, every task by condition (detector type, bit depth, read noise, beam "
       "stop, thickness, tilt, convergence, detector size, dose; `prenet simulate --recipe hard`):"),
    code("""
hard = Path("../benchmarks/results/evaluation_hard128.txt")
print(hard.read_text()[:6000] if hard.exists() else "run: prenet evaluate HARD_LIBRARY -o " + str(hard))
"""),
]

RETRAIN = [
    md("""
# Retraining a network on your own structures

The networks are trained on abTEM simulations. To specialise one to your material, simulate a library of
your structures (built-in names or your own CIF files), train, and pass the weights file to any method.
This notebook does it at toy size (a few patterns, a few steps) so that it runs in a minute; the
commands are the same at full size (`prenet simulate`, `prenet train`).
"""),
    code("""
import numpy as np

from py4dstem_prenet.example import load_example  # importing the package registers the DataCube methods
from py4dstem_prenet.simulate.library import generate_library
from py4dstem_prenet.simulate.structures import list_structures
from py4dstem_prenet.train.data import split_of
from py4dstem_prenet.train.loop import train

# your structures: built-in names and/or paths to CIF files; a few of the validation split are added so
# that early stopping has held-out structures to watch
mine = ["Si_diamond", "GaAs_zincblende", "Al_fcc"]
val = [s.name for s in list_structures("crystal") if split_of(s.name) == "val"][:2]
print(generate_library("mine.h5", 12, seed=0, structures=mine + val, workers=1, progress=False))
"""),
    md("Train the centre network (resumable: re-running continues from `checkpoint.pt`)."),
    code("""
weights = train("center", "mine.h5", "my_center", steps=30, batch=8, progress=False)
print(weights)
print(open("my_center/log.jsonl").read())
"""),
    md("Use it: any method takes a weights file as `model` (or ship it with `prenet weights FILE --name NAME`)."),
    code("""
cube, truth = load_example()
node = cube.prenet_measure_origin(model=str(weights), progress=False)
error = np.hypot(node.data[0] - truth["qx0"], node.data[1] - truth["qy0"])
print(f"toy model (30 steps): mean centre error {error.mean():.2f} px - train for thousands of steps for real use")
"""),
]

STRAIN = [
    md("""
# Does preprocessing improve py4DSTEM's strain maps?

An unstrained Si crystal (an abTEM pattern shipped with the package) is recorded over a scan with descan
drift, an elliptical distortion (a/b = 1.05 at 35 deg) and 2000 electrons per pattern. py4DSTEM's own
Bragg-disk detection, calibration and `StrainMap` then measure its strain, which should be zero:
classically (py4DSTEM's origin fit and `fit_ellipse_1D`, or no ellipse correction), with the true
ellipse (the floor), and with ours. Strains in %, theta in 0.01 rad. Raise `SCAN` for a real run
(`benchmarks/strain.py` does 16 x 16 and writes `benchmarks/results/strain.txt`).
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np

from py4dstem_prenet.evaluate import strain

SCAN = (8, 8)
result = strain.compare_strain(scan=SCAN, dose=2000.0, seed=0, device="cpu")
print(result.table().text())
"""),
    md("Strain error maps of each route (grey: no lattice fit at that position)."),
    code("""
routes = result.routes
fig, axes = plt.subplots(len(routes), len(strain.COMPONENTS), figsize=(12, 2.6 * len(routes)), squeeze=False)
for row, (name, route) in zip(axes, routes.items(), strict=True):
    for ax, comp, values in zip(row, strain.COMPONENTS, route.strain, strict=True):
        im = ax.imshow(values, cmap="RdBu_r", vmin=-3, vmax=3)
        ax.set_title(f"{comp}: {np.nanmean(values):+.2f} +- {np.nanstd(values):.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    row[0].set_ylabel(name, fontsize=7)
fig.colorbar(im, ax=axes, shrink=0.4, label="% (theta: 0.01 rad)")
plt.show()
"""),
]


def build() -> dict[str, nbformat.NotebookNode]:
    """Every notebook by file name, as the generator makes it (``tests/test_notebooks.py`` checks that the
    committed files are exactly these)."""
    notebooks = {}
    for name, cells in (("01_quickstart", QUICKSTART), ("02_vs_classical", VS_CLASSICAL), ("03_retrain", RETRAIN),
                        ("04_strain", STRAIN)):
        for i, cell in enumerate(cells):
            cell.id = f"{name}-{i:02d}"  # stable ids: regenerating changes nothing that was not edited
        notebooks[f"{name}.ipynb"] = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    return notebooks


def main() -> None:
    for name, nb in build().items():
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main()
