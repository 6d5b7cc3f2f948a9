"""The first convolution specs of the catalogue and the random-feature / two-layer hinge
classifiers: each test checks the catalogue's "shows" column through the Python API
(shortened for the CNNs, whose full runs are checked by `dslrun specs/<name>.dl`).

    conv_examples    (2,−1,1) * (1,1,2) = [2,1,4,−1,2] (true convolution, full mode) and the
                     cross-correlation; Sobel = [1,2,1]ᵀ[1,0,−1], separable in 2-D
    cnn_digits       conv–relu–maxpool stack learns the 8×8 digits (full run: test acc ≥ 0.97)
    lenet            LeNet-5 on digits resized to 28×28 (full run: test acc ≥ 0.97)
    bench/lenet      the benchmark LeNet has the same weights as lenet
    random_features  frozen S, cos features, hinge on w: train accuracy ≥ 0.9; S unchanged
    two_layer_hinge  w and S both trained: train accuracy ≥ 0.95
"""

from __future__ import annotations

import numpy as np
from conftest import spec

import dsl

# ---------------------------------------------------------------- conv_examples

def test_conv_examples_true_convolution_and_cross_correlation() -> None:
    out = dsl.load(spec("conv_examples"), dtype="float64")()
    x, w = np.array([2.0, -1.0, 1.0]), np.array([1.0, 1.0, 2.0])
    np.testing.assert_array_equal(out["true_conv"], [2, 1, 4, -1, 2])
    np.testing.assert_array_equal(out["true_conv"], np.convolve(x, w, mode="full"))
    np.testing.assert_array_equal(out["toeplitz"], [2, 1, 4, -1, 2])
    # cross-correlation: no flip (B l. 1650-1654); differs because w is not symmetric
    np.testing.assert_array_equal(out["cross_correlation"], np.correlate(x, w, mode="full"))
    np.testing.assert_array_equal(out["cross_correlation"], [4, 0, 3, 0, 1])


def test_conv_examples_separable_kernels() -> None:
    out = dsl.load(spec("conv_examples"), dtype="float64")()
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]])
    np.testing.assert_array_equal(out["sobel_kernel"], sobel)
    np.testing.assert_array_equal(out["sobel_kernel"], np.outer([1, 2, 1], [1, 0, -1]))
    assert np.linalg.matrix_rank(out["sobel_kernel"]) == 1
    np.testing.assert_array_equal(out["rank_one_example"],
                                  [[3, 6, 9], [4, 8, 12], [5, 10, 15]])
    # the 3×3 pass equals the 3×1 then 1×3 passes, and both equal a NumPy cross-correlation
    img = np.array([[0, 0, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 1, 1, 1],
                    [0, 0, 0, 1, 1]], float)
    pad = np.pad(img, 1)
    want = np.array([[np.sum(pad[i:i + 3, j:j + 3] * sobel) for j in range(5)]
                     for i in range(5)])
    np.testing.assert_allclose(out["sobel_image"], want, atol=1e-12)
    np.testing.assert_allclose(out["sobel_separable_image"], want, atol=1e-12)
    assert float(out["separable_max_abs_diff"]) == 0.0


# ---------------------------------------------------------------- CNNs (shortened)

def test_cnn_digits_learns_quickly() -> None:
    model = dsl.load(spec("cnn_digits"))
    assert model.dataset.train["x"].shape[1:] == (1, 8, 8)
    model.fit(epochs=3)
    ev = model.evaluate("test")
    assert ev["accuracy"] > 0.85, ev


def test_lenet_shapes_and_a_short_run() -> None:
    model = dsl.load(spec("lenet"))
    assert model.dataset.train["x"].shape[1:] == (1, 28, 28)
    shapes = sorted(v.shape for v in model.params.values())
    # LeNet-5: conv 6×1×5×5, conv 16×6×5×5, dense 400→120→84→10
    for s in [(6, 1, 5, 5), (16, 6, 5, 5), (400, 120), (120, 84), (84, 10)]:
        assert s in shapes, shapes
    n = sum(int(np.prod(v.shape)) for v in model.params.values())
    assert n == 156 + 2416 + 48120 + 10164 + 850
    model.fit(steps=25)
    ev = model.evaluate("test")
    assert ev["accuracy"] > 0.5, ev


def test_bench_lenet_has_the_same_weights() -> None:
    a = dsl.load(spec("lenet")).params
    b = dsl.load(spec("bench/lenet")).params
    assert sorted(v.shape for v in a.values()) == sorted(v.shape for v in b.values())


# ---------------------------------------------------------------- hinge classifiers

def test_random_features_accuracy_and_frozen_s() -> None:
    model = dsl.load(spec("random_features"))
    before = model.program.variables["S"].value.copy()
    assert not model.program.variables["S"].trainable    # `frozen`: never updated
    model.fit()
    assert model.evaluate("train")["accuracy"] >= 0.9
    after = model.params["S"]
    np.testing.assert_array_equal(after, before)
    assert np.any(model.params["w"] != 0)


def test_random_features_need_the_features() -> None:
    """The circles are not linearly separable: with a single feature the same fit fails."""
    model = dsl.load(spec("random_features"), overrides={"P": 1})
    model.fit()
    assert model.evaluate("train")["accuracy"] < 0.8


def test_two_layer_hinge_trains_both_layers() -> None:
    model = dsl.load(spec("two_layer_hinge"))
    s0 = model.params["S"].copy()
    model.fit()
    assert model.evaluate("train")["accuracy"] >= 0.95
    assert np.max(np.abs(model.params["S"] - s0)) > 1e-2    # S is learned, unlike Eq. 3.11
