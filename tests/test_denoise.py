"""The denoiser's noise model estimate, self-check (risk estimate, blend decision) and plan, on small
deterministic simulations with a known truth."""

import numpy as np
import pytest
import torch

from py4dstem_prenet import selfcheck as sc
from py4dstem_prenet.example import example_clean, example_truth
from py4dstem_prenet.noise_estimate import estimate_noise
from py4dstem_prenet.simulate.noise import DetectorEffects, add_noise


@pytest.fixture(scope="module")
def clean():
    """Expected electrons (64, 128, 128) of 8 x 8 example patterns at 1e3 electrons per pattern."""
    c = example_clean(example_truth())[:8, :8].reshape(-1, 128, 128).astype(np.float64)
    return c / c.sum(axis=(1, 2), keepdims=True) * 1e3


def _noisy(clean, read, seed=0):
    return add_noise(torch.from_numpy(clean).float(), 1.0, torch.Generator().manual_seed(seed),
                     DetectorEffects(read_noise=read))


def test_noise_estimate_integrating_detector(clean):
    x = (_noisy(clean, 1.5) * 2.5 + 10).numpy().reshape(8, 8, 128, 128)
    nm = estimate_noise(x)
    assert not nm.counting and nm.source == "estimated"
    assert nm.gain == pytest.approx(2.5, rel=0.1)
    assert nm.read_noise == pytest.approx(1.5, rel=0.1)
    assert nm.offset == pytest.approx(10, abs=0.5)
    np.testing.assert_allclose(nm.to_electrons(nm.from_electrons(x[0, 0])), x[0, 0], atol=1e-4)


def test_noise_estimate_counting_detector(clean):
    nm = estimate_noise(_noisy(clean, 0).numpy().reshape(8, 8, 128, 128))
    assert nm.counting and nm.gain == 1 and nm.read_noise == 0 and nm.offset == 0


def _smooth(y, sigma=1.5):
    r = torch.arange(-4, 5, dtype=torch.float64)
    k = torch.exp(-r**2 / (2 * sigma**2))
    k = (k[:, None] * k[None]) / k.sum() ** 2
    return torch.nn.functional.conv2d(y.double()[:, None], k[None, None], padding=4)[:, 0]


@pytest.mark.parametrize("read", [0.0, 1.0])
def test_risk_estimate_matches_true_error(clean, read):
    y = _noisy(clean, read).double()
    f = _smooth(y)
    gen = torch.Generator().manual_seed(1)
    masks = [sc.removal_mask(y, gen).double() for _ in range(2)]
    div = sum(sc.divergence(y, f, _smooth(y - m), m, read) for m in masks) / 2
    terms = sc.risk_terms(y, f, div, read)
    true = ((f - torch.from_numpy(clean)) ** 2).sum().item()
    assert sc.risk(terms).sum().item() == pytest.approx(true, rel=0.1)
    true_input = ((y - torch.from_numpy(clean)) ** 2).sum().item()
    assert terms.noise.sum().item() == pytest.approx(true_input, rel=0.05)


def test_combination_never_estimated_worse_than_input(clean):
    y = _noisy(clean, 1.0).double()
    bad = y + 5 * torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    terms = sc.risk_terms(y, bad, sc.identity_terms(y, 1.0).div, 1.0)  # d = 1 like the input
    decision = sc.combine(["bad"], [terms], terms.noise)
    assert decision.weights["bad"] < 0.05
    assert decision.reduction >= 0 and decision.candidate_reduction["bad"] < -1


def test_prenet_denoise_records_the_self_check(cube, untrained):
    out = cube.prenet_denoise(model=untrained["denoise"], device="cpu", batch_size=5, progress=False)
    meta = out.metadata["prenet_denoise"]
    assert "estimated MSE reduction" in meta["selfcheck"] and meta["estimated_mse_reduction"] >= 0
    assert meta["noise_counting"] in (True, False) and meta["noise_gain"] > 0
    # counts conserved: the totals agree within the Poisson error of each pattern
    tin, tout = cube.data.sum(axis=(2, 3)).astype(float), out.data.sum(axis=(2, 3))
    assert np.all(np.abs(tout - tin) < 3 * np.sqrt(tin))


def test_no_candidate_means_the_input(clean):
    y = _noisy(clean, 0).double()
    decision = sc.combine([], [], sc.identity_terms(y, 0.0).noise)
    assert decision.weights == {} and decision.reduction == 0
