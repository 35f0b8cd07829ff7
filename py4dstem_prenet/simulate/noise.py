"""The detector model: dose -> counts, with the effects of real counting and integrating detectors.

Every noisy pattern used for training, evaluation, the example cube and the tests comes from
:func:`add_noise`, whose detector is described by one :class:`DetectorEffects` (all effects off by default:
pure Poisson counting). Units: ``dose`` is the number of incident electrons per pattern; a clean pattern
holds the fraction of those electrons landing in each pixel, so ``dose * clean`` is the expected number of
electrons per pixel. Detector output is in counts (ADU); ``gain`` counts per electron (1 for counting
detectors). Read noise is in electrons rms; background, dark and hot-pixel levels are in counts.

Order of the effects in :func:`add_noise` (each skipped when off, so turning new effects on never changes
the random draws of the others)::

    expected electrons  lam = dose * clean * beam stop transmission      (beam_stop_mask)
    charge sharing/PSF  lam = lam (*) Gaussian(mtf_sigma px)             (the detector MTF, counts kept)
    flat field          lam = lam * (1 + gain_sigma N(0,1))              (counting detectors: efficiency)
    counting            n = Poisson(lam)                                 (integers)
    flat field          n = n * (1 + gain_sigma N(0,1))                  (integrating detectors: pixel gain)
    gain                n = gain * n
    saturation          n = min(n, saturation * max(n))                  (relative, per pattern)
    bit depth           n = min(n, 2**bit_depth - 1)                     (counter depth: saturated beams)
    dark                n = n + background + dark_sigma N(0,1)           (offset residual after dark
                                                                          subtraction; fixed per pixel)
    read noise          n = n + gain * read_noise N(0,1)                 (fresh per pattern, electrons rms)
    bad pixels          dead -> 0, hot -> hot_level                      (per pattern, or fixed per call)

:data:`DETECTORS` names typical detectors; :func:`draw_detector` draws a random one of a kind and
:func:`effects_record` gives the per-pattern record (a plain dict) evaluations store beside each result.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DetectorEffects:
    """Detector imperfections, all off by default (an ideal counting detector: Poisson counts).

    read_noise : standard deviation of additive Gaussian noise, electrons (counts = gain x electrons).
    background : constant level added to every pixel, counts (an unsubtracted offset; negative: a dark
        reference that over-subtracts, leaving negative values).
    gain_sigma : relative standard deviation of a fixed per-pixel gain (flat-field error); for a
        ``counting`` detector it scales the detection efficiency before counting (integer counts kept).
    hot_fraction, dead_fraction : fraction of pixels stuck high / reading zero.
    hot_level : value of a hot pixel, counts.
    fixed_pixels : the same dead/hot pixels in every pattern of a call (a real detector); False draws them
        afresh per pattern.
    saturation : clip each pattern's counts at this fraction of its largest count (a saturated direct
        beam of unknown depth); 0 = off.
    bit_depth : counter depth in bits: counts clip at ``2**bit_depth - 1`` (6, 8, 12 for Medipix/Merlin
        modes); 0 = unlimited.
    mtf_sigma : charge sharing / scintillator point spread: the expected counts are convolved with a
        normalised Gaussian of this standard deviation (px) before counting; 0 = off.
    gain : counts per electron (integrating detectors; 1 for counting detectors).
    dark_sigma : standard deviation of a fixed per-pixel dark residual, counts (dark-reference error).
    counting : True for counting detectors (flat field before counting; integer output when no read
        noise, background or dark residual).
    stop_width : beam-stop arm width, px (0 = no beam stop). The arm runs from ``stop_centre`` to the
        detector edge in direction ``stop_angle`` (radians from +qx towards +qy).
    stop_radius : radius (px) of a round stop at ``stop_centre`` over the direct beam (0 = none; a round
        stop alone is allowed).
    stop_centre : ``(qx, qy)`` of the stop tip, px; ``None`` = detector centre ``(Qx/2, Qy/2)``.
    """

    read_noise: float = 0.0
    background: float = 0.0
    gain_sigma: float = 0.0
    hot_fraction: float = 0.0
    dead_fraction: float = 0.0
    hot_level: float = 1000.0
    fixed_pixels: bool = False
    saturation: float = 0.0
    bit_depth: int = 0
    mtf_sigma: float = 0.0
    gain: float = 1.0
    dark_sigma: float = 0.0
    counting: bool = False
    stop_width: float = 0.0
    stop_radius: float = 0.0
    stop_angle: float = 0.0
    stop_centre: tuple[float, float] | None = None

    def __post_init__(self):
        for name in ("read_noise", "gain_sigma", "hot_fraction", "dead_fraction", "saturation", "mtf_sigma",
                     "dark_sigma", "stop_width", "stop_radius"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"DetectorEffects.{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.gain > 0:
            raise ValueError(f"DetectorEffects.gain must be > 0 counts per electron, got {self.gain!r}")
        if self.bit_depth < 0 or self.bit_depth > 32:
            raise ValueError(f"DetectorEffects.bit_depth must be 0 (unlimited) or 1-32, got {self.bit_depth!r}")

    @property
    def has_beam_stop(self) -> bool:
        return bool(self.stop_width or self.stop_radius)


#: Typical detectors (the centres of the ranges :func:`draw_detector` draws from).
DETECTORS = {
    "ideal": DetectorEffects(),
    "counting": DetectorEffects(counting=True, bit_depth=12, mtf_sigma=0.5, gain_sigma=0.03,
                                dead_fraction=3e-4, hot_fraction=3e-5, hot_level=4095, fixed_pixels=True),
    "counting-6bit": DetectorEffects(counting=True, bit_depth=6, mtf_sigma=0.5, gain_sigma=0.03,
                                     dead_fraction=3e-4, hot_fraction=3e-5, hot_level=63, fixed_pixels=True),
    "integrating": DetectorEffects(gain=8.0, read_noise=1.5, background=0.5, dark_sigma=1.0, gain_sigma=0.02,
                                   mtf_sigma=0.8, hot_fraction=1e-4, hot_level=2000, fixed_pixels=True),
}
KINDS = ("ideal", "counting", "integrating")


def draw_detector(rng: np.random.Generator, kind: str, *, beam_stop: float = 0.0,
                  shape: tuple[int, int] = (128, 128)) -> DetectorEffects:
    """A random detector of ``kind`` ("ideal", "counting", "integrating"); with probability ``beam_stop``
    a beam stop (arm of 3-8 % of the side, from near the centre to a random edge; half of them with a round
    stop of 4-10 % of the side over the detector centre).

    counting (Medipix/Merlin, Timepix, EMPAD-like counting modes): bit depth 6, 8 or 12, charge sharing
    0.3-0.7 px, flat field 1-5 %, dead pixels 0-1e-3, hot pixels 0-1e-4 at the counter maximum.
    integrating (CMOS/CCD): gain 1-20 counts/e (log-uniform), read noise 0-2 e rms, dark residual: a
    0-1 count pedestal and a zero-mean 0-1 count per-pixel spread (with the read noise: negative values
    after dark subtraction), PSF 0.5-1.2 px, flat field 1-3 %, hot pixels 0-1e-4. (A negative mean offset
    is not drawn: :func:`validation.check_patterns` rejects low-dose patterns whose sum is negative.)
    """
    if kind == "ideal":
        e = DetectorEffects()
    elif kind == "counting":
        bits = int(rng.choice([6, 8, 12]))
        e = DetectorEffects(counting=True, bit_depth=bits, mtf_sigma=float(rng.uniform(0.3, 0.7)),
                            gain_sigma=float(rng.uniform(0.01, 0.05)), dead_fraction=float(rng.uniform(0, 1e-3)),
                            hot_fraction=float(rng.uniform(0, 1e-4)), hot_level=float(2**bits - 1),
                            fixed_pixels=True)
    elif kind == "integrating":
        gain = float(math.exp(rng.uniform(0, math.log(20))))
        e = DetectorEffects(gain=gain, read_noise=float(rng.uniform(0, 2)), background=float(rng.uniform(0, 1)),
                            dark_sigma=float(rng.uniform(0, 1)), mtf_sigma=float(rng.uniform(0.5, 1.2)),
                            gain_sigma=float(rng.uniform(0.01, 0.03)), hot_fraction=float(rng.uniform(0, 1e-4)),
                            hot_level=float(gain * rng.uniform(200, 2000)), fixed_pixels=True)
    else:
        raise ValueError(f"detector kind must be one of {KINDS}, got {kind!r}")
    if beam_stop and rng.random() < beam_stop:
        side = min(shape)
        round_stop = rng.random() < 0.5
        e = dataclasses.replace(e, stop_width=float(rng.uniform(0.03, 0.08) * side),
                                stop_radius=float(rng.uniform(0.04, 0.10) * side) if round_stop else 0.0,
                                stop_angle=float(rng.uniform(-math.pi, math.pi)),
                                stop_centre=None if round_stop else tuple(
                                    float(c + rng.uniform(-0.1, 0.1) * side) for c in (shape[0] / 2, shape[1] / 2)))
    return e


def effects_record(effects: DetectorEffects) -> dict:
    """The per-pattern record of a detector (plain JSON-able dict of every field)."""
    return dataclasses.asdict(effects)


def beam_stop_mask(shape: tuple[int, int], effects: DetectorEffects) -> torch.Tensor:
    """Transmission ``(Qx, Qy)`` float32 of the beam stop of ``effects`` (1 = open, 0 = blocked), with a
    1 px linear edge; all ones without a beam stop."""
    qx = torch.arange(shape[0], dtype=torch.float64).view(-1, 1)
    qy = torch.arange(shape[1], dtype=torch.float64).view(1, -1)
    cx, cy = effects.stop_centre if effects.stop_centre is not None else (shape[0] / 2, shape[1] / 2)
    block = torch.zeros(shape, dtype=torch.float64)
    if effects.stop_width:
        ux, uy = math.cos(effects.stop_angle), math.sin(effects.stop_angle)
        along = (qx - cx) * ux + (qy - cy) * uy
        across = ((qx - cx) * uy - (qy - cy) * ux).abs()
        block = torch.maximum(block, ((effects.stop_width / 2 + 0.5 - across).clamp(0, 1)
                                      * (along + 0.5).clamp(0, 1)))
    if effects.stop_radius:
        r = torch.hypot(qx - cx, qy - cy)
        block = torch.maximum(block, (effects.stop_radius + 0.5 - r).clamp(0, 1))
    return (1 - block).to(torch.float32)


def _blur(lam: torch.Tensor, sigma: float) -> torch.Tensor:
    """Convolve ``(N, Qx, Qy)`` with a normalised separable Gaussian of ``sigma`` px (zero outside: electrons
    spread off the detector are lost)."""
    half = max(1, math.ceil(3 * sigma))
    x = torch.arange(-half, half + 1, dtype=lam.dtype, device=lam.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    out = torch.nn.functional.conv2d(lam[:, None], k.view(1, 1, -1, 1), padding=(half, 0))
    return torch.nn.functional.conv2d(out, k.view(1, 1, 1, -1), padding=(0, half))[:, 0]


def expected_electrons(clean: torch.Tensor, dose: np.ndarray | float, effects: DetectorEffects) -> torch.Tensor:
    """Expected electrons counted per pixel ``(N, Qx, Qy)`` (float64): ``dose * clean`` through the beam
    stop and the detector MTF (the noise-free input of the counting step of :func:`add_noise`)."""
    n = clean.shape[0]
    d = torch.as_tensor(np.broadcast_to(np.asarray(dose, dtype=np.float64), (n,)).copy(), dtype=torch.float64)
    lam = clean.double().clamp_min(0) * d.view(n, 1, 1)
    if effects.has_beam_stop:
        lam = lam * beam_stop_mask(clean.shape[1:], effects).double()
    if effects.mtf_sigma:
        lam = _blur(lam, effects.mtf_sigma).clamp_min(0)
    return lam


def expected_counts(clean: torch.Tensor, dose: np.ndarray | float, effects: DetectorEffects) -> torch.Tensor:
    """The noise-free detector output ``(N, Qx, Qy)`` float32 (what a perfect denoiser would return): the
    expected electrons times the gain, clipped at the counter depth, plus the constant background (the
    flat field, dark residual and bad pixels are random per detector and left out)."""
    counts = expected_electrons(clean, dose, effects) * effects.gain
    if effects.bit_depth:
        counts = counts.clamp_max(float(2**effects.bit_depth - 1))
    return (counts + effects.background).float()


def log_uniform(rng: np.random.Generator, low: float, high: float, size: int) -> np.ndarray:
    """``size`` values log-uniformly distributed between ``low`` and ``high``."""
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def add_noise(
    clean: torch.Tensor,
    dose: np.ndarray | float,
    generator: torch.Generator,
    effects: DetectorEffects = DetectorEffects(),
) -> torch.Tensor:
    """Detector counts ``(N, Qx, Qy)`` float32 from clean patterns (fractions per pixel) and doses.

    The effects of ``effects`` are applied in the order of the module docstring; the fixed-pattern ones
    (flat field, dark residual and, with ``fixed_pixels``, the bad pixels) are drawn once per call, so one
    call is one detector.
    Deterministic for a given ``generator`` state.
    """
    if clean.ndim != 3:
        raise ValueError(f"clean patterns must be (N, Qx, Qy), got shape {tuple(clean.shape)}")
    n = clean.shape[0]
    d = torch.as_tensor(np.broadcast_to(np.asarray(dose, dtype=np.float64), (n,)).copy(), dtype=clean.dtype)
    lam = clean.clamp_min(0) * d.view(n, 1, 1).to(clean.device)
    e = effects
    if e.has_beam_stop:
        lam = lam * beam_stop_mask(clean.shape[1:], e).to(lam.dtype)
    if e.mtf_sigma:
        lam = _blur(lam, e.mtf_sigma).clamp_min(0)
    if e.counting and e.gain_sigma:
        lam = lam * (1 + e.gain_sigma * torch.randn(clean.shape[1:], generator=generator)).clamp_min(0)
    counts = torch.poisson(lam, generator=generator)
    if e.gain_sigma and not e.counting:
        counts = counts * (1 + e.gain_sigma * torch.randn(clean.shape[1:], generator=generator))
    if e.gain != 1:
        counts = counts * e.gain
    if e.saturation:
        counts = torch.minimum(counts, e.saturation * counts.flatten(1).amax(1).view(n, 1, 1))
    if e.bit_depth:
        counts = counts.clamp_max(float(2**e.bit_depth - 1))
    if e.background:
        counts = counts + e.background
    if e.dark_sigma:
        counts = counts + e.dark_sigma * torch.randn(clean.shape[1:], generator=generator)
    if e.read_noise:
        counts = counts + (e.gain * e.read_noise) * torch.randn(counts.shape, generator=generator)
    if e.hot_fraction or e.dead_fraction:
        u = torch.rand(counts.shape[1:] if e.fixed_pixels else counts.shape, generator=generator)
        u = u.expand(counts.shape)
        counts = torch.where(u < e.dead_fraction, torch.zeros_like(counts), counts)
        counts = torch.where(u > 1 - e.hot_fraction, torch.full_like(counts, e.hot_level), counts)
    return counts.to(torch.float32)
