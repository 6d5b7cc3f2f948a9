"""Augmentation: each transform's effect, seeding by step, strict options, and a spec that
trains with augmentation declared in its train section."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

import dsl
from dsl.errors import NameErr
from runtime.train import augment


def _batch(n: int = 8) -> dict[str, np.ndarray]:
    x = np.arange(n * 2 * 4 * 5, dtype=np.float32).reshape(n, 2, 4, 5)
    return {"x": x, "y": np.arange(n)}


def test_hflip_and_vflip_mirror_chosen_samples():
    b = _batch()
    for name, axis in (("hflip", -1), ("vflip", -2)):
        out = augment.apply(b, [(name, {"p": 1.0})], seed=0, step=1)["x"]
        np.testing.assert_array_equal(out, np.flip(b["x"], axis=axis))
        same = augment.apply(b, [(name, {"p": 0.0})], seed=0, step=1)["x"]
        np.testing.assert_array_equal(same, b["x"])


def test_crop_keeps_shape_and_content_window():
    b = _batch()
    out = augment.apply(b, [("crop", {"pad": 1})], seed=3, step=7)["x"]
    assert out.shape == b["x"].shape
    padded = np.pad(b["x"], ((0, 0), (0, 0), (1, 1), (1, 1)))
    for i in range(len(out)):  # every output is some window of the padded image
        assert any(np.array_equal(out[i], padded[i, :, dy:dy + 4, dx:dx + 5])
                   for dy in range(3) for dx in range(3))


def test_noise_brightness_contrast_statistics():
    x = np.full((2000, 1, 4, 4), 0.5, dtype=np.float32)
    b = {"x": x}
    n = augment.apply(b, [("noise", {"std": 0.1})], 0, 1)["x"]
    assert abs(n.std() - 0.1) < 0.005 and abs(n.mean() - 0.5) < 0.005
    br = augment.apply(b, [("brightness", {"delta": 0.2})], 0, 1)["x"]
    shifts = br[:, 0, 0, 0] - 0.5
    assert np.all(np.abs(shifts) <= 0.2) and np.all(br == br[:, :, :1, :1])
    z = np.random.default_rng(0).random((50, 1, 4, 4)).astype(np.float32)
    c = augment.apply({"x": z}, [("contrast", {"low": 2.0, "high": 2.0})], 0, 1)["x"]
    np.testing.assert_allclose(c.mean(axis=(1, 2, 3)), z.mean(axis=(1, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(c.std(axis=(1, 2, 3)), 2 * z.std(axis=(1, 2, 3)), rtol=1e-5)


def test_seeded_by_step():
    b = _batch()
    steps = [("crop", {"pad": 1}), ("noise", {"std": 0.1})]
    a1 = augment.apply(b, steps, seed=0, step=5)["x"]
    a2 = augment.apply(b, steps, seed=0, step=5)["x"]
    a3 = augment.apply(b, steps, seed=0, step=6)["x"]
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, a3)


def test_unknown_augmentation_and_option_are_errors():
    spec = """model a
data digits(image = true)
input x: f32[B, 1, 8, 8]
input y: i64[B]
objective loss = cross_entropy(dense(flatten(x), 10), y)
optimizer sgd(lr = 0.1) minimize loss
train { batch = 32, steps = 2, augment = [AUG] }
"""
    with pytest.raises(NameErr, match="unknown augmentation 'hflp'"):
        dsl.compile(spec.replace("AUG", "hflp()"))
    with pytest.raises(NameErr, match="no option 'pad'"):
        dsl.compile(spec.replace("AUG", "noise(pad = 1)"))
    m = dsl.compile(spec.replace("AUG", "crop(pad = 1)"))
    assert m.program.train.augment == [("crop", {"pad": 1})]
    assert m.fit().steps == 2


def test_augmentation_spec_trains():
    m = dsl.load(ROOT / "specs" / "augmentation.dl")
    assert [a[0] for a in m.program.train.augment] == ["hflip", "crop", "noise", "brightness",
                                                        "contrast"]
    r = m.fit(epochs=3)
    assert r.loss_final < 0.6 * r.loss_first
    assert m.evaluate("test")["acc"] > 0.8
