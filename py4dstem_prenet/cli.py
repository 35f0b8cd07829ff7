"""The ``prenet`` command: run, demo, report, simulate, train, evaluate, weights."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from ._version import __version__
from .validation import InputError

#: Seconds ``prenet run --scheduler`` waits for the Dask scheduler.
SCHEDULER_TIMEOUT_S = 10


def _cmd_run(args: argparse.Namespace) -> None:
    from .stream import run_file

    client = None
    if args.scheduler:
        try:
            from distributed import Client
        except ImportError as exc:
            raise InputError("--scheduler needs Dask: pip install 'py4dstem-prenet[distributed]'") from exc
        try:
            client = Client(args.scheduler, timeout=SCHEDULER_TIMEOUT_S)
        except (OSError, ValueError, TypeError) as exc:  # unreachable, refused or malformed address
            raise InputError(f"could not connect to the Dask scheduler at {args.scheduler!r} within "
                             f"{SCHEDULER_TIMEOUT_S} s ({type(exc).__name__}: {exc}); is it running?") from exc
    t0 = time.time()
    try:
        out, cube = run_file(args.input, args.output, dataset=args.dataset, overwrite=args.overwrite,
                             denoise_model=None if args.no_denoise else args.denoise_model,
                             center_model=args.center_model, ellipse_model=args.ellipse_model, device=args.device,
                             batch_size=args.batch_size, progress=not args.quiet, fit=args.fit, robust=args.robust,
                             client=client)
    finally:
        if client is not None:
            client.close()
    n = cube.data.shape[0] * cube.data.shape[1]
    print(f"processed {n} patterns in {time.time() - t0:.1f} s -> {out}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from .example import load_example
    from .io import save_atomic
    from .reporting import report

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cube, truth = load_example()
    print(f"example cube (simulated with abTEM + this package's noise model): shape {cube.data.shape}")
    result = cube.prenet_preprocess(device=args.device, progress=not args.quiet)
    h5 = save_atomic(out / "prenet_demo.h5", result, overwrite=True)
    png, page = report(result, out / "prenet_demo.png", raw=cube, truth=truth)
    print(f"wrote {h5}, {png} and {page}")


def _cmd_report(args: argparse.Namespace) -> None:
    from .io import check_output
    from .reporting import REPORT_FORMATS, report
    from .stream import open_cube

    out = Path(args.output)
    if out.suffix.lower() not in REPORT_FORMATS:
        raise InputError(f"report {out}: the figure is written as {', '.join(REPORT_FORMATS)}; "
                         "give the output one of these suffixes")
    check_output(out, args.overwrite, inputs=(args.processed, *((args.input,) if args.input else ())))
    check_output(out.with_suffix(".html"), args.overwrite,
                 inputs=(args.processed, *((args.input,) if args.input else ())))
    result = open_cube(args.processed)
    raw = open_cube(args.input, args.dataset) if args.input else None
    figure, page = report(result, out, raw=raw)
    print(f"wrote {figure} and {page}")


def _cmd_simulate(args: argparse.Namespace) -> None:
    from .simulate.library import generate_library

    structures = args.structures
    if args.split:
        from .simulate.structures import list_structures
        from .train.data import split_of

        pool = structures or [s.name for s in list_structures(args.category)]
        structures = [n for n in pool if split_of(n) == args.split]
    stats = generate_library(args.output, args.n, args.seed, detector=args.detector, workers=args.workers,
                             structures=structures, category=None if structures else args.category,
                             phonons=args.phonons, progress=not args.quiet, device=args.device,
                             recipe=args.recipe)
    print(stats)


def _cmd_train(args: argparse.Namespace) -> None:
    import torch

    from .train.loop import train

    if args.threads:
        torch.set_num_threads(args.threads)
    path = train(args.task, args.library, args.output_dir, size=args.size, seed=args.seed, steps=args.steps,
                 batch=args.batch, device=args.device, progress=not args.quiet, until=args.until)
    print(f"wrote {path}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluate.harness import evaluate_all

    tables = evaluate_all(args.library, device=args.device, quick=args.quick, tasks=tuple(args.tasks))
    text = "\n\n".join(t.text() for t in tables)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    if args.records:
        import json

        with open(args.records, "w") as f:
            for task, table in zip(args.tasks, tables, strict=True):
                for record in table.records:
                    f.write(json.dumps({"task": task, **record}) + "\n")
    if args.update_manifest:
        from .evaluate.harness import manifest_metrics
        from .simulate.library import PatternLibrary
        from .weights import catalogue, update_metrics

        defaults = catalogue()["defaults"]
        detector = PatternLibrary(args.library).detector
        for task, table in zip(args.tasks, tables, strict=True):
            model = defaults[task.split("-")[0]]  # center-scans -> the center model
            figures = {f"{k}_{detector}px": v for k, v in manifest_metrics(table).items()}
            update_metrics(model, {**figures, f"evaluated_on_{detector}px": Path(args.library).name},
                           manifest_path=Path(args.update_manifest))


def _cmd_weights(args: argparse.Namespace) -> None:
    from .weights import REGISTRY_NAME, install_weights, registry_dir

    manifest = Path(args.manifest) if args.manifest else registry_dir() / REGISTRY_NAME
    entry = install_weights(Path(args.file), args.name, default=args.default, manifest_path=args.manifest)
    print(f"installed {args.name} into {manifest}: {entry['file']} sha256 {entry['sha256'][:16]}...")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``prenet``."""
    p = argparse.ArgumentParser(prog="prenet", description="Deep-learning preprocessing of 4D-STEM data (4D-PreNet)")
    p.add_argument("--version", action="version", version=f"py4dstem-prenet {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")

    r = sub.add_parser("run", help="denoise, centre and ellipse-correct a cube; stream it to an EMD file")
    r.add_argument("input", help="any file py4DSTEM reads (EMD/HDF5, .mib, .blo, .dm4, ...)")
    r.add_argument("-o", "--output", required=True, help="output EMD (.h5) file, written atomically")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    r.add_argument("--dataset", help="the cube's dataset path inside an HDF5 file (when it holds several)")
    r.add_argument("--scheduler", help="address of a Dask scheduler (tcp://host:8786) whose workers do the work; "
                   "they must see the input file at the same path")
    r.add_argument("--batch-size", type=int, default=64, help="patterns per network call (a positive integer)")
    r.add_argument("--no-denoise", action="store_true", help="measure and correct on the raw patterns")
    r.add_argument("--fit", choices=["plane", "parabola", "bezier_two", "constant"],
                   help="align with a smooth fit of the origins across the scan instead of the raw measurement")
    r.add_argument("--robust", action="store_true", help="robust (outlier-rejecting) origin fit")
    for task in ("denoise", "center", "ellipse"):
        r.add_argument(f"--{task}-model", default="default", help=f"{task} model: manifest name or .safetensors file")
    common(r)
    r.set_defaults(func=_cmd_run)

    d = sub.add_parser("demo", help="run the whole chain on the built-in simulated example cube")
    d.add_argument("-o", "--output-dir", default="prenet_demo", help="folder for prenet_demo.h5 and .png")
    common(d)
    d.set_defaults(func=_cmd_demo)

    q = sub.add_parser("report", help="QA report (PNG + HTML) of a cube written by prenet run")
    q.add_argument("processed", help="output EMD file of prenet run")
    q.add_argument("-o", "--output", required=True,
                   help="figure path, .png, .pdf or .svg (an HTML page with a PNG of it is written beside it)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing figure and page")
    q.add_argument("--input", help="the raw input file, for example patterns before/after denoising")
    q.add_argument("--dataset", help="the cube's dataset path inside the raw HDF5 file (when it holds several)")
    q.set_defaults(func=_cmd_report)

    s = sub.add_parser("simulate", help="simulate a library of clean patterns with abTEM (extra [simulate])")
    s.add_argument("output", help="library HDF5 file (resumed if it exists)")
    s.add_argument("-n", type=int, required=True, help="number of patterns")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--detector", type=int, default=128, help="pattern side, pixels")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--category", choices=["crystal", "amorphous"])
    s.add_argument("--structures", nargs="+", help="built-in structure names and/or CIF files (default: all)")
    s.add_argument("--split", choices=["train", "val", "test"], help="only structures of this split")
    s.add_argument("--phonons", action="store_true", help="frozen phonons for some patterns")
    s.add_argument("--recipe", choices=["default", "hard"], default="default",
                   help="optics ranges (simulate.abtem_sim.RECIPES; hard: 200/300 kV, 0.5-25 mrad, 2-30 nm, "
                   "tilts to 1 degree)")
    s.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="abTEM on the CPU or a GPU (CuPy)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_simulate)

    t = sub.add_parser("train", help="train one network on a library (resumable)")
    t.add_argument("task", choices=["denoise", "center", "ellipse"])
    t.add_argument("--library", required=True)
    t.add_argument("-o", "--output-dir", required=True, help="checkpoint, log and weights folder")
    t.add_argument("--size", choices=["compact", "compact-neighbours", "fast", "paper"], default="compact",
                   help="compact-neighbours: the denoiser whose input also holds the 4 scan neighbours; "
                   "fast: the centre network on 64 x 64")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int)
    t.add_argument("--batch", type=int)
    t.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: all cores)")
    t.add_argument("--until", type=int, help="stop this run at that step and write the best weights so far "
                   "(resume later with the same arguments)")
    common(t)
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="held-out evaluation: ours vs py4DSTEM's classical methods")
    e.add_argument("library", help="a library of test-split structures (prenet simulate --split test)")
    e.add_argument("-o", "--output", help="also write the tables to this text file")
    e.add_argument("--quick", action="store_true", help="fewer samples (under ~8 min on one core)")
    e.add_argument("--records", help="also write one JSON line per sample (truth, dose, detector parameters, "
                   "conditions, each method's result) to this file")
    e.add_argument("--tasks", nargs="+", choices=["center", "center-scans", "ellipse", "denoise"],
                   default=["center", "center-scans", "ellipse", "denoise"])
    e.add_argument("--update-manifest", metavar="MANIFEST",
                   help="record the figures in the default models' entries of this manifest file (a source "
                        "checkout's py4dstem_prenet/weights_manifest.json; the installed package is never written)")
    common(e)
    e.set_defaults(func=_cmd_evaluate)

    w = sub.add_parser("weights", help="register trained weights in your model registry (or a checkout's manifest)")
    w.add_argument("file", help=".safetensors file written by `prenet train`")
    w.add_argument("--name", required=True, help="manifest name, e.g. center-compact")
    w.add_argument("--default", action="store_true", help="make it the task's default model")
    w.add_argument("--manifest", help="write this manifest instead of your registry (a source checkout's "
                                      "py4dstem_prenet/weights_manifest.json, to ship the weights with the package)")
    w.set_defaults(func=_cmd_weights)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``prenet`` console script; returns the exit status."""
    from .weights import WeightsError

    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a killed run cleans up like Ctrl-C
    try:
        if args.command in ("run", "demo", "train", "evaluate"):  # before any folder or file is made
            from .validation import check_device

            check_device(args.device)
        args.func(args)
    except (InputError, WeightsError, ValueError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError | FileNotFoundError):
            message = f"{type(exc).__name__}: {message}"
        print(f"prenet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prenet {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
