"""One training loop for all three networks: Adam, warm-up + cosine learning rate, validation,
early stopping, atomic resumable checkpoints, a JSON-lines loss log and a progress bar.

The result is a ``.safetensors`` file of the best validation state whose metadata holds the model's
manifest entry (task, architecture, input conventions, recipe, validation metrics);
:func:`py4dstem_prenet.weights.load_user_weights` loads it and ``prenet weights install`` ships it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import geometry
from .._version import __version__
from ..ellipse import decode_output
from ..models import build_model
from ..normalization import work_to_detector
from ..runner import resolve_device
from ..simulate.augment import AugmentRanges
from ..simulate.library import PatternLibrary
from ..simulate.structures import list_structures
from ..weights import write_weights
from .data import Batch, TrainingData
from .recipes import ARCHITECTURES, TRAINING, inputs_for


def make_batch(task: str, data: TrainingData, seed: int, step: int, n: int, size: str = "compact") -> Batch:
    """The batch of ``step``: a pure function of ``(seed, step)``."""
    rng = np.random.default_rng([seed, step])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    inp = inputs_for(task, size)
    if task == "denoise":
        return data.denoise_batch(rng, gen, n, inp)
    if task == "center":
        return data.center_batch(rng, gen, n, inp["heatmap_sigma"], inp.get("work_size"))
    return data.ellipse_batch(rng, gen, n, tuple(inp["patterns_per_mean"]), (inp["n_r"], inp["n_theta"]),
                              inp["ratio_scale"])


def loss_and_metrics(task: str, net: nn.Module, batch: Batch, device: torch.device,
                     size: str = "compact") -> tuple[torch.Tensor, dict]:
    """Training loss and task metrics (denoise: PSNR dB; centre: mean radial error px; ellipse: errors), with
    the input settings of network ``size`` (:func:`recipes.inputs_for`, the ones its manifest entry records)."""
    inp = inputs_for(task, size)
    x, target = batch.x.to(device), batch.target.to(device)
    y = net(x)
    if task == "denoise":  # MSE in counts relative to the input's Poisson MSE (the mean expected count)
        scale = torch.as_tensor(batch.labels["scale"], dtype=y.dtype, device=device).view(-1, 1, 1, 1)
        expected = (target * scale).square()
        ratio = ((y * scale).square() - expected).square().mean((1, 2, 3)) / expected.mean((1, 2, 3)).clamp_min(1e-3)
        mse = torch.mean((y - target) ** 2, dim=(1, 2, 3)).detach()
        return ratio.mean(), {"mse_ratio": ratio.detach().mean().item(),
                              "psnr_db": (-10 * torch.log10(mse.clamp_min(1e-12))).mean().item()}
    if task == "center":
        n = y.shape[0]
        logp = torch.log_softmax(y.reshape(n, -1), dim=1)
        t = target.reshape(n, -1)
        cross_entropy = -(t / t.sum(1, keepdim=True) * logp).sum(1).mean()
        qx, qy, _ = geometry.weighted_com(logp.exp().reshape(y[:, 0].shape), inp["com_window"], inp["com_floor"])
        fx, fy = batch.labels["work_factor"]
        qx, qy = work_to_detector(qx, fx), work_to_detector(qy, fy)
        err = torch.hypot(qx - torch.as_tensor(batch.labels["qx0"], dtype=qx.dtype, device=device),
                          qy - torch.as_tensor(batch.labels["qy0"], dtype=qy.dtype, device=device))
        return cross_entropy + err.mean(), {"mae_r_px": err.detach().mean().item(),
                                            "median_r_px": err.detach().median().item()}
    weight = torch.clamp((target[:, 2] / inp["ratio_scale"]) / 0.02, max=1.0)
    loss = torch.mean((y[:, 2] - target[:, 2]) ** 2) + torch.mean(weight * ((y[:, :2] - target[:, :2]) ** 2).sum(1))
    ratio, theta, _ = decode_output(y, inp["ratio_scale"])
    sel = batch.labels["ratio"] > 1.01
    ang = np.degrees(geometry.angle_difference(theta[sel], batch.labels["theta"][sel])).mean() if sel.any() else 0.0
    return loss, {"ratio_err": float(np.abs(ratio - batch.labels["ratio"]).mean()), "angle_err_deg": float(ang)}


def library_provenance(path: str | Path) -> dict:
    """How to rebuild the library a network was trained on (its completed patterns, seed, detector)."""
    lib = PatternLibrary(path)
    rows = lib.metadata()["index"]
    complete = bool(len(rows) and rows[-1] == len(rows) - 1)
    structures = "all" if lib.category is None and len(lib.structures) >= len(list_structures()) else lib.structures
    out = {"file": Path(path).name, "patterns": len(lib), "seed": lib.seed, "detector": lib.detector,
           "structures": structures, "phonons": lib.phonons}
    if complete:  # patterns 0..n-1 of seed s: exactly what `prenet simulate -n n --seed s` makes
        out["command"] = f"prenet simulate LIBRARY -n {len(lib)} --seed {lib.seed} --detector {lib.detector}"
    else:
        out["indices"] = rows.tolist()
    return out


def _lr_factor(step: int, steps: int, warmup: int = 100) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(task: str, library: str, out_dir: str | Path, *, size: str = "compact", seed: int = 0,
          steps: int | None = None, batch: int | None = None, device: str = "auto",
          progress: bool = True, checkpoint_every: int = 50, until: int | None = None) -> Path:
    """Train (or resume training of) one network; returns the path of the best weights.

    Files in ``out_dir``: ``checkpoint.pt`` (resumable state, replaced atomically),
    ``log.jsonl`` (one line per validation), ``<task>-<size>.safetensors`` (best validation state,
    with its manifest entry in the metadata; ``recipe.steps_run`` says how far training went).
    Re-running with the same arguments resumes. ``until``: stop this run at that step (a slice of the
    schedule, e.g. one per session) and write the best weights so far; the recipe is unchanged.
    """
    if task not in ARCHITECTURES:
        raise ValueError(f"task must be one of {sorted(ARCHITECTURES)}, got {task!r}")
    if size not in ARCHITECTURES[task]:
        raise ValueError(f"size must be one of {sorted(ARCHITECTURES[task])}, got {size!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dict(TRAINING[task][size])
    cfg.update({k: v for k, v in {"steps": steps, "batch": batch}.items() if v is not None})
    dev = resolve_device(device)
    torch.manual_seed(seed)
    net = build_model(ARCHITECTURES[task][size]).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg["steps"]))
    recipe = {"task": task, "size": size, "library": library_provenance(library), "seed": seed, **cfg,
              "optimizer": "Adam", "schedule": "linear warm-up 100 steps + cosine to 5%",
              "early_stopping": f"patience {cfg['patience']} validations", "package_version": __version__}
    state = {"step": 0, "best": math.inf, "bad": 0, "best_state": None, "seconds": 0.0, "best_metrics": {}}
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=True, map_location=dev)
        if saved["recipe"] != recipe:
            raise ValueError(f"{ckpt} was made with a different recipe; use another out_dir or delete it")
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        state = saved["state"]
    ranges = AugmentRanges(**cfg.get("augment", {}))
    train_data, val_data = TrainingData(library, "train", ranges), TrainingData(library, "val", ranges)
    val_batches = [make_batch(task, val_data, seed + 1, 10**6 + i, cfg["batch"], size)
                   for i in range(cfg["val_batches"])]
    bar = tqdm(total=cfg["steps"], initial=state["step"], desc=f"train {task}", disable=not progress)
    t0 = time.time() - state["seconds"]
    stop_at = cfg["steps"] if until is None else min(until, cfg["steps"])
    while state["step"] < stop_at and state["bad"] < cfg["patience"]:
        net.train()
        batch_ = make_batch(task, train_data, seed, state["step"], cfg["batch"], size)
        loss, metrics = loss_and_metrics(task, net, batch_, dev, size)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        state["step"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4g}", **{k: f"{v:.4g}" for k, v in metrics.items()})
        if state["step"] % cfg["val_every"] == 0 or state["step"] == cfg["steps"]:
            val_loss, val_metrics = _validate(task, net, val_batches, dev, size)
            improved = val_loss < state["best"]
            if improved:
                state.update(best=val_loss, bad=0, best_metrics=val_metrics,
                             best_state={k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
            else:
                state["bad"] += 1
            with open(out / "log.jsonl", "a") as log:
                log.write(json.dumps({"step": state["step"], "train_loss": loss.item(), "val_loss": val_loss,
                                      **{f"val_{k}": v for k, v in val_metrics.items()},
                                      "lr": sched.get_last_lr()[0], "seconds": time.time() - t0}) + "\n")
        if state["step"] % checkpoint_every == 0 or state["step"] == cfg["steps"]:
            state["seconds"] = time.time() - t0
            _atomic_torch_save({"model": net.state_dict(), "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict(), "state": state, "recipe": recipe}, ckpt)
    bar.close()
    state["seconds"] = time.time() - t0
    recipe.update(steps_run=state["step"], train_seconds=round(state["seconds"]), device=str(dev),
                  threads=torch.get_num_threads())
    entry = {"task": task, "architecture": ARCHITECTURES[task][size], "input": inputs_for(task, size),
             "recipe": recipe, "metrics": {"validation": state["best_metrics"]}}
    return write_weights(out / f"{task}-{size}.safetensors", state["best_state"] or net.state_dict(), entry)


@torch.no_grad()
def _validate(task: str, net: nn.Module, batches: list[Batch], device: torch.device,
              size: str) -> tuple[float, dict]:
    net.eval()
    losses, metrics = [], []
    for b in batches:
        loss, m = loss_and_metrics(task, net, b, device, size)
        losses.append(loss.item())
        metrics.append(m)
    return float(np.mean(losses)), {k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}
