"""Tests of the convolution, pooling and normalization ops (`runtime.ops.conv`, `.pool`,
`.windows`, `.norm`).

`CONV_NORM_ROWS` is a table in the style of `tests/test_ops.py` (same `Row` fields, plain
samplers, references written from the math with loops, never calling the kernels) and
`CONV_NORM_OPS` names every op the two modules register, so the op-table meta-test can count
them. For each row: the forward kernel equals the reference, the shape rule's type equals the
result's, the VJP equals central differences in float64, and so does the VJP of the VJP.

Then: cross-checks against PyTorch in float64 (forward, first and second order), shape-error
messages, symbolic batch dims, first-max tie-breaking, that no backward kernel calls
`ufunc.at`, and that every array function the kernels use exists in CuPy.
"""

from __future__ import annotations

import inspect
import itertools
import re

import numpy as np
import pytest
from helpers_numeric import (
    NORMAL,
    Row,
    Runner,
    Sampler,
    add_input,
    build_row,
    new_graph,
    rng_for,
    row_params,
    sample_inputs,
)

from runtime.autodiff import gradients
from runtime.backends import Backend
from runtime.ir import TensorType, parse_type
from runtime.ops import REGISTRY, ShapeError, conv, norm, pool, windows
from runtime.plan import Plan

# --------------------------------------------------------------------------- the table

def spaced(gap: float = 0.05) -> Sampler:
    """Distinct values at least `gap` apart in random order: no near-ties inside a pooling
    window, so finite differences never move an argmax."""
    def draw(rng, shape):
        n = int(np.prod(shape, dtype=int))
        return (rng.permutation(n) - n / 2).reshape(shape) * gap
    return draw


SPACED = spaced()


# -- references: direct loops over output positions and windows


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pad4(p):
    p = (p,) * 4 if isinstance(p, int) else tuple(p)
    return (p[0], p[0], p[1], p[1]) if len(p) == 2 else p


def _pad(x, padding, value=0.0):
    t, b, l, r = _pad4(padding)
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def _out_size(n, k, s, d, lo, hi):
    return (n + lo + hi - d * (k - 1) - 1) // s + 1


def _conv_geo(hw, khw, stride, padding, dilation):
    (sh, sw), (dh, dw), (t, b, l, r) = _pair(stride), _pair(dilation), _pad4(padding)
    return (_out_size(hw[0], khw[0], sh, dh, t, b), _out_size(hw[1], khw[1], sw, dw, l, r),
            sh, sw, dh, dw)


def _patch(a, ho, wo, kh, kw, sh, sw, dh, dw):
    """a[..., window of output (ho, wo)] as [..., kh, kw]."""
    return a[..., ho * sh:ho * sh + dh * (kh - 1) + 1:dh, wo * sw:wo * sw + dw * (kw - 1) + 1:dw]


def conv2d_ref(x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    xp_ = _pad(x, padding)
    O, cg, kh, kw = w.shape
    Ho, Wo, sh, sw, dh, dw = _conv_geo(x.shape[2:], (kh, kw), stride, padding, dilation)
    out = np.zeros((x.shape[0], O, Ho, Wo))
    og = O // groups
    for o in range(O):
        chans = xp_[:, (o // og) * cg:(o // og + 1) * cg]
        for ho in range(Ho):
            for wo in range(Wo):
                out[:, o, ho, wo] = (_patch(chans, ho, wo, kh, kw, sh, sw, dh, dw)
                                     * w[o]).sum(axis=(1, 2, 3))
    return out


def conv2d_grad_input_ref(g, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
                          input_size=None):
    O, cg, kh, kw = w.shape
    H, W = input_size
    t, b, l, r = _pad4(padding)
    Ho, Wo, sh, sw, dh, dw = _conv_geo((H, W), (kh, kw), stride, padding, dilation)
    dxp = np.zeros((g.shape[0], cg * groups, H + t + b, W + l + r))
    og = O // groups
    for o in range(O):
        chans = dxp[:, (o // og) * cg:(o // og + 1) * cg]
        for ho in range(Ho):
            for wo in range(Wo):
                _patch(chans, ho, wo, kh, kw, sh, sw, dh, dw)[...] += (
                    g[:, o, ho, wo, None, None, None] * w[o])
    return dxp[:, :, t:t + H, l:l + W]


def conv2d_grad_weight_ref(x, g, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
                           kernel_size=None):
    kh, kw = kernel_size
    xp_ = _pad(x, padding)
    O = g.shape[1]
    cg = x.shape[1] // groups
    Ho, Wo, sh, sw, dh, dw = _conv_geo(x.shape[2:], (kh, kw), stride, padding, dilation)
    dw_ = np.zeros((O, cg, kh, kw))
    og = O // groups
    for o in range(O):
        chans = xp_[:, (o // og) * cg:(o // og + 1) * cg]
        for ho in range(Ho):
            for wo in range(Wo):
                dw_[o] += (g[:, o, ho, wo, None, None, None]
                           * _patch(chans, ho, wo, kh, kw, sh, sw, dh, dw)).sum(axis=0)
    return dw_


def conv1d_ref(x, w, stride=1, padding=0, dilation=1, groups=1):
    lo, hi = (padding, padding) if isinstance(padding, int) else padding
    xp_ = np.pad(x, ((0, 0), (0, 0), (lo, hi)))
    O, cg, k = w.shape
    Lo = _out_size(x.shape[2], k, stride, dilation, lo, hi)
    out = np.zeros((x.shape[0], O, Lo))
    og = O // groups
    for o in range(O):
        chans = xp_[:, (o // og) * cg:(o // og + 1) * cg]
        for t in range(Lo):
            win = chans[:, :, t * stride:t * stride + dilation * (k - 1) + 1:dilation]
            out[:, o, t] = (win * w[o]).sum(axis=(1, 2))
    return out


def _pool_geo(hw, kernel, stride, padding):
    kh, kw = _pair(kernel)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    t, b, l, r = _pad4(padding)
    return (kh, kw, sh, sw, _out_size(hw[0], kh, sh, 1, t, b), _out_size(hw[1], kw, sw, 1, l, r),
            (t, b, l, r))


def _windows(x, kernel, stride, padding, fill):
    """Yield (n, c, ho, wo, window [kh, kw], (h0, w0) in padded coordinates)."""
    kh, kw, sh, sw, Ho, Wo, _ = _pool_geo(x.shape[2:], kernel, stride, padding)
    xp_ = _pad(x, padding, fill)
    for n, c, ho, wo in itertools.product(range(x.shape[0]), range(x.shape[1]), range(Ho),
                                          range(Wo)):
        yield n, c, ho, wo, xp_[n, c, ho * sh:ho * sh + kh, wo * sw:wo * sw + kw], (ho * sh,
                                                                                   wo * sw)


def max_pool2d_ref(x, kernel=(2, 2), stride=None, padding=(0, 0)):
    _, _, _, _, Ho, Wo, _ = _pool_geo(x.shape[2:], kernel, stride, padding)
    out = np.empty(x.shape[:2] + (Ho, Wo))
    for n, c, ho, wo, win, _ in _windows(x, kernel, stride, padding, -np.inf):
        out[n, c, ho, wo] = win.max()
    return out


def _first_argmax(win):
    flat = win.ravel()
    k = int(np.flatnonzero(flat == flat.max())[0])
    return divmod(k, win.shape[1])


def max_pool2d_grad_ref(g, x, kernel=(2, 2), stride=None, padding=(0, 0)):
    t, b, l, r = _pad4(padding)
    dxp = np.zeros(x.shape[:2] + (x.shape[2] + t + b, x.shape[3] + l + r))
    for n, c, ho, wo, win, (h0, w0) in _windows(x, kernel, stride, padding, -np.inf):
        i, j = _first_argmax(win)
        dxp[n, c, h0 + i, w0 + j] += g[n, c, ho, wo]
    return dxp[:, :, t:t + x.shape[2], l:l + x.shape[3]]


def max_pool2d_pick_ref(u, x, kernel=(2, 2), stride=None, padding=(0, 0)):
    _, _, _, _, Ho, Wo, _ = _pool_geo(x.shape[2:], kernel, stride, padding)
    up = _pad(u, padding)
    out = np.empty(x.shape[:2] + (Ho, Wo))
    for n, c, ho, wo, win, (h0, w0) in _windows(x, kernel, stride, padding, -np.inf):
        i, j = _first_argmax(win)
        out[n, c, ho, wo] = up[n, c, h0 + i, w0 + j]
    return out


def _avg_count(x_shape, kernel, stride, padding, count_include_pad, ho, wo):
    kh, kw, sh, sw, _, _, (t, _, l, _) = _pool_geo(x_shape[2:], kernel, stride, padding)
    if count_include_pad:
        return kh * kw
    rows = [h for h in range(ho * sh - t, ho * sh - t + kh) if 0 <= h < x_shape[2]]
    cols = [w for w in range(wo * sw - l, wo * sw - l + kw) if 0 <= w < x_shape[3]]
    return len(rows) * len(cols)


def avg_pool2d_ref(x, kernel=(2, 2), stride=None, padding=(0, 0), count_include_pad=True):
    _, _, _, _, Ho, Wo, _ = _pool_geo(x.shape[2:], kernel, stride, padding)
    out = np.empty(x.shape[:2] + (Ho, Wo))
    for n, c, ho, wo, win, _ in _windows(x, kernel, stride, padding, 0.0):
        out[n, c, ho, wo] = win.sum() / _avg_count(x.shape, kernel, stride, padding,
                                                    count_include_pad, ho, wo)
    return out


def avg_pool2d_grad_ref(g, kernel=(2, 2), stride=None, padding=(0, 0), count_include_pad=True,
                        input_size=None):
    x_shape = g.shape[:2] + tuple(input_size)
    kh, kw, sh, sw, Ho, Wo, (t, b, l, r) = _pool_geo(input_size, kernel, stride, padding)
    dxp = np.zeros(x_shape[:2] + (x_shape[2] + t + b, x_shape[3] + l + r))
    for ho, wo in itertools.product(range(Ho), range(Wo)):
        cnt = _avg_count(x_shape, kernel, stride, padding, count_include_pad, ho, wo)
        dxp[:, :, ho * sh:ho * sh + kh, wo * sw:wo * sw + kw] += g[:, :, ho, wo, None, None] / cnt
    return dxp[:, :, t:t + x_shape[2], l:l + x_shape[3]]


def _normalize_ref(x, axes, eps):
    mu = x.sum(axis=axes, keepdims=True) / np.prod([x.shape[a] for a in axes])
    var = ((x - mu) ** 2).sum(axis=axes, keepdims=True) / np.prod([x.shape[a] for a in axes])
    return (x - mu) / np.sqrt(var + eps)


def batch_norm_train_ref(x, gamma, beta, axis=1, eps=1e-5):
    axis %= x.ndim
    shape = [1] * x.ndim
    shape[axis] = -1
    xh = _normalize_ref(x, tuple(a for a in range(x.ndim) if a != axis), eps)
    return xh * gamma.reshape(shape) + beta.reshape(shape)


def layer_norm_ref(x, gamma, beta, axes=(-1,), eps=1e-5):
    axes = tuple(sorted(a % x.ndim for a in axes))
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    return _normalize_ref(x, axes, eps) * gamma.reshape(shape) + beta.reshape(shape)


def group_norm_ref(x, gamma, beta, groups=1, eps=1e-5):
    n, c = x.shape[:2]
    out = np.empty_like(x)
    cg = c // groups
    for gi in range(groups):
        part = x[:, gi * cg:(gi + 1) * cg]
        out[:, gi * cg:(gi + 1) * cg] = _normalize_ref(part, tuple(range(1, x.ndim)), eps)
    shape = (1, c) + (1,) * (x.ndim - 2)
    return out * gamma.reshape(shape) + beta.reshape(shape)


def variance_ref(x, axis=None, keepdims=False, correction=0):
    axes = tuple(range(x.ndim)) if axis is None else _pair(axis) if not isinstance(
        axis, int) else (axis,)
    m = np.prod([x.shape[a] for a in axes])
    mu = x.sum(axis=axes, keepdims=True) / m
    return ((x - mu) ** 2).sum(axis=axes, keepdims=keepdims) / (m - correction)


def _grad_shape(x_shape, w_shape, attrs):
    Ho, Wo, *_ = _conv_geo(x_shape[2:], w_shape[2:], attrs.get("stride", 1),
                           attrs.get("padding", 0), attrs.get("dilation", 1))
    return (x_shape[0], w_shape[0], Ho, Wo)


def _conv_rows(variant, x, w, attrs):
    """conv2d and its two gradient ops on one geometry."""
    g = _grad_shape(x, w, attrs)
    return [
        Row("conv2d", (x, w), attrs, reference=conv2d_ref, variant=variant),
        Row("conv2d_grad_input", (g, w), {**attrs, "input_size": x[2:]},
            reference=conv2d_grad_input_ref, variant=variant),
        Row("conv2d_grad_weight", (x, g), {**attrs, "kernel_size": w[2:]},
            reference=conv2d_grad_weight_ref, variant=variant),
    ]


def _pool_out(x, attrs):
    _, _, _, _, Ho, Wo, _ = _pool_geo(x[2:], attrs.get("kernel", (2, 2)), attrs.get("stride"),
                                      attrs.get("padding", (0, 0)))
    return x[:2] + (Ho, Wo)


def _max_rows(variant, x, attrs):
    y = _pool_out(x, attrs)
    return [
        Row("max_pool2d", (x,), attrs, domain=SPACED, reference=max_pool2d_ref, variant=variant),
        Row("max_pool2d_grad", (y, x), attrs, domain=(NORMAL, SPACED),
            reference=max_pool2d_grad_ref, variant=variant),
        Row("max_pool2d_pick", (x, x), attrs, domain=(NORMAL, SPACED),
            reference=max_pool2d_pick_ref, variant=variant),
    ]


def _avg_rows(variant, x, attrs):
    return [
        Row("avg_pool2d", (x,), attrs, reference=avg_pool2d_ref, variant=variant),
        Row("avg_pool2d_grad", (_pool_out(x, attrs),), {**attrs, "input_size": x[2:]},
            reference=avg_pool2d_grad_ref, variant=variant),
    ]


CONV_NORM_ROWS: list[Row] = [
    # ---- conv2d and its gradient kernels (wide grids, narrow grids, groups, dilation)
    *_conv_rows("", (2, 3, 5, 5), (4, 3, 3, 3), {}),
    *_conv_rows("s21_p12_d12_g2", (2, 4, 6, 5), (4, 2, 3, 2),
                {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 2}),
    *_conv_rows("s2_p1", (1, 2, 6, 7), (3, 2, 3, 3), {"stride": (2, 2), "padding": (1, 1)}),
    *_conv_rows("asym_pad_1x1", (1, 3, 4, 3), (2, 3, 1, 2), {"padding": (1, 0, 0, 2)}),
    *_conv_rows("narrow_unit_stride", (2, 2, 4, 6), (2, 2, 2, 5), {}),
    # ---- conv1d
    Row("conv1d", ((2, 3, 7), (2, 3, 3)), reference=conv1d_ref),
    Row("conv1d", ((2, 4, 9), (4, 2, 3)),
        {"stride": 2, "padding": 1, "dilation": 2, "groups": 2}, reference=conv1d_ref,
        variant="s2_p1_d2_g2"),
    Row("conv1d", ((1, 2, 6), (3, 2, 2)), {"padding": (0, 1)}, reference=conv1d_ref,
        variant="asym_pad"),
    # ---- pooling (odd sizes crop; padding; stride != kernel overlaps windows)
    *_max_rows("", (2, 2, 5, 6), {}),
    *_max_rows("k3_s21_p1", (1, 2, 5, 6), {"kernel": (3, 3), "stride": (2, 1),
                                           "padding": (1, 1)}),
    *_avg_rows("", (2, 2, 5, 6), {}),
    *_avg_rows("k32_s21_p1_exclude", (1, 2, 5, 6),
               {"kernel": (3, 2), "stride": (2, 1), "padding": (1, 1),
                "count_include_pad": False}),
    *_avg_rows("k3_s2_p1_include", (1, 2, 6, 5), {"kernel": 3, "stride": 2, "padding": 1}),
    # ---- normalization
    Row("batch_norm_train", ((5, 3), (3,), (3,)), reference=batch_norm_train_ref,
        variant="dense"),
    Row("batch_norm_train", ((3, 2, 2, 3), (2,), (2,)), reference=batch_norm_train_ref,
        variant="image"),
    Row("batch_norm_train", ((2, 3, 4), (4,), (4,)), {"axis": -1, "eps": 1e-3},
        reference=batch_norm_train_ref, variant="features_last"),
    Row("layer_norm", ((3, 5), (5,), (5,)), reference=layer_norm_ref),
    Row("layer_norm", ((2, 3, 4), (3, 4), (3, 4)), {"axes": (-2, -1), "eps": 1e-3},
        reference=layer_norm_ref, variant="two_axes"),
    Row("group_norm", ((2, 4, 3, 2), (4,), (4,)), {"groups": 2}, reference=group_norm_ref),
    Row("group_norm", ((2, 3, 2, 2), (3,), (3,)), {"groups": 3}, reference=group_norm_ref,
        variant="instance"),
    Row("group_norm", ((3, 6), (6,), (6,)), {"groups": 2, "eps": 1e-3},
        reference=group_norm_ref, variant="dense"),
    Row("variance", ((4, 3),), {"axis": 0, "correction": 1}, reference=variance_ref),
    Row("variance", ((2, 3, 2),), {"axis": (0, 2), "keepdims": True},
        reference=variance_ref, variant="biased_keep"),
    Row("variance", ((3, 4),), reference=variance_ref, variant="all"),
]

CONV_NORM_OPS = {
    "conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv1d",
    "max_pool2d", "max_pool2d_grad", "max_pool2d_pick", "avg_pool2d", "avg_pool2d_grad",
    "batch_norm_train", "layer_norm", "group_norm", "variance",
}


# Forward, shape rule, dtypes, VJP and VJP-of-VJP of these rows run in tests/test_ops.py.


def test_ops_table_covers_exactly_the_registered_ops():
    mine = {name for name, op in REGISTRY.items() if op.forward is not None
            and op.forward.__module__ in (conv.__name__, pool.__name__, norm.__name__)}
    assert mine == CONV_NORM_OPS
    assert {r.op for r in CONV_NORM_ROWS} == CONV_NORM_OPS
    ids = [r.id for r in CONV_NORM_ROWS]
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- graph helpers


def _run_with_grads(op, arrays, attrs, cot, wrt=None, dims=None, types=None):
    """(output, [d sum(cot·out)/d input]) through the graph, the Plan and `gradients`."""
    _, b = new_graph()
    xs = [add_input(b, f"x{i}", "f64", types[i] if types else a.shape)
          for i, a in enumerate(arrays)]
    out = b.emit(op, *xs, **attrs)
    c = add_input(b, "cot", "f64", out.shape)
    y = b.emit("sum", c * out)
    wrt = range(len(xs)) if wrt is None else wrt
    grads = gradients(b, y.id, [xs[i].id for i in wrt])
    b.graph.outputs["out"] = out.id
    for i, gi in zip(wrt, grads, strict=True):
        b.graph.outputs[f"g{i}"] = gi.id
    feeds = {f"x{i}": a for i, a in enumerate(arrays)} | {"cot": cot}
    res = Runner(b.graph, list(b.graph.outputs), dims=dims)(feeds)
    return res["out"], [res[f"g{i}"] for i in wrt]


# --------------------------------------------------------------------------- PyTorch


def _torch():
    return pytest.importorskip("torch", reason="PyTorch cross-checks need torch")


CONV_GRID = list(itertools.product((1, 2), (0, 1, 2), (1, 2), (1, 2)))


@pytest.mark.parametrize("stride, padding, dilation, groups", CONV_GRID,
                         ids=[f"s{s}_p{p}_d{d}_g{g}" for s, p, d, g in CONV_GRID])
def test_conv2d_matches_torch(stride, padding, dilation, groups):
    torch = _torch()
    rng = rng_for("conv2d_torch", stride, padding, dilation, groups)
    x = rng.standard_normal((3, 4, 9, 8))
    w = rng.standard_normal((6, 4 // groups, 3, 2))
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, stride=stride, padding=padding, dilation=dilation,
                                    groups=groups)
    cot = rng.standard_normal(tuple(yt.shape))
    gx, gw = torch.autograd.grad(yt, (xt, wt), torch.tensor(cot))
    attrs = {"stride": (stride, stride), "padding": (padding, padding),
             "dilation": (dilation, dilation), "groups": groups}
    out, (dx, dw) = _run_with_grads("conv2d", [x, w], attrs, cot)
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, gx.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, gw.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("stride, padding, dilation, groups", CONV_GRID[::3],
                         ids=[f"s{s}_p{p}_d{d}_g{g}" for s, p, d, g in CONV_GRID[::3]])
def test_conv2d_split_over_the_batch_matches_torch(stride, padding, dilation, groups,
                                                   monkeypatch):
    # columns budget of one byte: every sample is its own GEMM, the weight gradient a sum
    monkeypatch.setattr(conv, "COLS_BYTES", 1)
    assert len(conv._batch_chunks(3, 1, pool._pool_geo((9, 8), 2, 2, 0), 8)) == 3
    test_conv2d_matches_torch(stride, padding, dilation, groups)


def test_conv2d_weight_gradient_of_an_empty_batch_is_zero():
    dw = conv._conv2d_grad_weight_fwd(np, np.zeros((0, 2, 5, 5)), np.zeros((0, 3, 3, 3)),
                                      (1, 1), (0, 0, 0, 0), (1, 1), 1, (3, 3))
    assert dw.shape == (3, 2, 3, 3) and not dw.any()


def test_conv2d_second_order_matches_torch():
    """d/d(x, w, cot) of Σ r·dx + Σ q·dw, through the gradient ops' own VJPs."""
    torch = _torch()
    rng = rng_for("conv2d_second")
    x, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3))
    attrs = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 2}
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, stride=(2, 1), padding=(1, 2), dilation=(1, 2),
                                    groups=2)
    cot = rng.standard_normal(tuple(yt.shape))
    ct = torch.tensor(cot, requires_grad=True)
    gx, gw = torch.autograd.grad(yt, (xt, wt), ct, create_graph=True)
    r, q = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    st = (gx * torch.tensor(r)).sum() + (gw * torch.tensor(q)).sum()
    want = torch.autograd.grad(st, (xt, wt, ct))

    _, b = new_graph()
    xv, wv = add_input(b, "x", "f64", x.shape), add_input(b, "w", "f64", w.shape)
    cv = add_input(b, "c", "f64", cot.shape)
    out = b.emit("conv2d", xv, wv, **attrs)
    dx, dw = gradients(b, b.emit("sum", cv * out).id, [xv.id, wv.id])
    s = b.emit("sum", dx * b.const(r, "f64")) + b.emit("sum", dw * b.const(q, "f64"))
    got = gradients(b, s.id, [xv.id, wv.id, cv.id])
    b.graph.outputs.update({f"h{i}": h.id for i, h in enumerate(got)})
    res = Runner(b.graph, ["h0", "h1", "h2"])({"x": x, "w": w, "c": cot})
    for i, t in enumerate(want):
        np.testing.assert_allclose(res[f"h{i}"], t.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("stride, padding, dilation, groups",
                         [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 3, 2), (3, (1, 2), 2, 3)])
def test_conv1d_matches_torch(stride, padding, dilation, groups):
    torch = _torch()
    rng = rng_for("conv1d_torch", stride, padding, dilation, groups)
    x, w = rng.standard_normal((3, 6, 20)), rng.standard_normal((3 * groups, 6 // groups, 3))
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    xin = xt
    if not isinstance(padding, int):  # torch has no asymmetric padding: pad explicitly
        xin = torch.nn.functional.pad(xt, padding)
    yt = torch.nn.functional.conv1d(xin, wt, stride=stride, dilation=dilation, groups=groups,
                                    padding=padding if isinstance(padding, int) else 0)
    cot = rng.standard_normal(tuple(yt.shape))
    gx, gw = torch.autograd.grad(yt, (xt, wt), torch.tensor(cot))
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    out, (dx, dw) = _run_with_grads("conv1d", [x, w], attrs, cot)
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, gx.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, gw.numpy(), rtol=1e-10, atol=1e-10)


POOLS = [((2, 2), None, (0, 0)), ((3, 3), (2, 2), (1, 1)), ((3, 2), (1, 2), (1, 0)),
         ((2, 2), (1, 1), (1, 1)), ((4, 3), (3, 1), (2, 1)), ((1, 1), (2, 3), (0, 0))]


@pytest.mark.parametrize("kernel, stride, padding", POOLS,
                         ids=[f"k{k}_s{s}_p{p}" for k, s, p in POOLS])
def test_max_pool2d_matches_torch(kernel, stride, padding):
    torch = _torch()
    rng = rng_for("maxpool_torch", kernel, stride, padding)
    x = rng.standard_normal((2, 3, 9, 10))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, kernel, stride=stride or kernel, padding=padding)
    cot = rng.standard_normal(tuple(yt.shape))
    (gx,) = torch.autograd.grad(yt, (xt,), torch.tensor(cot))
    attrs = {"kernel": kernel, "stride": stride, "padding": padding}
    out, (dx,) = _run_with_grads("max_pool2d", [x], attrs, cot)
    np.testing.assert_array_equal(out, yt.detach().numpy())
    np.testing.assert_allclose(dx, gx.numpy(), rtol=1e-12, atol=1e-12)


def test_max_pool2d_ties_go_to_the_first_maximum_like_torch():
    torch = _torch()
    rng = rng_for("maxpool_ties")
    x = rng.integers(0, 3, (2, 2, 6, 7)).astype(np.float64)  # many ties in every window
    for kernel, stride, padding in [((2, 2), None, (0, 0)), ((3, 3), (1, 2), (1, 1))]:
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.nn.functional.max_pool2d(xt, kernel, stride=stride or kernel,
                                            padding=padding)
        cot = rng.standard_normal(tuple(yt.shape))
        (gx,) = torch.autograd.grad(yt, (xt,), torch.tensor(cot))
        attrs = {"kernel": kernel, "stride": stride, "padding": padding}
        _, (dx,) = _run_with_grads("max_pool2d", [x], attrs, cot)
        np.testing.assert_allclose(dx, gx.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding", POOLS,
                         ids=[f"k{k}_s{s}_p{p}" for k, s, p in POOLS])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_matches_torch(kernel, stride, padding, count_include_pad):
    torch = _torch()
    rng = rng_for("avgpool_torch", kernel, stride, padding, count_include_pad)
    x = rng.standard_normal((2, 3, 9, 10))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.avg_pool2d(xt, kernel, stride=stride or kernel, padding=padding,
                                        count_include_pad=count_include_pad)
    cot = rng.standard_normal(tuple(yt.shape))
    (gx,) = torch.autograd.grad(yt, (xt,), torch.tensor(cot))
    attrs = {"kernel": kernel, "stride": stride, "padding": padding,
             "count_include_pad": count_include_pad}
    out, (dx,) = _run_with_grads("avg_pool2d", [x], attrs, cot)
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, gx.numpy(), rtol=1e-12, atol=1e-12)


def _torch_norm_case(torch, fn, shape, n_params, attrs_op, op, seed, second=True):
    """Forward, first-order (x, γ, β) and second-order gradients against PyTorch."""
    rng = rng_for(op, seed, shape)
    x = rng.standard_normal(shape) * 2 + 0.5
    ps = [rng.standard_normal(n_params) + 1, rng.standard_normal(n_params)]
    ts = [torch.tensor(a, requires_grad=True) for a in [x, *ps]]
    yt = fn(*ts)
    cot = rng.standard_normal(shape)
    want = torch.autograd.grad(yt, ts, torch.tensor(cot), create_graph=True)
    out, got = _run_with_grads(op, [x, *ps], attrs_op, cot)
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-9, atol=1e-10)
    for g, t in zip(got, want, strict=True):
        np.testing.assert_allclose(g, t.detach().numpy(), rtol=1e-9, atol=1e-10)
    if not second:
        return
    # second order: d/d(x, γ) of Σ r · dx
    r = rng.standard_normal(shape)
    want2 = torch.autograd.grad((want[0] * torch.tensor(r)).sum(), ts[:2])
    _, b = new_graph()
    vs = [add_input(b, f"x{i}", "f64", a.shape) for i, a in enumerate([x, *ps])]
    o = b.emit(op, *vs, **attrs_op)
    (dx,) = gradients(b, b.emit("sum", o * b.const(cot, "f64")).id, [vs[0].id])
    got2 = gradients(b, b.emit("sum", dx * b.const(r, "f64")).id, [vs[0].id, vs[1].id])
    b.graph.outputs.update(h0=got2[0].id, h1=got2[1].id)
    res = Runner(b.graph, ["h0", "h1"])({f"x{i}": a for i, a in enumerate([x, *ps])})
    for i, t in enumerate(want2):
        np.testing.assert_allclose(res[f"h{i}"], t.numpy(), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 5, 6), (4, 3, 7)])
def test_batch_norm_train_matches_torch(shape):
    torch = _torch()
    c = shape[1]

    def fn(x, gamma, beta):
        return torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True,
                                              eps=1e-5)
    _torch_norm_case(torch, fn, shape, c, {"axis": 1, "eps": 1e-5}, "batch_norm_train", 0)


def test_batch_norm_running_statistics_compose_like_torch():
    """mean and variance(correction=1) give PyTorch's running-stat update."""
    torch = _torch()
    x = rng_for("bn_running").standard_normal((6, 3, 4, 5))
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    torch.nn.functional.batch_norm(torch.tensor(x), rm, rv, training=True, momentum=0.1)
    _, b = new_graph()
    xv = add_input(b, "x", "f64", x.shape)
    mean = b.emit("mean", xv, axis=(0, 2, 3))
    var = b.emit("variance", xv, axis=(0, 2, 3), correction=1)
    new_m = mean * 0.1
    new_v = var * 0.1 + 0.9
    b.graph.outputs.update(m=new_m.id, v=new_v.id)
    res = Runner(b.graph, ["m", "v"])({"x": x})
    np.testing.assert_allclose(res["m"], rm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(res["v"], rv.numpy(), rtol=1e-12)


@pytest.mark.parametrize("shape, axes", [((4, 7), (-1,)), ((2, 3, 4, 5), (-3, -2, -1)),
                                         ((3, 4, 6), (-1,))])
def test_layer_norm_matches_torch(shape, axes):
    torch = _torch()
    norm_shape = shape[len(shape) - len(axes):]
    rng = rng_for("ln_torch", shape)
    x = rng.standard_normal(shape) * 2 + 0.5
    ps = [rng.standard_normal(norm_shape) + 1, rng.standard_normal(norm_shape)]
    ts = [torch.tensor(a, requires_grad=True) for a in [x, *ps]]
    yt = torch.nn.functional.layer_norm(ts[0], norm_shape, ts[1], ts[2], eps=1e-5)
    cot = rng.standard_normal(shape)
    want = torch.autograd.grad(yt, ts, torch.tensor(cot))
    out, got = _run_with_grads("layer_norm", [x, *ps], {"axes": axes, "eps": 1e-5}, cot)
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-9, atol=1e-10)
    for g, t in zip(got, want, strict=True):
        np.testing.assert_allclose(g, t.numpy(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("shape, groups", [((3, 6, 4, 5), 2), ((3, 6, 4, 5), 6),
                                           ((2, 4, 7), 1), ((4, 6), 3)])
def test_group_and_instance_norm_match_torch(shape, groups):
    torch = _torch()

    def fn(x, gamma, beta):
        return torch.nn.functional.group_norm(x, groups, gamma, beta, eps=1e-5)
    _torch_norm_case(torch, fn, shape, shape[1], {"groups": groups, "eps": 1e-5},
                     "group_norm", groups)


def test_instance_norm_is_group_norm_with_one_channel_per_group():
    torch = _torch()

    def fn(x, gamma, beta):
        return torch.nn.functional.instance_norm(x, weight=gamma, bias=beta, eps=1e-5)
    _torch_norm_case(torch, fn, (3, 4, 5, 6), 4, {"groups": 4, "eps": 1e-5}, "group_norm",
                     "instance", second=False)


# --------------------------------------------------------------------------- symbolic dims

SYMBOLIC = [
    ("conv2d", ["f32[B,3,8,8]", "f32[6,3,5,5]"], {"padding": (2, 2)}, "f32[B,6,8,8]"),
    ("conv2d", ["f32[B,4,9,8]", "f32[6,2,3,3]"], {"stride": 2, "groups": 2}, "f32[B,6,4,3]"),
    ("conv2d_grad_input", ["f32[B,6,4,3]", "f32[6,2,3,3]"],
     {"stride": 2, "groups": 2, "input_size": (9, 8)}, "f32[B,4,9,8]"),
    ("conv2d_grad_weight", ["f32[B,4,9,8]", "f32[B,6,4,3]"],
     {"stride": 2, "groups": 2, "kernel_size": (3, 3)}, "f32[6,2,3,3]"),
    ("conv1d", ["f32[B,3,20]", "f32[4,3,5]"], {"stride": 2, "padding": 2}, "f32[B,4,10]"),
    ("max_pool2d", ["f32[B,6,28,28]"], {}, "f32[B,6,14,14]"),
    ("max_pool2d", ["f32[B,2,7,7]"], {"kernel": 3, "stride": 2, "padding": 1},
     "f32[B,2,4,4]"),
    ("avg_pool2d", ["f64[B,2,5,6]"], {"kernel": (2, 3)}, "f64[B,2,2,2]"),
    ("batch_norm_train", ["f32[B,3,4,4]", "f32[3]", "f32[3]"], {}, "f32[B,3,4,4]"),
    ("layer_norm", ["f32[B,T,8]", "f32[8]", "f32[8]"], {}, "f32[B,T,8]"),
    ("group_norm", ["f32[B,6,4,4]", "f32[6]", "f32[6]"], {"groups": 3}, "f32[B,6,4,4]"),
    ("variance", ["f32[B,5]"], {"axis": 0, "correction": 1}, "f32[5]"),
]


@pytest.mark.parametrize("op, types, attrs, want", SYMBOLIC,
                         ids=[f"{s[0]}:{','.join(s[1])}" for s in SYMBOLIC])
def test_symbolic_batch_shape_rule(op, types, attrs, want):
    row = Row(op, tuple(parse_type(t).shape for t in types), attrs,
              dtypes=tuple(parse_type(t).dtype for t in types))
    b, xs, out = build_row(row)
    assert str(out.type) == want
    dims = {"B": 3, "T": 2}
    b.graph.outputs["out"] = out.id
    rng = rng_for(op, *types)
    feeds = {f"x{i}": rng.standard_normal(x.type.concrete(dims)) for i, x in enumerate(xs)}
    got = Runner(b.graph, ["out"], dims=dims)(feeds)["out"]
    assert got.shape == out.type.concrete(dims)


@pytest.mark.parametrize("op, shapes, attrs", [
    ("batch_norm_train", [(4, 3, 2, 2), (3,), (3,)], {}),
    ("layer_norm", [(4, 5), (5,), (5,)], {}),
    ("group_norm", [(4, 6, 2), (6,), (6,)], {"groups": 2}),
    ("variance", [(4, 3)], {"axis": (0,), "correction": 1}),
    ("conv2d", [(4, 2, 5, 5), (3, 2, 3, 3)], {"padding": 1}),
])
def test_symbolic_batch_gradients_equal_static_ones(op, shapes, attrs):
    """With a symbolic batch the VJPs divide by the runtime size (the `size` op)."""
    rng = rng_for("symgrad", op)
    arrays = [rng.standard_normal(s) for s in shapes]
    types = [("B",) + s[1:] if i == 0 else s for i, s in enumerate(shapes)]
    out_shape = REGISTRY[op].shape({**REGISTRY[op].attrs, **attrs},
                                   *[TensorType("f64", s) for s in shapes]).shape
    cot = rng.standard_normal(out_shape)
    want_out, want = _run_with_grads(op, arrays, attrs, cot)
    got_out, got = _run_with_grads(op, arrays, attrs, cot, dims={"B": shapes[0][0]},
                                   types=types)
    np.testing.assert_allclose(got_out, want_out, rtol=1e-12, atol=1e-12)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- shape errors

MISMATCHES = [
    ("conv2d", ["f32[B,1,4,4]", "f32[2,1,5,5]"], {},
     ["conv2d: kernel 5x5 larger than padded input 4x4", "[B,1,4,4]", "[2,1,5,5]"]),
    ("conv2d", ["f32[B,1,4,4]", "f32[2,1,3,3]"], {"dilation": 2},
     ["kernel 3x3 with dilation 2x2 spans 5x5, larger than padded input 4x4"]),
    ("conv2d", ["f32[B,3,8,8]", "f32[2,4,3,3]"], {},
     ["conv2d: input has 3 channels but the weight expects 4", "[B,3,8,8]", "[2,4,3,3]"]),
    ("conv2d", ["f32[B,8,8,8]", "f32[6,2,3,3]"], {"groups": 3},
     ["conv2d: groups=3 does not divide 8 channels", "[B,8,8,8]", "[6,2,3,3]"]),
    ("conv2d", ["f32[B,4,8,8]", "f32[3,2,3,3]"], {"groups": 2},
     ["groups=2 does not divide 3 output channels", "[B,4,8,8]", "[3,2,3,3]"]),
    ("conv2d", ["f32[B,4,8]", "f32[3,4,3,3]"], {}, ["[B,4,8]", "[3,4,3,3]"]),
    ("conv2d", ["i64[B,1,8,8]", "f32[3,1,3,3]"], {}, ["i64[B,1,8,8]", "[3,1,3,3]"]),
    ("conv2d", ["f32[B,1,H,8]", "f32[3,1,3,3]"], {}, ["static", "[B,1,H,8]"]),
    ("conv2d", ["f32[B,1,8,8]", "f32[3,1,3,3]"], {"stride": 0}, ["stride", "[B,1,8,8]"]),
    ("conv2d_grad_input", ["f32[B,2,5,5]", "f32[2,1,3,3]"], {"input_size": (8, 8)},
     ["[B,2,5,5]", "[2,1,3,3]", "[B,2,6,6]"]),
    ("conv2d_grad_weight", ["f32[B,1,8,8]", "f32[B,2,5,5]"], {"kernel_size": (3, 3)},
     ["[B,1,8,8]", "[B,2,5,5]"]),
    ("conv1d", ["f32[B,3,4]", "f32[2,3,5]"], {},
     ["conv1d: kernel 1x5 larger than padded input 1x4", "[B,3,4]", "[2,3,5]"]),
    ("conv1d", ["f32[B,3,9]", "f32[2,2,3]"], {},
     ["input has 3 channels but the weight expects 2"]),
    ("max_pool2d", ["f32[B,1,1,4]"], {}, ["max_pool2d: kernel 2x2 larger than padded input 1x4",
                                          "[B,1,1,4]"]),
    ("max_pool2d", ["f32[B,1,8,8]"], {"kernel": 2, "padding": 2}, ["half the kernel",
                                                                   "[B,1,8,8]"]),
    ("max_pool2d_grad", ["f32[B,1,3,3]", "f32[B,1,8,8]"], {}, ["[B,1,3,3]", "[B,1,8,8]"]),
    ("avg_pool2d", ["f32[B,8,8]"], {}, ["[B,8,8]"]),
    ("batch_norm_train", ["f32[B,3,4,4]", "f32[4]", "f32[3]"], {}, ["gamma", "[4]",
                                                                    "[B,3,4,4]"]),
    ("layer_norm", ["f32[B,5]", "f32[5]", "f32[4]"], {}, ["beta", "[4]", "[B,5]"]),
    ("group_norm", ["f32[B,6,4,4]", "f32[6]", "f32[6]"], {"groups": 4},
     ["group_norm: groups=4 does not divide 6 channels", "[B,6,4,4]"]),
    ("variance", ["i64[3,4]"], {}, ["i64[3,4]"]),
]


@pytest.mark.parametrize("op, types, attrs, parts", MISMATCHES,
                         ids=[f"{s[0]}:{','.join(s[1])}:{i}" for i, s in enumerate(MISMATCHES)])
def test_shape_errors_name_the_op_and_both_shapes(op, types, attrs, parts):
    with pytest.raises(ShapeError) as ei:
        build_row(Row(op, tuple(parse_type(t).shape for t in types), attrs,
                   dtypes=tuple(parse_type(t).dtype for t in types)))
    msg = str(ei.value)
    assert msg.startswith(f"{op}:"), msg
    for p in parts:
        assert p in msg, f"{p!r} missing from {msg!r}"


# --------------------------------------------------------------------------- kernel hygiene


class _NoAtUfunc:
    """A ufunc stand-in whose `.at` (unbuffered scatter) fails the test."""

    def __init__(self, uf):
        self._uf = uf

    def __call__(self, *args, **kwargs):
        return self._uf(*args, **kwargs)

    def __getattr__(self, name):
        if name == "at":
            raise AssertionError(f"{self._uf.__name__}.at called by a kernel")
        return getattr(self._uf, name)


class _GuardedNumpy:
    """numpy, except that add/subtract.at raise."""

    add = _NoAtUfunc(np.add)
    subtract = _NoAtUfunc(np.subtract)

    def __getattr__(self, name):
        return getattr(np, name)


GUARDED = Backend(name="numpy-no-at", xp=_GuardedNumpy(), asarray=np.asarray,
                  to_numpy=np.asarray, make_rng=lambda seed: np.random.default_rng(seed))


@pytest.mark.parametrize("row", row_params([r for r in CONV_NORM_ROWS if not r.variant
                                         or r.variant.startswith(("s21", "k3"))]))
def test_backward_kernels_do_not_scatter_with_ufunc_at(row: Row, monkeypatch):
    """First and second order backward graphs run on a NumPy whose add.at raises (also
    patched on the module, for kernels that would import numpy directly)."""
    monkeypatch.setattr(np, "add", _NoAtUfunc(np.add))
    b, xs, out = build_row(row)
    y = b.emit("sum", out * b.const(rng_for(row.id).standard_normal(out.shape), "f64"))
    grads = [gi for gi in gradients(b, y.id, [x.id for x in xs]) if gi is not None]
    s = b.emit("sum", grads[0])
    second = [h for h in gradients(b, s.id, [x.id for x in xs]) if h is not None]
    b.graph.outputs.update({f"g{i}": v.id for i, v in enumerate(grads + second)})
    plan = Plan(b.graph, {}, GUARDED, {}, outputs=list(b.graph.outputs))
    res = plan.run(sample_inputs(row))
    assert all(np.all(np.isfinite(r)) for r in res)


def test_kernel_sources_have_no_scatter_at():
    for mod in (conv, pool, windows, norm):
        src = inspect.getsource(mod)
        assert not re.search(r"\.\s*at\s*\(", src), f"{mod.__name__} uses ufunc.at"


# Array-module attributes verified to exist in CuPy (>= 13): the kernels may use only these.
CUPY_FUNCTIONS = {
    "add", "arange", "ascontiguousarray", "copyto", "empty", "full",
    "lib.stride_tricks.as_strided",
    "logical_and", "logical_not", "logical_or", "matmul", "maximum", "mean", "minimum",
    "multiply", "result_type", "sqrt", "sum", "var", "zeros",
}


def test_kernels_use_only_array_functions_that_exist_in_cupy():
    used = set()
    for mod in (conv, pool, windows, norm):
        used |= set(re.findall(r"\bxp\.((?:[a-z_]+\.)*[a-z_]+)\s*\(", inspect.getsource(mod)))
    assert used <= CUPY_FUNCTIONS, f"not known to exist in CuPy: {sorted(used - CUPY_FUNCTIONS)}"
    for name in used:  # and they exist in NumPy, of course
        obj = np
        for part in name.split("."):
            obj = getattr(obj, part)
