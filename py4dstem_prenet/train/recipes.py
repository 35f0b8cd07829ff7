"""Architectures and training settings of each network, in two sizes.

``compact`` trains on a 2-core CPU in the background within a session and ships as the default;
``paper`` is the paper-sized network (wider U-Nets, ResNet-50) whose recipe is meant for a GPU. The
denoiser has a third size, ``compact-neighbours``: the compact U-Net whose input also holds the four
scan neighbours of each pattern; the centre network one called ``fast``: a shallower U-Net on the
pattern averaged down to 64 x 64 (4-8 times faster, see the evaluation for what it costs).
Everything a model needs at inference besides its weights (``input``) is stored in its manifest entry.
"""

from __future__ import annotations

from typing import Any

_UNET = {"name": "unet", "in_channels": 1, "depth": 4, "out_activation": "sigmoid"}
_RESNET = {"name": "resnet", "in_channels": 1, "outputs": 3}

ARCHITECTURES: dict[str, dict[str, dict[str, Any]]] = {
    "denoise": {"compact": {**_UNET, "in_channels": 2, "base": 8, "cbam": True, "out_activation": "relu",
                            "residual": True},
                "compact-neighbours": {**_UNET, "in_channels": 6, "base": 8, "cbam": True, "out_activation": "relu",
                                       "residual": True},
                "paper": {**_UNET, "in_channels": 2, "base": 32, "cbam": True, "out_activation": "relu",
                          "residual": True}},
    "center": {"compact": {**_UNET, "base": 8, "cbam": False, "out_activation": "none"},
               "fast": {**_UNET, "base": 8, "depth": 3, "cbam": False, "out_activation": "none"},
               "paper": {**_UNET, "base": 32, "cbam": False, "out_activation": "none"}},
    "ellipse": {
        "compact": {**_RESNET, "base": 16, "layers": [2, 2, 2, 2], "bottleneck": False},  # ResNet-18 layout
        "paper": {**_RESNET, "base": 64, "layers": [3, 4, 6, 3], "bottleneck": True},  # ResNet-50
    },
}

#: What inference needs besides the weights (see normalization, center and ellipse modules).
INPUTS: dict[str, dict[str, Any]] = {
    "denoise": {"normalization": "sqrt(counts) / max per pattern", "output": "same space, -> counts",
                "noise_map": True, "neighbours": 0, "train_crop": 64,
                "loss": "MSE of the counts / mean expected count (the input's Poisson MSE)"},
    "center": {"normalization": "block mean down to work_size x work_size when the detector is larger, then "
                                "sqrt(counts) / max per pattern", "work_size": 128,
               "heatmap": "softmax of the logits", "heatmap_sigma": 1.5, "com_window": 6, "com_floor": 0.0},
    "ellipse": {"normalization": "sqrt(counts) / max of the mean centred pattern",
                "input": "log-polar, radii 2 px .. 0.95 Q/2", "n_r": 64, "n_theta": 128,
                "ratio_scale": 10.0, "patterns_per_mean": [4, 24]},
}

#: Input conventions that differ from :data:`INPUTS` for one size (the neighbour variant's extra channels).
_INPUT_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("denoise", "compact-neighbours"): {"neighbours": 4},
    ("center", "fast"): {"normalization": "block mean to work_size x work_size, then sqrt(counts) / max per pattern",
                         "work_size": 64, "heatmap_sigma": 1.0, "com_window": 4,
                         "units": "heatmap_sigma and com_window in work pixels"},
}


def inputs_for(task: str, size: str) -> dict[str, Any]:
    """The input conventions of one network (stored in its manifest entry)."""
    return {**INPUTS[task], **_INPUT_OVERRIDES.get((task, size), {})}


#: Optimisation settings: batch, steps, learning rate (Adam, cosine decay), validation and early stopping.
_PAPER = {"batch": 64, "lr": 1e-3, "val_every": 1000, "val_batches": 32, "patience": 10}
_COMPACT = {"batch": 16, "lr": 2e-3, "val_every": 100, "val_batches": 8, "patience": 8}

#: The fast and paper centre networks also see beams near the detector edge and saturated beams (a
#: quarter of the patterns shifted up to 40% of the detector, 15% of the batches saturating).
_CENTER_AUGMENT = {"far_fraction": 0.25, "far_shift_frac": 0.4, "saturation_fraction": 0.15}

TRAINING: dict[str, dict[str, dict[str, Any]]] = {
    "denoise": {"compact": {**_COMPACT, "steps": 6000}, "compact-neighbours": {**_COMPACT, "steps": 6000},
                "paper": {**_PAPER, "steps": 60000}},
    "center": {"compact": {**_COMPACT, "steps": 1500},
               "fast": {**_COMPACT, "batch": 16, "steps": 5000, "val_batches": 16, "patience": 12,
                        "augment": _CENTER_AUGMENT},
               "paper": {**_PAPER, "steps": 60000, "augment": _CENTER_AUGMENT}},
    "ellipse": {"compact": {**_COMPACT, "steps": 3000}, "paper": {**_PAPER, "steps": 30000}},
}
