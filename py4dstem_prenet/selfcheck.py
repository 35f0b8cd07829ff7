"""The denoiser's self-check: its mean squared error estimated from the noisy data alone, and the
per-dataset decision that follows from it.

Data ``y`` in electrons (see :mod:`noise_estimate`): ``y = Poisson(mu) + Normal(0, s^2)``. For an
estimator ``f`` the Poisson-Gaussian unbiased risk estimate (PG-URE, Luisier, Vonesch & Unser 2011) of
its summed squared error ``sum_k (f_k(y) - mu_k)^2`` is, to first order in each pixel's influence on its
own output,

    R(f) = sum_k (f_k - y_k)^2 - sum_k v_k + 2 sum_k v_k d_k,     v_k = y_k + s^2,

with ``v_k`` the unbiased estimate of pixel ``k``'s noise variance and ``d_k`` how much ``f_k`` changes
per electron removed from ``y_k`` (the Poisson identity ``E[mu g(y)] = E[y g(y - 1)]`` asks for the
backward difference, which differs from the derivative for a pixel holding a few counts). ``sum v_k d_k``
is estimated by Monte Carlo with one extra evaluation of ``f`` per draw: one electron is removed from a
random fraction ``p`` (0.1) of the pixels (``b_k = 1``; a fraction ``h_k < 1`` of an electron where the
pixel holds less), ``c_k = (b_k - p) / (p (1 - p))``, and
``sum_k v_k c_k (f_k(y) - f_k(y - h b)) / h_k`` has expectation ``sum_k v_k d_k`` (every other pixel's influence on
``f_k`` enters with a zero-mean weight and cancels; a sparse removal keeps the pattern close to itself,
a dense one biases the estimate low). On held-out simulations it is within a few % of the true error.
The input itself (``f = y``, ``d = 1``) has ``R = sum v``, its noise.

The decision: candidates ``f_i`` (the networks, a low-rank reconstruction) are combined as
``sum_i w_i f_i + (1 - sum_i w_i) y`` with weights ``w_i >= 0``, ``sum w_i <= 1``; the estimated risk is
quadratic in ``w`` (:func:`combine`), so the best weights are exact, and ``w = 0`` (the input) is always a
candidate: the result is never estimated to be worse than the input. The input and the low-rank
projection conserve every pattern's counts on average, so a blend dominated by them keeps the weak
features a network alone would lose.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class RiskTerms:
    """Per-pattern sums for one estimator on a set of patterns (electrons^2): ``resid`` the difference
    ``f - y`` (kept for the combination), ``div`` ``sum v d``, ``noise`` ``sum v``."""

    resid: torch.Tensor
    div: torch.Tensor
    noise: torch.Tensor


def noise_variance(y: torch.Tensor, read_noise: float) -> torch.Tensor:
    """Unbiased per-pixel estimate of the noise variance, ``y + s^2`` (electrons^2; may be negative for a
    single reading, its mean is right)."""
    return y + read_noise**2


REMOVAL_FRACTION = 0.1


def removal_mask(y: torch.Tensor, generator: torch.Generator, p: float = REMOVAL_FRACTION) -> torch.Tensor:
    """The Monte-Carlo perturbation ``h`` (electrons) for readings ``y``: on a random fraction ``p`` of the
    pixels ``clip(y, 0.05, 1)`` (one electron where there is one, the backward difference the Poisson
    identity asks for; a fraction of one where a pixel holds less, a derivative for the read noise), 0
    elsewhere, so that the removal stays a small part of every pattern's counts."""
    b = (torch.rand(tuple(y.shape), generator=generator) < p).to(y.device)
    return torch.where(b, y.clamp(0.05, 1.0), torch.zeros_like(y)).float()


def divergence(y: torch.Tensor, f: torch.Tensor, f_removed: torch.Tensor, mask: torch.Tensor,
               read_noise: float, p: float = REMOVAL_FRACTION) -> torch.Tensor:
    """One Monte-Carlo draw of ``sum_k v_k d_k`` per pattern from ``f = f(y)`` and
    ``f_removed = f(y - mask)`` (``mask`` from :func:`removal_mask`), all ``(n, Qx, Qy)`` electrons (see
    the module docstring)."""
    v = noise_variance(y.double(), read_noise)
    h = y.double().clamp(0.05, 1.0)
    c = ((mask.double() > 0).double() - p) / (p * (1 - p))
    return (v * c * (f.double() - f_removed.double()) / h).flatten(1).sum(1)


def risk_terms(y: torch.Tensor, f: torch.Tensor, div: torch.Tensor, read_noise: float) -> RiskTerms:
    """:class:`RiskTerms` of an estimator from its output ``f = f(y)`` and its divergence term (the mean
    of :func:`divergence` draws), ``(n, Qx, Qy)`` electrons."""
    v = noise_variance(y.double(), read_noise)
    return RiskTerms((f.double() - y.double()), div, v.flatten(1).sum(1))


def identity_terms(y: torch.Tensor, read_noise: float) -> RiskTerms:
    """:class:`RiskTerms` of the input itself (``d = 1``)."""
    v = noise_variance(y.double(), read_noise)
    n = v.flatten(1).sum(1)
    return RiskTerms(torch.zeros_like(y, dtype=torch.float64), n, n)


def risk(terms: RiskTerms) -> torch.Tensor:
    """Estimated summed squared error per pattern (electrons^2)."""
    return terms.resid.square().flatten(1).sum(1) - terms.noise + 2 * terms.div


@dataclass
class Decision:
    """The self-check's choice on a dataset.

    weights : weight of each candidate (the input gets ``1 - sum``).
    risk, input_risk : estimated summed squared error per pattern of the result and of the input.
    reduction, reduction_err : estimated MSE reduction (fraction, 1 - risk / input risk) and its standard
        error over the patterns (bootstrap).
    candidate_reduction : the same for each candidate alone (no blend).
    """

    weights: dict[str, float]
    risk: np.ndarray
    input_risk: np.ndarray
    reduction: float
    reduction_err: float
    candidate_reduction: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        used = {k: round(w, 3) for k, w in self.weights.items() if w > 0}
        choice = ("the input (no candidate estimated to help)" if not used else
                  " + ".join(f"{w:g} x {k}" for k, w in used.items()) +
                  (f" + {1 - sum(used.values()):.3g} x input" if sum(used.values()) < 1 - 1e-9 else ""))
        if self.reduction > 1:  # a negative risk: the estimate has failed on these data
            return ("estimated MSE reduction not measurable (the risk estimate came out below zero: too few "
                    f"patterns or counts); result = {choice}")
        return (f"estimated MSE reduction {100 * self.reduction:.1f} +- {100 * self.reduction_err:.1f} % "
                f"(from the noisy data alone); result = {choice}")


def reduction(risk_p: np.ndarray, input_p: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """``1 - sum risk / sum input`` and its bootstrap standard error over patterns."""
    red = 1 - risk_p.sum() / input_p.sum()
    if len(risk_p) < 2:
        return float(red), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(risk_p), (200, len(risk_p)))
    boot = 1 - risk_p[idx].sum(1) / input_p[idx].sum(1)
    return float(red), float(boot.std())


def combine(names: list[str], terms: list[RiskTerms], noise: torch.Tensor) -> Decision:
    """The weights minimising the estimated risk of ``sum w_i f_i + (1 - sum w_i) y`` over ``w_i >= 0``,
    ``sum w_i <= 1`` (exact: every face of the constraint set is solved in closed form)."""
    k = len(terms)
    if k == 0:  # no candidate: the input
        red, err = reduction(noise.numpy(), noise.numpy())
        return Decision({}, noise.numpy(), noise.numpy(), red, err, {})
    flat = [t.resid.flatten(1) for t in terms]
    gram_p = torch.stack([torch.stack([(a * b).sum(1) for b in flat], -1) for a in flat], -2)  # (n, k, k)
    lin_p = torch.stack([t.div - noise for t in terms], -1)  # (n, k)
    gram, lin = gram_p.sum(0).numpy(), lin_p.sum(0).numpy()

    def total(w):
        return float(w @ gram @ w + 2 * w @ lin)

    best = np.zeros(k)
    for size in range(1, k + 1):
        for sub in itertools.combinations(range(k), size):
            s = list(sub)
            g, b = gram[np.ix_(s, s)], lin[s]
            sols = []
            try:
                sols.append(np.linalg.solve(g, -b))
                ones = np.ones(size)  # on the face sum w = 1 (no input left)
                gi_b, gi_1 = np.linalg.solve(g, -b), np.linalg.solve(g, ones)
                sols.append(gi_b + gi_1 * (1 - ones @ gi_b) / (ones @ gi_1))
            except np.linalg.LinAlgError:
                continue
            for ws in sols:
                if np.all(ws >= 0) and ws.sum() <= 1 + 1e-9:
                    w = np.zeros(k)
                    w[s] = ws
                    if total(w) < total(best):
                        best = w
    wt = torch.from_numpy(best)
    risk_p = (torch.einsum("i,nij,j->n", wt, gram_p, wt) + 2 * lin_p @ wt + noise).numpy()
    input_p = noise.numpy()
    red, err = reduction(risk_p, input_p)
    alone = {n: reduction(risk(t).numpy(), input_p)[0] for n, t in zip(names, terms, strict=True)}
    return Decision({n: float(w) for n, w in zip(names, best, strict=True)}, risk_p, input_p, red, err, alone)

