"""What every FBP of step E shares, whichever way it back-projects: the ramp filter and its windows,
and the angle quadrature weights.

Kept apart from both back-projectors (:mod:`~dejitter.reconstruction.filtered_backprojection`,
pixel-driven in torch; :mod:`~dejitter.reconstruction.fourier`, gridding with a NUFFT) so that the
two filter identically and give the same grey levels.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FILTERS", "filter_size", "filter_response", "angle_weights"]

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def filter_size(n_cols: int) -> int:
    """Length of the zero-padded projection row that is filtered: a power of two, at least twice the
    detector (the ramp's tails must not wrap around onto the other edge), at least 64."""
    return max(64, 2 ** int(math.ceil(math.log2(2 * int(n_cols)))))


def filter_response(size: int, filter_name: str) -> np.ndarray:
    """Frequency response (float64, ``size // 2 + 1`` values, 0 .. 0.5 cycles per pixel) of the
    discrete ramp filter (Kak & Slaney) times a window, for rows zero-padded to ``size`` (a power
    of two, e.g. :func:`filter_size`)."""
    if filter_name not in FILTERS:
        raise ValueError(f"unknown FBP filter {filter_name!r}; choose one of {', '.join(FILTERS)}")
    n = np.concatenate([np.arange(1, size // 2 + 1, 2), np.arange(size // 2 - 1, 0, -2)]).astype(np.float64)
    kernel = np.zeros(size, dtype=np.float64)
    kernel[0] = 0.25
    kernel[1::2] = -1.0 / (math.pi * n) ** 2
    response = np.fft.rfft(kernel).real  # the spatial-domain ramp avoids the DC offset of |f|
    freq = np.fft.rfftfreq(size)  # 0 .. 0.5 cycles / pixel
    window = {
        "ramp": np.ones_like(freq),
        "shepp-logan": np.sinc(freq),
        "cosine": np.cos(math.pi * freq),
        "hamming": 0.54 + 0.46 * np.cos(2 * math.pi * freq),
        "hann": 0.5 + 0.5 * np.cos(2 * math.pi * freq),
    }[filter_name]
    return response * window


def angle_weights(theta) -> np.ndarray:
    """Quadrature weights that sum to pi for a half turn (and a full turn, each ray seen twice)."""
    theta = np.asarray(theta, dtype=np.float64)
    if len(theta) < 2:
        return np.full(len(theta), math.pi)
    order = np.argsort(theta)
    gaps = np.diff(theta[order])
    spacing = np.empty(len(theta))
    spacing[1:-1] = (gaps[:-1] + gaps[1:]) / 2
    spacing[0], spacing[-1] = gaps[0], gaps[-1]
    weights = np.empty(len(theta))
    weights[order] = spacing / spacing.mean() * math.pi / len(theta)
    return weights
