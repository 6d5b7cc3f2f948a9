"""Image resizing for data sets (`digits(size = 28)`): bilinear, half-pixel centres.

This module must not import `dsl`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bilinear_resize"]


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] linear interpolation weights (half-pixel centres, edges clamped)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    return m


def bilinear_resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly resize images [..., H, W] to [..., height, width] (half-pixel centres, like
    PIL and torch's align_corners=False without antialiasing); float64 result."""
    images = np.asarray(images, dtype=np.float64)
    mh = _interp_matrix(images.shape[-2], height)
    mw = _interp_matrix(images.shape[-1], width)
    return mh @ images @ mw.T
