"""Beam centre in three stages, each with one job: the network identifies, geometry measures, the scan
checks.

(a) Identification (:mod:`center_identify`): the centre network proposes the ``candidates`` strongest
    peaks of its probability map (on its fixed work grid, whatever the detector size).
(b) Measurement (:mod:`disk_fit`): every candidate's disk is measured by a sub-pixel robust circle fit
    of its edge at full resolution, with a standard error ``sigma`` (px). Each pattern prefers the
    fitted candidate of highest ``symmetry + symmetry_prior * ln(network probability)``. When no
    candidate's disk could be measured, the direct beam may be hidden (a beam stop, no beam in the
    frame): the pattern's most symmetric point (with the stop's dark pixels left out) is found, refined
    by a fit of the ring ridge around it, and becomes a further candidate when it is point-symmetric
    (at least ``hidden_symmetry``) and clearly more so than the network's peak (by ``hidden_margin``).
    A circle fitted to the edge of a ring around a hidden beam is a disk-edge measurement of the
    optical axis too.
(c) Scan consensus (:mod:`scan_consensus`): across the scan the direct beam is the candidate that follows
    the smooth descan; each position takes its candidate nearest a robust smooth surface, from the
    candidates stored in the one pass (no pattern is read again).

Every number these stages use lives in the ``postprocess`` dict of the centre model's manifest entry
(:class:`CentreSettings`), chosen by ``benchmarks/center_tune.py`` on validation data, and is recorded in
the ``prenet_center`` metadata. Positions are pixels, py4DSTEM axes (qx = row, qy = column, pixel
centres at integers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from . import engine, scan_consensus
from .center_identify import heatmap, network_candidates, symmetry_centre, symmetry_scores
from .disk_fit import DiskFit, FitSettings, background_level, fit_disk, impulse_mask
from .ellipse import centred_sum
from .engine import Output, Step
from .normalization import WorkGrid
from .options import Options
from .runner import resolve_device, to_device
from .weights import LoadedModel, get_entry, load_model

__all__ = ["METHODS", "CentreSettings", "Origins", "heatmap", "locate", "measure_origins", "refine_on_disk",
           "symmetry_scores"]

#: How a position was measured (the ``method`` slice of ``prenet_origin`` holds the index).
METHODS = ("disk edge fit", "ring centre (hidden direct beam)", "symmetry centre (hidden direct beam)",
           "network only (not measured)")
DISK, RING, SYMMETRY, NETWORK = range(4)


@dataclass(frozen=True)
class CentreSettings:
    """The tuned numbers of the centre stages (see the module docstring), from a manifest entry's
    ``postprocess`` dict: ``candidates`` network peaks per pattern, those below ``min_probability``
    times the strongest peak's probability not measured; ``network_floor`` the quantile
    subtracted from the network's input, at most ``network_floor_cap`` of its range
    (:func:`center_identify.network_input`); ``symmetry_prior`` the weight of
    ``ln p``; ``duplicate`` (px) fits closer than this are one disk; ``hidden_symmetry``,
    ``hidden_margin``, ``hidden_reach`` (fraction of the detector's short side searched) and
    ``hidden_step`` (px) for a hidden direct beam; ``sigma_flag`` (px) flags a larger standard error;
    ``ambiguity`` flags a runner-up this close in score (single patterns, no consensus);
    ``consensus`` the arguments of :func:`scan_consensus.choose`; ``store_mb`` the memory (MiB) for
    patterns kept to correct the mean pattern when the consensus overrules a pattern's own choice
    (bounded whatever the cube's size); ``fit`` the
    :class:`disk_fit.FitSettings`."""

    candidates: int
    min_probability: float
    network_floor: float
    network_floor_cap: float
    symmetry_prior: float
    duplicate: float
    hidden_symmetry: float
    hidden_margin: float
    hidden_reach: float
    hidden_step: float
    sigma_flag: float
    ambiguity: float
    consensus: dict[str, Any]
    store_mb: float
    fit: FitSettings

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CentreSettings:
        """From a ``postprocess`` dict: every field, plus an optional ``tuned_by`` note (ignored here)."""
        values = {k: v for k, v in values.items() if k != "tuned_by"}
        names = {f.name for f in fields(cls)}
        missing, extra = names - set(values), set(values) - names
        if missing or extra:
            raise ValueError(f"centre postprocess settings: missing {sorted(missing)}, unknown {sorted(extra)}")
        return cls(**{**values, "fit": FitSettings.from_dict(values["fit"])})

    @classmethod
    def for_model(cls, loaded: LoadedModel) -> tuple[CentreSettings, str]:
        """The settings of a loaded centre model, and the name of the entry they come from: its own
        ``postprocess``, or (a model trained by the user, with none) the shipped default's."""
        if loaded.entry.postprocess:
            return cls.from_dict(loaded.entry.postprocess), loaded.entry.name
        entry = get_entry("center", "default")
        return cls.from_dict(entry.postprocess), entry.name

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fit"] = self.fit.as_dict()
        return d


@dataclass
class Origins:
    """Measured optical axis over the scan (all ``(Rx, Ry)``): ``qx0, qy0`` (px); ``confidence`` the
    network's probability of the chosen candidate (0..1); ``sigma`` the standard error per axis (px;
    inf when not measured, or when the identification is in doubt: off the scan consensus or, for
    single patterns, an ambiguous choice); ``flag`` True where the answer is unreliable (large sigma, failed fit,
    disagreement with the scan consensus, or an ambiguous choice); ``method`` the index into
    :data:`METHODS`; ``info`` a summary for the metadata."""

    qx0: np.ndarray
    qy0: np.ndarray
    confidence: np.ndarray
    sigma: np.ndarray | None = None
    flag: np.ndarray | None = None
    method: np.ndarray | None = None
    info: dict[str, Any] | None = None


@dataclass
class Candidates:
    """Per pattern ``k`` candidates (``(n, k)`` arrays): position (px), ``sigma`` (px), ``valid`` (may be
    chosen), ``score`` (preference), ``prob`` (network), ``method``; and ``own (n,)`` the preferred one."""

    qx: np.ndarray
    qy: np.ndarray
    sigma: np.ndarray
    valid: np.ndarray
    score: np.ndarray
    prob: np.ndarray
    method: np.ndarray
    own: np.ndarray

    def take(self, pick: np.ndarray) -> tuple[np.ndarray, ...]:
        rows = np.arange(len(pick))
        return tuple(v[rows, pick] for v in (self.qx, self.qy, self.sigma, self.prob, self.method, self.valid,
                                             self.score))


def _hidden_beam(counts: torch.Tensor, sel: np.ndarray, s: CentreSettings) -> tuple[np.ndarray, ...]:
    """For the patterns ``sel``: the most symmetric point (searched around the pedestal-subtracted
    centroid, dark beam-stop pixels left out), refined by a ring-ridge fit when that fit succeeds.
    Returns ``(qx, qy, sigma, symmetry, method)``."""
    x = counts[torch.as_tensor(sel, device=counts.device)]
    bg = background_level(x).view(-1, 1, 1)
    y = (x.float() - bg).clamp_min(0)
    n, h, w = y.shape
    gx = torch.arange(h, dtype=torch.float64, device=y.device).view(1, -1, 1)
    gy = torch.arange(w, dtype=torch.float64, device=y.device).view(1, 1, -1)
    tot = y.double().sum((1, 2)).clamp_min(1e-30)
    cx = ((y * gx).sum((1, 2)) / tot).cpu().numpy()
    cy = ((y * gy).sum((1, 2)) / tot).cpu().numpy()
    level = torch.nn.functional.avg_pool2d(y.unsqueeze(1), 4).flatten(1).amax(1).view(-1, 1, 1)
    stop = torch.nn.functional.max_pool2d((y < 1e-3 * level).float().unsqueeze(1), 5, 1, 2)[:, 0] > 0
    good = impulse_mask(x, bg.view(-1)) & ~(torch.nn.functional.avg_pool2d(stop.float().unsqueeze(1), 9, 1, 4)[:, 0]
                                            > 0.5)
    reach = s.hidden_reach * min(h, w)
    qx, qy, sym = symmetry_centre(x, cx, cy, reach, s.hidden_step, mask=good)
    ring = fit_disk(x, qx, qy, mask=good, feature="ridge", settings=s.fit)
    use = ring.ok & (np.hypot(ring.qx - qx, ring.qy - qy) <= s.hidden_step)
    sig = np.where(use, ring.sigma, np.inf)
    return (np.where(use, ring.qx, qx), np.where(use, ring.qy, qy), sig, sym,
            np.where(use, RING, SYMMETRY))


def locate(loaded: LoadedModel, counts: torch.Tensor, settings: CentreSettings, refine: bool = True,
           mask: torch.Tensor | None = None) -> Candidates:
    """Stages (a) and (b) on patterns ``counts (n, Qx, Qy)``: the network's candidates, each measured by
    the disk fit (``refine=False``: the network's positions, not measured), deduplicated and scored;
    plus one slot for a hidden direct beam (valid only where one was detected). See the module
    docstring."""
    s = settings
    good = impulse_mask(counts, background_level(counts))
    if mask is not None:
        good = good & mask.to(torch.bool).expand_as(good)
    mask = good
    qx, qy, prob = network_candidates(loaded, counts, s.candidates, s.network_floor, s.network_floor_cap,
                                      mask=good)
    n, k = qx.shape
    likely = prob >= s.min_probability * prob.max(1, keepdims=True)  # a peak the network all but rules out
    if refine:  # only the columns holding a likely peak somewhere in the batch are measured
        spread = WorkGrid.for_shape(tuple(counts.shape), loaded.entry.input.get("work_size")).factor
        kk = int(np.nonzero(likely.any(0))[0].max()) + 1
        fit: DiskFit = fit_disk(counts, qx[:, :kk], qy[:, :kk], mask=mask, spread=spread, settings=s.fit)
        pad = ((0, 0), (0, k - kk))
        fx, fy = np.pad(fit.qx, pad, constant_values=np.nan), np.pad(fit.qy, pad, constant_values=np.nan)
        sig, ok = np.pad(fit.sigma, pad, constant_values=np.inf), np.pad(fit.ok, pad)
        method = np.full((n, k), DISK)
    else:
        fx, fy, sig, ok = qx, qy, np.full((n, k), np.inf), np.ones((n, k), bool)
        method = np.full((n, k), NETWORK)
    fx, fy = np.where(ok, fx, qx), np.where(ok, fy, qy)
    for j in range(1, k):  # a later candidate on a disk already fitted adds its probability there
        for i in range(j):
            same = ok[:, j] & ok[:, i] & (np.hypot(fx[:, j] - fx[:, i], fy[:, j] - fy[:, i]) < s.duplicate)
            prob[:, i] = np.where(same, prob[:, i] + prob[:, j], prob[:, i])
            ok[:, j] &= ~same
    ok &= likely
    sym = symmetry_scores(counts, fx, fy, mask=mask)
    score = sym + s.symmetry_prior * np.log(prob + 1e-6)
    valid = ok.copy()
    none = ~valid.any(1)
    valid[none] = np.arange(k)[None] == 0  # nothing measured: the network's strongest peak, flagged
    method[none, 0] = np.where(refine, NETWORK, method[none, 0])
    own = np.argmax(np.where(valid, score, -np.inf), 1)
    hx, hy, hs = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.inf)
    hscore, hvalid, hmethod = np.full(n, -np.inf), np.zeros(n, bool), np.full(n, SYMMETRY)
    sel = np.nonzero(none)[0] if refine else np.zeros(0, int)
    if len(sel):
        cx, cy, csig, csym, cmeth = _hidden_beam(counts, sel, s)
        better = (csym >= s.hidden_symmetry) & (csym > sym[sel, own[sel]] + s.hidden_margin)
        hx[sel], hy[sel], hs[sel], hmethod[sel] = cx, cy, csig, cmeth
        hvalid[sel] = better
        hscore[sel] = np.where(better, score[sel, own[sel]] + (csym - sym[sel, own[sel]]), -np.inf)
    def cat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.asarray(b)[:, None]], 1)

    sig = np.where(valid & (method == DISK), sig, np.inf)
    c = Candidates(cat(fx, hx), cat(fy, hy), cat(sig, hs), cat(valid, hvalid), cat(score, hscore),
                   cat(prob, np.zeros(n)), cat(method, hmethod), own)
    c.own = np.where(hvalid, k, own)
    return c


def _ambiguous(c: Candidates, s: CentreSettings) -> np.ndarray:
    """``(n,)`` True where a valid runner-up, on another disk, scores within ``ambiguity`` of the choice."""
    rows = np.arange(len(c.own))
    best = c.score[rows, c.own]
    far = np.hypot(c.qx - c.qx[rows, c.own][:, None], c.qy - c.qy[rows, c.own][:, None]) >= s.duplicate
    return (c.valid & far & (c.score >= best[:, None] - s.ambiguity)).any(1)


#: The per-pattern arrays of :class:`Candidates` as engine outputs: name -> dtype.
_CANDIDATE_DTYPES = {"qx": "float64", "qy": "float64", "sigma": "float64", "valid": "bool", "score": "float64",
                     "prob": "float64", "method": "int64"}


@dataclass
class CentreStep(Step):
    """The centre pass (:mod:`engine` step): stages (a) and (b) per batch (:func:`locate`), every
    pattern's ``slots`` candidates stored (``"nav"`` outputs named as the fields of :class:`Candidates`,
    ``own`` the pattern's own choice); with ``mean`` also the centred sum at each own choice and, as an
    ``"items"`` output of at most ``store_mb``, the patterns whose choice the scan consensus is likely to
    overrule (a runner-up close in score), so that the mean can be corrected without reading them again."""

    model: str
    device: str
    slots: int
    refine: bool = True
    mean: bool = False
    mask: np.ndarray | None = None
    store_mb: float = 0.0
    desc: str = "centre"

    def outputs(self, shape: tuple[int, int, int, int]) -> dict[str, Output]:
        out = {k: Output("nav", (self.slots,), dt) for k, dt in _CANDIDATE_DTYPES.items()}
        out["own"] = Output("nav", (), "int64")
        if self.mean:
            out["centred_sum"] = Output("sum", shape[2:])
            out["runner_up_patterns"] = Output("items", limit_mb=self.store_mb)
        return out

    def process(self, start: int, block: np.ndarray) -> dict[str, Any]:
        dev = resolve_device(self.device)
        loaded = load_model("center", self.model, device=dev)
        settings, _ = CentreSettings.for_model(loaded)
        x = to_device(block, dev)
        m = None if self.mask is None else torch.as_tensor(self.mask, device=dev)
        c = locate(loaded, x, settings, self.refine, m)
        out: dict[str, Any] = {k: getattr(c, k) for k in (*_CANDIDATE_DTYPES, "own")}
        if self.mean:
            qx, qy, *_ = c.take(c.own)
            out["centred_sum"] = centred_sum(x, qx, qy)
            out["runner_up_patterns"] = {start + int(i): block[i].copy()
                                         for i in np.nonzero(_ambiguous(c, settings))[0]}
        return out


def measure_origins(
    data: Any, model: str = "default", device: str = "auto", batch_size: int = 64, progress: bool = True,
    scan_context: bool = True, refine: bool = True, mean: bool = False, client: Any = None, *,
    mask: np.ndarray | None = None,
) -> tuple[Origins, LoadedModel, np.ndarray | None]:
    """Optical axis of every pattern of a cube ``(Rx, Ry, Qx, Qy)`` (any detector from 32 px up), in one
    pass over the patterns: stages (a) and (b) per batch (:func:`locate`), then (c) the scan consensus
    on the stored candidates (``scan_context``; scans of at least ``consensus["min_positions"]``
    positions). ``refine=False`` skips the geometric fit (the network's positions, flagged).
    ``mask``: good detector pixels ``(Qx, Qy)`` bool (hot/dead pixels False), used by every stage.

    With ``mean`` the same pass accumulates the mean pattern with every optical axis moved to the
    detector centre, at the final origins (returned third, else ``None``): the patterns whose choice
    the consensus is likely to overrule (an ambiguous choice) travel back with their batch, so the
    sum is corrected without a second read (beyond ``store_mb`` of such patterns the remaining
    corrections are skipped and counted in ``info["mean_uncorrected"]``). ``client``: a
    ``dask.distributed.Client`` to spread the batches over (:mod:`engine`; same result).

    Returns ``(Origins, loaded centre model, mean or None)``.
    """
    opts = Options(device=str(device), batch_size=batch_size, progress=progress, client=client)
    dev = opts.torch_device
    loaded = load_model("center", model, device=dev)
    settings, source = CentreSettings.for_model(loaded)
    step = CentreStep(model=model, device=str(device), slots=settings.candidates + 1, refine=refine, mean=mean,
                      mask=None if mask is None else np.asarray(mask, bool), store_mb=settings.store_mb)
    res = engine.run(step, data, opts)
    rx, ry = int(data.shape[0]), int(data.shape[1])
    n = rx * ry
    c = Candidates(*(res[f.name].reshape(n, *res[f.name].shape[2:]) for f in fields(Candidates)))
    total = res.get("centred_sum")
    stored = res.get("runner_up_patterns", {})
    k = c.qx.shape[1]
    use_scan = scan_context and n >= int(settings.consensus["min_positions"])
    if use_scan:
        cons = scan_consensus.choose(c.qx.reshape(rx, ry, k), c.qy.reshape(rx, ry, k), c.valid.reshape(rx, ry, k),
                                     c.score.reshape(rx, ry, k), **settings.consensus)
        pick = cons.pick.ravel()
        agrees, changed = cons.agrees.ravel(), cons.changed.ravel()
    else:
        pick, agrees, changed = c.own, np.ones(n, bool), np.zeros(n, bool)
    qx, qy, sig, prob, method, valid, _ = c.take(pick)
    uncorrected = 0
    if mean:
        oqx, oqy, *_ = c.take(c.own)
        for i in np.nonzero(changed)[0]:
            if int(i) in stored:
                x = torch.from_numpy(stored[int(i)][None]).to(dev)
                total += centred_sum(x, qx[i:i + 1], qy[i:i + 1]) - centred_sum(x, oqx[i:i + 1], oqy[i:i + 1])
            else:
                uncorrected += 1
    doubt = ~valid | ~agrees  # the identification is in doubt: the answer has no standard error
    if not use_scan:
        doubt |= _ambiguous(c, settings)
    sig = np.where(doubt, np.inf, sig)
    flag = doubt | ~np.isfinite(sig) | (sig > settings.sigma_flag)
    info = {"methods": list(METHODS), "method_counts": {m: int((method == i).sum()) for i, m in enumerate(METHODS)},
            "flagged": int(flag.sum()), "scan_consensus": bool(use_scan),
            "consensus_changed": int(changed.sum()), "consensus_disagree": int((~agrees).sum()),
            "settings": settings.as_dict(), "settings_from": source}
    if mean:
        info["mean_uncorrected"] = uncorrected
    shape = (rx, ry)
    origins = Origins(qx.reshape(shape), qy.reshape(shape), prob.reshape(shape), sig.reshape(shape),
                      flag.reshape(shape), method.reshape(shape), info)
    return origins, loaded, None if total is None else total / n


def refine_on_disk(counts: torch.Tensor, qx: np.ndarray, qy: np.ndarray,
                   settings: FitSettings | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(qx, qy)`` (px) of the disks around starts ``(qx, qy)`` in patterns ``(n, Qx, Qy)``: the
    geometric edge fit (:func:`disk_fit.fit_disk`) with the default centre model's settings (or
    ``settings``); where the fit fails the start is returned."""
    if settings is None:
        settings = CentreSettings.from_dict(get_entry("center", "default").postprocess).fit
    f = fit_disk(counts, qx, qy, settings=settings)
    return np.where(f.ok, f.qx, qx), np.where(f.ok, f.qy, qy)
