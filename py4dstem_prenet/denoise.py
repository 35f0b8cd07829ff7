"""Denoising: the U-Net + CBAM network applied pattern by pattern, counts in, counts out (the pass over a
cube is :func:`pipeline.transform`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .batches import iter_batches
from .lowrank import lowrank_ladder, project
from .noise_estimate import NoiseModel, estimate_noise
from .normalization import from_network, to_network
from .runner import apply_network, resolve_device, to_device
from .selfcheck import (
    Decision,
    RiskTerms,
    combine,
    divergence,
    noise_variance,
    reduction,
    removal_mask,
    risk,
    risk_terms,
)
from .weights import LoadedModel, load_model


def denoise_input(counts: torch.Tensor, inp: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Network input and per-pattern scales for counts ``(n, Qx, Qy)``, or ``(n, 5, Qx, Qy)`` holding each
    pattern and its four scan neighbours (up, down, left, right) for a model with ``inp["neighbours"]``.

    Channels: the pattern normalised as in :func:`normalization.to_network`; the neighbours in the same
    units (square root, divided by the pattern's scale); with ``inp["noise_map"]`` a constant map of the
    shot-noise level in those units, ``0.5 / scale`` (the standard deviation of the square root of
    Poisson counts is 1/2), so the network knows how much noise there is to remove.
    """
    centre = counts[:, 0] if counts.ndim == 4 else counts
    x, scale = to_network(centre)
    parts = [x]
    if inp.get("neighbours", 0):
        if counts.ndim != 4:
            raise ValueError("this denoise model needs each pattern's scan neighbours (input (n, 5, Qx, Qy))")
        parts.append(counts[:, 1:].clamp_min(0).sqrt() / scale.view(-1, 1, 1, 1))
    if inp.get("noise_map", False):
        parts.append((0.5 / scale).view(-1, 1, 1, 1).expand_as(x))
    return torch.cat(parts, dim=1), scale


def denoise_block(loaded: LoadedModel, counts: torch.Tensor) -> torch.Tensor:
    """Denoised counts ``(n, Qx, Qy)`` for noisy counts ``(n, Qx, Qy)`` (or ``(n, 5, Qx, Qy)`` with the scan
    neighbours, see :func:`denoise_input`), float32 on the network's device."""
    x, scale = denoise_input(counts, loaded.entry.input)
    return from_network(apply_network(loaded, x), scale)


LOWRANK = "low-rank"
NEIGHBOURS = "denoise-compact-neighbours"


@dataclass
class DenoisePlan:
    """What the self-check decided for one dataset (:func:`plan_denoise`), applied batch by batch by
    :func:`apply_plan`.

    noise : the detector's noise model; the denoiser works in electrons, ``(x - offset) / gain``, and
        returns the input's units.
    weights : candidate -> weight in ``sum w_i f_i + (1 - sum w_i) y`` (candidates: denoise model names and
        ``"low-rank"``); only candidates with a weight > 0 are run.
    basis : the low-rank candidate's orthonormal basis patterns ``(rank, Qx * Qy)`` (electrons), the
        leading right singular vectors of the sample, rank chosen by the risk estimate; every batch is
        projected onto it, so the result does not depend on the batch size.
    decision : the risk estimates behind the choice.
    patterns : number of patterns the estimate was made on.
    """

    noise: NoiseModel
    weights: dict[str, float]
    basis: torch.Tensor | None
    decision: Decision
    patterns: int
    primary: str = "default"

    @property
    def needs_neighbours(self) -> bool:
        return any(w > 0 and k != LOWRANK and load_model("denoise", k).entry.input.get("neighbours", 0)
                   for k, w in self.weights.items())

    @property
    def loaded(self) -> LoadedModel:
        """The main network (provenance)."""
        return load_model("denoise", self.primary)

    def metadata(self) -> dict[str, Any]:
        """Flat plain values for the ``prenet_denoise`` metadata (units in the names or the ``units`` key)."""
        d = self.decision
        out = {"units": "the input's (denoised in electrons: (input - noise_offset) / noise_gain)"}
        out.update({f"noise_{k}": v for k, v in self.noise.as_dict().items()})
        out.update({"selfcheck": d.summary(), "estimated_mse_reduction": d.reduction,
                    "estimated_mse_reduction_err": d.reduction_err,
                    "lowrank_rank": 0 if self.basis is None else len(self.basis),
                    "selfcheck_patterns": self.patterns})
        out["weights"] = "; ".join(f"{k} = {v:.4g}" for k, v in self.weights.items())
        out["candidate_mse_reduction"] = "; ".join(f"{k} = {v:.4g}" for k, v in d.candidate_reduction.items())
        return out


def _candidate(name: str, y: torch.Tensor, nb: torch.Tensor | None, basis: torch.Tensor | None) -> torch.Tensor:
    """Output of one candidate on electrons ``y (n, Qx, Qy)`` (``nb (n, 4, Qx, Qy)`` the scan neighbours;
    ``basis`` the low-rank candidate's patterns, see :func:`lowrank.project`)."""
    if name == LOWRANK:
        return project(y, basis.to(y.device))
    loaded = load_model("denoise", name, device=y.device)
    if loaded.entry.input.get("neighbours", 0):
        return denoise_block(loaded, torch.cat([y[:, None], nb], 1))
    return denoise_block(loaded, y)


def _finish(f: torch.Tensor, plan: DenoisePlan) -> torch.Tensor:
    """For a counting detector (no negative readings, a non-negative truth) clipping at 0, which can only
    lower the error."""
    return f.clamp_min(0) if plan.noise.counting else f


def apply_plan(plan: DenoisePlan, block: torch.Tensor) -> torch.Tensor:
    """Denoised readings ``(n, Qx, Qy)`` float32 in the input's units for a batch of readings ``(n, Qx,
    Qy)`` (or ``(n, 5, Qx, Qy)`` with the scan neighbours), as the plan says: converted to electrons,
    denoised there, converted back (``gain * e + offset``)."""
    e = plan.noise.to_electrons(block.float())
    y, nb = (e[:, 0], e[:, 1:]) if e.ndim == 4 else (e, None)
    out = y.double() * (1 - sum(plan.weights.values()))
    for name, w in plan.weights.items():
        if w > 0:
            out = out + w * _candidate(name, y, nb, plan.basis).double()
    return plan.noise.from_electrons(_finish(out, plan)).float()


def _sample_rows(data: Any, patterns: int, neighbours: bool) -> list[np.ndarray]:
    """Whole scan rows spread evenly over the scan, about ``patterns`` patterns in all, as checked blocks
    ``(Ry, Qx, Qy)`` (``(Ry, 5, Qx, Qy)`` with the scan neighbours); independent of the batch size."""
    rx, ry = int(data.shape[0]), int(data.shape[1])
    take = max(1, min(rx, -(-patterns // ry)))
    rows = np.unique(np.linspace(0, rx - 1, take).round().astype(int))
    return [b for r in rows for _, b in iter_batches(data, ry, False, rows=(r, r + 1), neighbours=neighbours)]


def _pruned(names: list[str], terms: list[RiskTerms], prune: float) -> Decision:
    """:func:`selfcheck.combine`, then networks dropped one at a time (the least useful first) while the
    estimated risk rises by less than the fraction ``prune`` of itself."""
    noise = terms[0].noise
    best = combine(names, terms, noise)
    keep = list(range(len(names)))
    while True:
        nets = [i for i in keep if names[i] != LOWRANK and best.weights[names[i]] > 0]
        trials = []
        for i in nets:
            sub = [j for j in keep if j != i]
            d = combine([names[j] for j in sub], [terms[j] for j in sub], noise)
            trials.append((d.risk.sum(), i, d))
        if not trials:
            break
        r, i, d = min(trials, key=lambda t: t[0])
        if r - best.risk.sum() > prune * best.risk.sum():
            break
        keep.remove(i)
        best = d
    weights = {n: best.weights.get(n, 0.0) for n in names}
    alone = combine(names, terms, noise).candidate_reduction
    return Decision(weights, best.risk, best.input_risk, best.reduction, best.reduction_err, alone)


def plan_denoise(data: Any, *, model: str = "default", variants: tuple[str, ...] | None = None,
                 noise: NoiseModel | None = None, device: str = "auto", batch_size: int = 64,
                 patterns: int = 256, draws: int = 1, seed: int = 0, prune: float = 0.02) -> DenoisePlan:
    """The self-check on ``data (Rx, Ry, Qx, Qy)``: estimate the noise model (unless given), run every
    candidate on about ``patterns`` patterns (whole batches, spread over the scan), estimate each one's
    error with the PG-URE (``draws`` Monte-Carlo draws of the divergence) and decide the weights of the
    blend (see :mod:`selfcheck`). A candidate whose estimated error comes out below zero (the estimate
    has failed, e.g. a low-rank reconstruction of a scan of a few patterns) is left out; with none left
    the result is the input.

    ``variants``: the candidates, denoise model names and/or ``"low-rank"``; default ``model``, the
    neighbour network (when ``model`` is ``"default"``) and the low-rank reconstruction. ``prune``: a
    network whose part in the blend lowers the estimated error by less than this fraction of it is left
    out (each network in the blend costs a full pass; the low-rank projection is nearly free).
    """
    noise = estimate_noise(data) if noise is None else noise
    if variants is None:
        variants = (model, NEIGHBOURS, LOWRANK) if model == "default" else (model, LOWRANK)
    names = list(dict.fromkeys(variants))
    for name in names:
        if name != LOWRANK:
            load_model("denoise", name)  # a wrong name fails here, before any pass
    nets = [n for n in names if n != LOWRANK]
    need_nb = any(load_model("denoise", n).entry.input.get("neighbours", 0) for n in nets)
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    s = noise.read_noise
    block = np.concatenate(_sample_rows(data, patterns, need_nb))
    e = noise.to_electrons(torch.from_numpy(block).double())
    y, nb = (e[:, 0], e[:, 1:]) if e.ndim == 4 else (e, None)
    masks = [removal_mask(y, gen).double() for _ in range(draws)]
    outs, divs = {n: [] for n in nets}, {n: [] for n in nets}
    for i in range(0, len(y), batch_size):  # the networks, a batch at a time
        yb, nbb = to_device(y[i:i + batch_size].float().numpy(), dev), None if nb is None else to_device(
            nb[i:i + batch_size].float().numpy(), dev)
        for n in nets:
            f = _candidate(n, yb, nbb, None).double().cpu()
            outs[n].append(f)
            divs[n].append(sum(divergence(y[i:i + batch_size], f, _candidate(
                n, yb - m[i:i + batch_size].float().to(dev), nbb, None).double().cpu(), m[i:i + batch_size], s)
                for m in masks) / draws)
    terms = [risk_terms(y, torch.cat(outs[n]), torch.cat(divs[n]), s) for n in nets]
    basis = None
    if LOWRANK in names and len(y) > 1:
        ladder, vt = lowrank_ladder(y)
        removed = [lowrank_ladder(y - m)[0] for m in masks]
        lr_terms = {k: risk_terms(y, f, sum(divergence(y, f, r[k], m, s) for r, m in zip(
            removed, masks, strict=True)) / draws, s) for k, f in ladder.items()}
        rank = min(lr_terms, key=lambda k: float(risk(lr_terms[k]).sum()))
        basis = vt[:rank].float()
        terms.append(lr_terms[rank])
        nets = [*nets, LOWRANK]
    valid = [i for i, t in enumerate(terms) if float(risk(t).sum()) >= 0]  # a risk below 0: the estimate failed
    nets, terms = [nets[i] for i in valid], [terms[i] for i in valid]
    noise_sum = noise_variance(y, s).flatten(1).sum(1)
    decision = _pruned(nets, terms, prune) if terms else combine([], [], noise_sum)
    w = decision.weights
    basis = basis if w.get(LOWRANK, 0) > 0 else None
    f = y + sum(w[n] * t.resid for n, t in zip(nets, terms, strict=True))
    plan = DenoisePlan(noise, w, basis, decision, len(y), model)
    final = _finish(f, plan).double()
    div = sum(w[n] * t.div for n, t in zip(nets, terms, strict=True)) + (1 - sum(w.values())) * noise_sum
    decision.risk = risk(RiskTerms(final - y, div, noise_sum)).numpy()
    decision.reduction, decision.reduction_err = reduction(decision.risk, decision.input_risk)
    return plan
