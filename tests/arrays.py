"""Array helpers shared by the tests of conventions and reconstruction."""

import numpy as np
from scipy.ndimage import fourier_shift


def corr(a, b):
    """Pearson correlation of two arrays of any shape."""
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def circle(n, radius):
    """Mask of the disc of ``radius`` pixels about the centre of an ``n x n`` slice."""
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    return xx ** 2 + yy ** 2 <= radius ** 2


def move(volume, dy, dx):
    """Translate each slice by (dy, dx) pixels (band-limited)."""
    return np.stack([np.real(np.fft.ifft2(fourier_shift(np.fft.fft2(s), (dy, dx)))) for s in volume]).astype(np.float32)
