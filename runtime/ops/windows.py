"""Sliding-window geometry and strided views shared by convolution (`runtime.ops.conv`) and
pooling (`runtime.ops.pool`) over NCHW tensors: the attributes (`stride`, `dilation`,
`kernel`: ints or (h, w) pairs; `padding`: an int, an (h, w) pair or (top, bottom, left,
right)), the geometry of one 2-D op on a concrete input (`Geo`), and zero-copy views of
padded, per-plane flattened buffers (`strided`, `planes`)."""

from __future__ import annotations

from typing import NamedTuple

from runtime.ops.registry import ShapeError

# --------------------------------------------------------------------------- attributes


def pair(op: str, name: str, v) -> tuple[int, int]:
    """(h, w) from an int or a pair of ints (attribute `name` of `op`, named in the error)."""
    t = (v, v) if isinstance(v, int) else tuple(v) if isinstance(v, tuple | list) else ()
    if len(t) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in t):
        raise ShapeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    return t


def pad4(op: str, v) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, an (h, w) pair or a 4-tuple."""
    t = (v,) * 4 if isinstance(v, int) else tuple(v) if isinstance(v, tuple | list) else ()
    if len(t) == 2:
        t = (t[0], t[0], t[1], t[1])
    if len(t) != 4 or not all(isinstance(a, int) and a >= 0 for a in t):
        raise ShapeError(f"{op}: padding must be non-negative ints (p, (ph, pw) or "
                         f"(top, bottom, left, right)), got {v!r}")
    return t


class Geo(NamedTuple):
    """Sliding-window geometry of one 2-D op on a concrete [H, W] input.

    The GEMM grid has Ho rows of Wq columns; grid column q reads padded column q*cs (+ the
    kernel offset). Wide grids (cs = 1, Wq = Wp) keep contiguous runs; narrow ones use
    Wq = Wo, cs = sw. `L` is the length of one flattened, padded plane in the buffers.
    """

    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    top: int
    left: int
    H: int
    W: int
    Hp: int
    Wp: int
    Ho: int
    Wo: int
    Wq: int
    cs: int
    L: int


def _out_len(n: int, lo: int, hi: int, k: int, s: int, d: int) -> int:
    return (n + lo + hi - d * (k - 1) - 1) // s + 1


def geometry(hw, khw, stride, padding, dilation, op: str = "conv2d",
              allow_wide: bool = True) -> Geo:
    """The geometry of a window op with kernel `khw` on an [H, W] input `hw` (its attributes
    already checked, `check_geometry`); `op` names the op in an attribute error."""
    H, W = hw
    kh, kw = khw
    sh, sw = pair(op, "stride", stride)
    dh, dw = pair(op, "dilation", dilation)
    top, bottom, left, right = pad4(op, padding)
    Hp, Wp = H + top + bottom, W + left + right
    Ho = _out_len(H, top, bottom, kh, sh, dh)
    Wo = _out_len(W, left, right, kw, sw, dw)
    wide = allow_wide and sw == 1 and Wp <= 2 * Wo
    Wq, cs = (Wp, 1) if wide else (Wo, sw)
    last = (kh - 1) * dh * Wp + (kw - 1) * dw + (Ho - 1) * sh * Wp + (Wq - 1) * cs + 1
    return Geo(kh, kw, sh, sw, dh, dw, top, left, H, W, Hp, Wp, Ho, Wo, Wq, cs,
               max(Hp * Wp, last))


def check_geometry(op: str, hw, khw, stride, padding, dilation, shapes: str) -> Geo:
    """Validate attributes and sizes at graph-build time (ShapeError names both shapes)."""
    for name, v in (("stride", stride), ("dilation", dilation)):
        if min(pair(op, name, v)) < 1:
            raise ShapeError(f"{op}: {name} must be positive, got {v!r} ({shapes})")
    top, bottom, left, right = pad4(op, padding)
    dh, dw = pair(op, "dilation", dilation)
    if not all(isinstance(d, int) for d in (*hw, *khw)):
        raise ShapeError(f"{op}: spatial sizes must be static integers ({shapes})")
    (H, W), (kh, kw) = hw, khw
    if kh < 1 or kw < 1:
        raise ShapeError(f"{op}: empty kernel {kh}x{kw} ({shapes})")
    Hp, Wp = H + top + bottom, W + left + right
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if eh > Hp or ew > Wp:
        span = f" with dilation {dh}x{dw} spans {eh}x{ew}," if (dh, dw) != (1, 1) else ""
        raise ShapeError(f"{op}: kernel {kh}x{kw}{span} larger than padded input {Hp}x{Wp} "
                         f"({shapes}, padding {(top, bottom, left, right)})")
    return geometry(hw, khw, stride, padding, dilation, op)


# --------------------------------------------------------------------------- strided views


def strided(xp, a, offset: int, shape, strides):
    """A view of contiguous `a` starting `offset` elements in, strides in elements."""
    flat = a.reshape(-1)[offset:]
    e = a.itemsize
    return xp.lib.stride_tricks.as_strided(flat, shape=tuple(shape),
                                           strides=tuple(s * e for s in strides))


def merge_axes(shape, strides):
    """Merge adjacent axes that are contiguous with each other (NumPy iterates merged views
    much faster when they are written in place)."""
    out_shape, out_strides = [shape[0]], [strides[0]]
    for d, s in zip(shape[1:], strides[1:]):
        if out_strides[-1] == d * s:
            out_shape[-1] *= d
            out_strides[-1] = s
        else:
            out_shape.append(d)
            out_strides.append(s)
    return tuple(out_shape), tuple(out_strides)


def planes(xp, x, geo: Geo, fill: float = 0.0):
    """x [N, C, H, W] written into a [N, C, L] buffer of padded planes (pad value `fill`)."""
    N, C = x.shape[:2]
    if geo.L == geo.H * geo.W and x.flags.c_contiguous:
        return x.reshape(N, C, geo.L)  # no padding, no tail: the input itself
    buf = xp.full((N, C, geo.L), fill, dtype=x.dtype) if fill else \
        xp.zeros((N, C, geo.L), dtype=x.dtype)
    L = geo.L
    inner = strided(xp, buf, geo.top * geo.Wp + geo.left, (N, C, geo.H, geo.W),
                     (C * L, L, geo.Wp, 1))
    inner[...] = x
    return buf
