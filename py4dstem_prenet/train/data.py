"""Training batches drawn on the fly from a library of clean abTEM patterns.

Every batch is a pure function of ``(seed, step)``: the same step always sees the same patterns,
distortions and noise, so an interrupted run resumes exactly. Structures are split by family
(prototype) into train / val / test (:func:`split_of`), so evaluation uses prototypes the networks never saw.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .. import geometry
from ..denoise import denoise_input
from ..ellipse import ellipse_input
from ..normalization import detector_to_work, to_network, to_work_grid
from ..simulate.augment import AugmentRanges, distort, draw_geometry
from ..simulate.library import PatternLibrary
from ..simulate.noise import DetectorEffects, add_noise, draw_detector, log_uniform
from ..simulate.structures import list_structures

SPLITS = ("train", "val", "test")


def _hash(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16)


#: Structure families (``StructureSpec.prototype``) held out of training. Test: prototypes training never
#: sees (rock salt, fluorite, wurtzite, B2, cuprite crystals; metallic glasses). Validation (model selection
#: and tuned settings): spinel, L1_0, 2H transition-metal dichalcogenides, anatase; amorphous nitride. Every
#: other built-in prototype is "train" (fcc, bcc, hcp, diamond, zincblende, perovskite, rutile, corundum, ...;
#: amorphous covalent and oxide models).
FAMILY_SPLIT = {
    "rocksalt": "test", "fluorite": "test", "wurtzite": "test", "B2": "test", "cuprite": "test",
    "metallic_glass": "test",
    "spinel": "val", "L1_0": "val", "2H_TMD": "val", "anatase": "val", "amorphous_nitride": "val",
}


def split_of(structure: str) -> str:
    """Split ("train", "val" or "test") of a structure name, by structure family (prototype, see
    :data:`FAMILY_SPLIT`), so the test set holds prototypes training never saw. Names that are not built in
    (user CIFs) are split by their hash alone (every 10th "test", the next "val")."""
    prototype = _builtin_prototypes().get(structure)
    if prototype is None:
        rank = _hash(structure) % 10
        return "test" if rank == 0 else "val" if rank == 1 else "train"
    return FAMILY_SPLIT.get(prototype, "train")


@lru_cache(maxsize=1)
def _builtin_prototypes() -> dict[str, str]:
    return {s.name: s.prototype for s in list_structures()}


def heatmap_target(shape: tuple[int, int], qx0: np.ndarray, qy0: np.ndarray, sigma: float) -> torch.Tensor:
    """Gaussian heatmaps ``(N, 1, Qx, Qy)`` of peak 1 and width ``sigma`` px at ``(qx0, qy0)``."""
    qx = torch.arange(shape[0], dtype=torch.float32).view(1, -1, 1)
    qy = torch.arange(shape[1], dtype=torch.float32).view(1, 1, -1)
    cx = torch.as_tensor(qx0, dtype=torch.float32).view(-1, 1, 1)
    cy = torch.as_tensor(qy0, dtype=torch.float32).view(-1, 1, 1)
    return torch.exp(-((qx - cx) ** 2 + (qy - cy) ** 2) / (2 * sigma**2)).unsqueeze(1)


def draw_effects(rng: np.random.Generator, saturation_fraction: float = 0.0) -> DetectorEffects:
    """Detector imperfections for one batch: read noise half of the time, rarely hot/dead pixels, and
    with probability ``saturation_fraction`` counts saturating at 5-50% of each pattern's maximum."""
    read = float(rng.uniform(0, 2)) if rng.random() < 0.5 else 0.0
    hot = float(rng.uniform(0, 1e-4)) if rng.random() < 0.2 else 0.0
    level = float(rng.uniform(50, 500))
    saturation = float(rng.uniform(0.05, 0.5)) if saturation_fraction and rng.random() < saturation_fraction else 0.0
    return DetectorEffects(read_noise=read, hot_fraction=hot, dead_fraction=hot, hot_level=level, saturation=saturation)


@dataclass
class Batch:
    """Network input ``x (N, 1, Qx, Qy)``, target, and the labels (pixels / radians) it came from."""

    x: torch.Tensor
    target: torch.Tensor
    labels: dict[str, np.ndarray]


class TrainingData:
    """The clean patterns of one split of a library, held in memory, and the batch makers."""

    def __init__(self, library: str, split: str, ranges: AugmentRanges | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        lib = PatternLibrary(library)
        meta = lib.metadata()
        names = np.asarray(meta["structure"]).astype(str)
        idx = np.flatnonzero([split_of(n) == split for n in names])
        if idx.size == 0:
            raise ValueError(f"library {library} holds no patterns of the {split!r} split")
        self.patterns = torch.from_numpy(np.asarray(lib.patterns(idx), dtype=np.float32))
        self.structures = names[idx]
        self.ranges = ranges or AugmentRanges()
        self.shape = tuple(self.patterns.shape[-2:])

    def _effects(self, rng: np.random.Generator, saturation_fraction: float = 0.0) -> DetectorEffects:
        """One batch's detector: :func:`draw_effects`, or with ``ranges.detectors`` a drawn detector of one
        of those kinds (:func:`simulate.noise.draw_detector`)."""
        if not self.ranges.detectors:
            return draw_effects(rng, saturation_fraction)
        kind = self.ranges.detectors[int(rng.integers(len(self.ranges.detectors)))]
        return draw_detector(rng, kind, beam_stop=self.ranges.beam_stop_fraction, shape=self.shape)

    def _noisy(self, rng: np.random.Generator, gen: torch.Generator, n: int):
        pick = rng.integers(0, len(self.patterns), n)
        params = draw_geometry(rng, n, self.shape, self.ranges)
        clean = distort(self.patterns[pick], params)
        dose = log_uniform(rng, *self.ranges.dose, n)
        effects = self._effects(rng, self.ranges.saturation_fraction)
        noisy = add_noise(clean, dose, gen, effects)
        return clean, dose, noisy, params, pick, effects

    def _neighbours(self, rng: np.random.Generator, gen: torch.Generator, pick: np.ndarray, params: dict,
                    dose: np.ndarray, effects: DetectorEffects, k: int = 4) -> torch.Tensor:
        """``(n, k, Qx, Qy)`` noisy scan neighbours of each pattern: the same structure with the optical
        axis moved by up to 1 px (descan drift between positions) plus 0.2 px jitter, independent
        noise at the same dose, and for 30% of them up to half of another pattern blended in (the
        specimen changes: a grain boundary, a thickness step)."""
        n = len(pick)
        out = []
        for _ in range(k):
            geo = {**params, "qx0": params["qx0"] + rng.uniform(-1, 1, n) + rng.normal(0, 0.2, n),
                   "qy0": params["qy0"] + rng.uniform(-1, 1, n) + rng.normal(0, 0.2, n)}
            w = torch.as_tensor(np.where(rng.random(n) < 0.3, rng.uniform(0, 0.5, n), 0.0), dtype=torch.float32)
            other = self.patterns[rng.integers(0, len(self.patterns), n)]
            mixed = (1 - w.view(-1, 1, 1)) * self.patterns[pick] + w.view(-1, 1, 1) * other
            out.append(add_noise(distort(mixed, geo), dose, gen, effects))
        return torch.stack(out, dim=1)

    def denoise_batch(self, rng: np.random.Generator, gen: torch.Generator, n: int, inp: dict) -> Batch:
        """Network input (:func:`denoise.denoise_input`: the noisy pattern, its scan neighbours when
        ``inp["neighbours"]``, the noise-level map when ``inp["noise_map"]``); target: the expected
        counts in the pattern's normalised square-root space. With ``inp["train_crop"]``, a random
        ``crop x crop`` window of each (normalised as a whole) pattern, half of them around the direct
        beam: the network is fully convolutional, so it trains on windows."""
        clean, dose, noisy, params, pick, effects = self._noisy(rng, gen, n)
        counts = noisy
        if inp.get("neighbours", 0):
            counts = torch.cat([noisy[:, None], self._neighbours(rng, gen, pick, params, dose, effects)], dim=1)
        x, scale = denoise_input(counts, inp)
        expected = clean * torch.as_tensor(dose, dtype=torch.float32).view(-1, 1, 1)
        target = (expected.sqrt() / scale.view(-1, 1, 1)).unsqueeze(1)
        crop = inp.get("train_crop")
        if crop and crop < min(self.shape):
            near = rng.random(n) < 0.5
            ox = np.where(near, params["qx0"] - crop / 2 + rng.uniform(-crop / 4, crop / 4, n),
                          rng.uniform(0, self.shape[0] - crop, n)).round().astype(int).clip(0, self.shape[0] - crop)
            oy = np.where(near, params["qy0"] - crop / 2 + rng.uniform(-crop / 4, crop / 4, n),
                          rng.uniform(0, self.shape[1] - crop, n)).round().astype(int).clip(0, self.shape[1] - crop)
            x = torch.stack([x[i, :, a:a + crop, b:b + crop] for i, (a, b) in enumerate(zip(ox, oy, strict=True))])
            target = torch.stack([target[i, :, a:a + crop, b:b + crop]
                                  for i, (a, b) in enumerate(zip(ox, oy, strict=True))])
        return Batch(x, target, {**params, "dose": dose, "scale": scale.numpy()})

    def center_batch(self, rng: np.random.Generator, gen: torch.Generator, n: int, sigma: float,
                     work_size: int | None) -> Batch:
        """Noisy input on the network's work grid (:func:`normalization.to_work_grid`); target: a
        Gaussian heatmap of ``sigma`` work pixels at the true optical axis. Labels stay in detector pixels."""
        _, dose, noisy, params, _, _ = self._noisy(rng, gen, n)
        work, (fx, fy) = to_work_grid(noisy, work_size)
        x, _ = to_network(work)
        target = heatmap_target(tuple(work.shape[-2:]), detector_to_work(params["qx0"], fx),
                                detector_to_work(params["qy0"], fy), sigma)
        return Batch(x, target, {**params, "dose": dose, "work_factor": np.array([fx, fy])})

    def mean_grains(self, rng: np.random.Generator, labels: dict, i: int, per_mean: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """The grains of mean pattern ``i``: one or two structure names, the library indices of ``k`` grains
        (``per_mean`` bounds k), and their clean patterns (fractions per pixel) at random in-plane rotations,
        with the common ellipse and camera length of ``labels[...][i]`` and 0.05 px centring jitter."""
        cx, cy = geometry.detector_center(self.shape)
        k = int(rng.integers(per_mean[0], per_mean[1] + 1))
        names = rng.choice(np.unique(self.structures), size=int(rng.integers(1, 3)))
        pick = rng.choice(np.flatnonzero(np.isin(self.structures, names)), size=k)
        geo = {"qx0": cx + rng.normal(0, 0.05, k), "qy0": cy + rng.normal(0, 0.05, k),
               "ratio": labels["ratio"][i], "theta": labels["theta"][i],
               "rotation": rng.uniform(0, 2 * math.pi, k), "scale": labels["scale"][i]}
        f = geometry.distortion_matrix(self.shape, **geo)
        clean = geometry.warp(self.patterns[pick], geometry.invert(f), mode="bilinear", preserve_counts=True)
        return names, pick, clean.clamp_min(0)

    def ellipse_means(self, rng: np.random.Generator, gen: torch.Generator, n: int,
                      per_mean: tuple[int, int]) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """``n`` noisy mean patterns ``(n, Qx, Qy)`` (counts per pattern), each the mean of K centred
        patterns (one or two structures, random grain rotations, a common camera length and ellipse,
        residual centring jitter 0.05 px), and their labels (ratio, theta, ...)."""
        means, labels = [], draw_geometry(rng, n, self.shape, self.ranges)
        labels["dose"] = log_uniform(rng, *self.ranges.dose, n)
        for i in range(n):
            _, pick, clean = self.mean_grains(rng, labels, i, per_mean)
            total = add_noise(clean.sum(0, keepdim=True), labels["dose"][i], gen, self._effects(rng))[0]
            means.append(total / len(pick))
        return torch.stack(means), labels

    def ellipse_batch(self, rng: np.random.Generator, gen: torch.Generator, n: int, per_mean: tuple[int, int],
                      polar: tuple[int, int], ratio_scale: float) -> Batch:
        """Network inputs from :meth:`ellipse_means`; target ``(cos 2 theta, sin 2 theta, (a/b - 1) * ratio_scale)``."""
        means, labels = self.ellipse_means(rng, gen, n, per_mean)
        x = torch.cat([ellipse_input(m, *polar) for m in means])
        enc = geometry.encode_angle(labels["theta"])
        target = np.column_stack([enc, (labels["ratio"] - 1.0) * ratio_scale])
        return Batch(x, torch.as_tensor(target, dtype=torch.float32), labels)
