"""Tests for runtime.train.data: data sets, splits, files and the Batcher."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.train.data import Batcher, DataError, Dataset, known_datasets, load_dataset

# --------------------------------------------------------------------------- shipped sets


@pytest.mark.parametrize(
    "name, n, d, classes",
    [
        ("digits", 1797, 64, 10),
        ("breast_cancer", 569, 30, 2),
        ("iris", 150, 4, 3),
        ("wine", 178, 13, 3),
    ],
)
def test_shipped_classification_shapes(name, n, d, classes):
    ds = load_dataset(name, {})
    n_test = int(np.floor(0.2 * n + 0.5))
    assert ds.field_info() == {"x": ("f32", (n - n_test, d)), "y": ("i64", (n - n_test,))}
    assert ds.field_info("test") == {"x": ("f32", (n_test, d)), "y": ("i64", (n_test,))}
    assert ds.info["n_classes"] == classes
    assert ds.info["n_features"] == d
    assert ds.info["n_train"] + ds.info["n_test"] == n
    assert set(np.unique(ds.train["y"])) == set(range(classes))


def test_digits_scaled_to_unit_interval_and_standardized_sets():
    ds = load_dataset("digits", {"test_fraction": 0})
    assert ds.test is None and ds.train["x"].shape == (1797, 64)
    assert ds.train["x"].min() == 0.0 and ds.train["x"].max() == 1.0
    for name in ("iris", "wine", "breast_cancer"):
        x = load_dataset(name, {}).train["x"].astype(np.float64)
        np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(x.std(0), 1.0, atol=1e-4)
    raw = load_dataset("iris", {"standardize": False}).train["x"]
    assert raw.min() > 0  # as shipped, all measurements are positive


def test_diabetes_regression():
    ds = load_dataset("diabetes", {}, dtype=np.float64)
    assert ds.field_info() == {"x": ("f64", (354, 10)), "y": ("f64", (354,))}
    assert ds.info["task"] == "regression"
    assert abs(ds.train["y"].mean()) < 1e-9 and abs(ds.train["y"].std() - 1) < 1e-9
    raw = load_dataset("diabetes", {"standardize": False, "test_fraction": 0})
    assert raw.train["y"].min() > 10  # unscaled disease progression


def test_dtype_and_labels_pm1():
    ds = load_dataset("breast_cancer", {"labels": "pm1"}, dtype=np.float64)
    assert ds.train["x"].dtype == np.float64 and ds.train["y"].dtype == np.float64
    assert set(np.unique(ds.train["y"])) == {-1.0, 1.0}
    with pytest.raises(DataError, match="not a floating point type"):
        load_dataset("iris", {}, dtype=np.int64)


def test_digits_image_binarize_and_resize():
    ds = load_dataset("digits", {"image": True, "binarize": True})
    assert ds.train["x"].shape == (1438, 1, 8, 8)
    assert set(np.unique(ds.train["x"])) == {0.0, 1.0}
    flat = load_dataset("digits", {"test_fraction": 0}).train["x"]
    big = load_dataset("digits", {"size": 28, "test_fraction": 0}).train["x"]
    assert big.shape == (1797, 1, 28, 28) and big.dtype == np.float32
    assert big.min() >= 0.0 and big.max() <= 1.0 + 1e-6
    per_image_small = flat.mean(axis=1)
    per_image_big = big.reshape(len(big), -1).mean(axis=1)
    np.testing.assert_allclose(per_image_big, per_image_small, rtol=0.15, atol=0.02)
    assert abs(per_image_big.mean() / per_image_small.mean() - 1) < 0.05
    # The resized image correlates strongly with the original upsampled by nearest neighbour.
    nearest = flat.reshape(-1, 8, 8)[:, (np.arange(28) * 8) // 28][:, :, (np.arange(28) * 8) // 28]
    r = np.corrcoef(nearest.ravel(), big.ravel())[0, 1]
    assert r > 0.9
    flat_img = load_dataset("digits", {"size": 28, "image": False, "test_fraction": 0})
    assert flat_img.train["x"].shape == (1797, 784)


def test_split_determinism_and_seed():
    a = load_dataset("wine", {"seed": 3})
    b = load_dataset("wine", {"seed": 3})
    c = load_dataset("wine", {"seed": 4})
    for part in ("train", "test"):
        for k in ("x", "y"):
            np.testing.assert_array_equal(getattr(a, part)[k], getattr(b, part)[k])
    assert not np.array_equal(a.test["x"], c.test["x"])


def test_stratification_keeps_class_proportions():
    ds = load_dataset("digits", {"test_fraction": 0.3, "seed": 7})
    full = np.bincount(load_dataset("digits", {"test_fraction": 0}).train["y"], minlength=10)
    test = np.bincount(ds.test["y"], minlength=10)
    train = np.bincount(ds.train["y"], minlength=10)
    assert test.sum() == round(0.3 * 1797)
    np.testing.assert_array_less(np.abs(test - 0.3 * full), 1.0 + 1e-9)
    np.testing.assert_array_equal(train + test, full)
    bc = load_dataset("breast_cancer", {"test_fraction": 0.25, "seed": 1})
    assert abs(bc.test["y"].mean() - bc.train["y"].mean()) < 0.01


def test_split_is_a_partition():
    full = load_dataset("iris", {"standardize": False, "test_fraction": 0}).train["x"]
    ds = load_dataset("iris", {"standardize": False, "seed": 5})
    rows = {tuple(r) for r in np.concatenate([ds.train["x"], ds.test["x"]])}
    assert rows == {tuple(r) for r in full}
    assert len(ds.train["x"]) + len(ds.test["x"]) == len(full)


# --------------------------------------------------------------------------- generators


@pytest.mark.parametrize("name", ["moons", "circles", "blobs"])
def test_generators(name):
    ds = load_dataset(name, {"n": 101, "seed": 2})
    assert ds.test is None
    assert ds.field_info() == {"x": ("f32", (101, 2)), "y": ("i64", (101,))}
    again = load_dataset(name, {"n": 101, "seed": 2})
    np.testing.assert_array_equal(ds.train["x"], again.train["x"])
    pm = load_dataset(name, {"n": 50, "labels": "pm1", "test_fraction": 0.2})
    assert pm.train["y"].dtype == np.float32 and set(np.unique(pm.train["y"])) == {-1.0, 1.0}
    assert len(pm.test["y"]) == 10 and pm.test["y"].sum() == 0  # stratified: 5 and 5


def test_generator_options():
    circ = load_dataset("circles", {"noise": 0.0, "factor": 0.3, "n": 100})
    r = np.linalg.norm(circ.train["x"], axis=1)
    np.testing.assert_allclose(np.sort(np.unique(np.round(r, 4))), [0.3, 1.0], atol=1e-4)
    blobs = load_dataset("blobs", {"centers": [[0, 0, 0], [10, 10, 10], [-10, 0, 10]], "std": 0.1})
    assert blobs.train["x"].shape == (200, 3) and blobs.info["n_classes"] == 3
    with pytest.raises(DataError, match="needs 2 blobs"):
        load_dataset("blobs", {"centers": 3, "labels": "pm1"})
    with pytest.raises(DataError, match="factor"):
        load_dataset("circles", {"factor": 1.5})


def test_linear_gaussian_theta_recovered():
    ds = load_dataset("linear_gaussian", {"n": 400, "d": 4, "noise": 0.01}, dtype=np.float64)
    x, y = ds.train["x"], ds.train["y"]
    assert x.shape == (400, 4) and y.shape == (400,)
    est = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(est, ds.info["true_theta"], atol=5e-3)
    b = load_dataset("linear_gaussian", {"bias": True, "theta": [1.0, -2.0, 0.5], "noise": 0.0})
    assert b.train["x"].shape == (200, 3) and np.all(b.train["x"][:, -1] == 1)
    est = np.linalg.lstsq(b.train["x"].astype(np.float64), b.train["y"], rcond=None)[0]
    np.testing.assert_allclose(est, [1.0, -2.0, 0.5], atol=1e-5)
    # theta does not depend on n
    t1 = load_dataset("linear_gaussian", {"n": 10}).info["true_theta"]
    t2 = load_dataset("linear_gaussian", {"n": 20}).info["true_theta"]
    assert t1 == t2
    with pytest.raises(DataError, match="has 2 entries but needs 3"):
        load_dataset("linear_gaussian", {"theta": [1, 2], "d": 3})


# --------------------------------------------------------------------------- names and options


def test_unknown_dataset_did_you_mean():
    with pytest.raises(DataError, match=r"unknown data set 'digit' \(did you mean 'digits'\?\)"):
        load_dataset("digit", {})
    with pytest.raises(DataError, match="known data sets: .*moons"):
        load_dataset("zzz", {})
    assert {"digits", "moons", "linear_gaussian", "csv", "npz"} <= set(known_datasets())


@pytest.mark.parametrize(
    "name, options, pattern",
    [
        ("digits", {"sise": 28}, r"unknown option 'sise'.*did you mean 'size'.*valid options"),
        ("iris", {"labels": "pm1"}, r"unknown option 'labels' for data set 'iris'"),
        ("moons", {"centers": 3}, r"unknown option 'centers'"),
        ("moons", {"n": 2.5}, r"option 'n' .* must be an integer"),
        ("moons", {"noise": "high"}, r"option 'noise' .* must be a number"),
        ("moons", {"labels": "+-1"}, r"option 'labels' .* must be one of"),
        ("digits", {"image": 1}, r"option 'image' .* must be true or false"),
        ("digits", {"seed": -1}, r"option 'seed'"),
        ("iris", {"test_fraction": 1.0}, r"option 'test_fraction'"),
        ("iris", {"test_fraction": 0.999}, r"leaves no training samples"),
        ("linear_gaussian", {"theta": "abc"}, r"option 'theta'"),
        ("blobs", {"centers": [[0, 0], [1]]}, r"option 'centers'"),
        ("digits", {"binarize": True, "standardize": True}, r"exclude each other"),
    ],
)
def test_bad_options(name, options, pattern):
    with pytest.raises(DataError, match=pattern):
        load_dataset(name, options)


def test_private_base_dir_option_is_accepted_everywhere():
    load_dataset("moons", {"_base_dir": "/nowhere"})


# --------------------------------------------------------------------------- files


def test_csv_with_header(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n1,2,0\n3,4.5,1\n5,6,1\n7,8,0\n")
    ds = load_dataset("d.csv", {"_base_dir": str(tmp_path)})
    assert ds.field_info() == {"x": ("f32", (4, 2)), "y": ("i64", (4,))}
    np.testing.assert_array_equal(ds.train["x"][1], [3, 4.5])
    np.testing.assert_array_equal(ds.train["y"], [0, 1, 1, 0])
    assert ds.info["columns"] == ["a", "b"] and ds.info["target"] == "label"
    by_name = load_dataset("csv", {"path": str(p), "target": "a", "task": "regression"})
    assert by_name.train["y"].dtype == np.float32
    np.testing.assert_array_equal(by_name.train["y"], [1, 3, 5, 7])
    np.testing.assert_array_equal(by_name.train["x"][0], [2, 0])


def test_csv_without_header_and_target_index(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("0.5,1,2\n1.5,3,4\n\n2.5,5,6\n")
    ds = load_dataset(str(p), {"target": 0})
    assert ds.info["task"] == "regression" and ds.train["y"].dtype == np.float32
    np.testing.assert_array_equal(ds.train["y"], [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(ds.train["x"][2], [5, 6])
    ds = load_dataset(str(p), {"target": -1, "test_fraction": 0.34, "seed": 1})
    assert ds.info["task"] == "classification"
    assert len(ds.train["y"]) == 2 and len(ds.test["y"]) == 1


@pytest.mark.parametrize(
    "text, options, pattern",
    [
        ("", {}, "is empty"),
        ("a,b\n", {}, "has a header but no data rows"),
        ("1,2\n3,4,5\n", {}, "row 2 has 3 columns, but the first row has 2"),
        ("a,b\n1,2\n3,4,5\n", {}, "row 3 has 3 columns, but the header has 2"),
        ("a,b\n1,2\n3,x\n", {}, r"row 3, column 2 \('b'\): 'x' is not a number"),
        ("1,2\n3,\n", {}, "row 2, column 2: is empty"),
        ("1,2\n3,nan\n", {}, "not finite"),
        ("1\n2\n", {}, "needs a target column"),
        ("a,b\n1,2\n", {"target": "c"}, "no column named 'c'"),
        ("1,2\n3,4\n", {"target": "c"}, "no header row"),
        ("1,2\n3,4\n", {"target": 5}, "out of range"),
        ("1,2.5\n3,4\n", {"task": "classification"}, "needs integer targets"),
    ],
)
def test_csv_errors(tmp_path, text, options, pattern):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(str(p), options)
    assert str(p) in str(info.value)


def test_csv_header_option(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("1,2\n3,4\n")
    ds = load_dataset(str(p), {"header": True, "task": "regression"})
    assert ds.info["columns"] == ["1"] and ds.train["y"].tolist() == [4.0]
    with pytest.raises(DataError, match="option 'header'"):
        load_dataset(str(p), {"header": "yes"})


def test_npz_happy_path(tmp_path):
    p = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3))
    np.savez(p, x=x, y=np.arange(20) % 2, mask=np.ones((20, 2), dtype=bool))
    ds = load_dataset("d.npz", {"_base_dir": str(tmp_path), "test_fraction": 0.5})
    assert ds.field_info() == {"x": ("f32", (10, 3)), "y": ("i64", (10,)), "mask": ("f32", (10, 2))}
    assert ds.test["y"].sum() == 5  # stratified on integer y
    whole = load_dataset("npz", {"path": str(p)}, dtype=np.float64)
    np.testing.assert_array_equal(whole.train["x"], x)


def test_npz_errors(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(missing), {})
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    with pytest.raises(DataError, match="holds no arrays"):
        load_dataset(str(empty), {})
    ragged = tmp_path / "ragged.npz"
    np.savez(ragged, x=np.zeros((5, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"different first dimensions \(5 and 4"):
        load_dataset(str(ragged), {})
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match="junk.npz"):
        load_dataset(str(junk), {})
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match="single .npy array"):
        load_dataset(str(npy), {})
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="never loaded"):
        load_dataset(str(obj), {})
    scalar = tmp_path / "scalar.npz"
    np.savez(scalar, x=np.float64(3.0))
    with pytest.raises(DataError, match="scalar"):
        load_dataset(str(scalar), {})
    with pytest.raises(DataError, match="already a path"):
        load_dataset(str(ragged), {"path": str(ragged)})
    with pytest.raises(DataError, match="not a regular file"):
        load_dataset("npz", {"path": str(tmp_path)})


# --------------------------------------------------------------------------- Batcher


def _arrays(n: int = 10) -> dict[str, np.ndarray]:
    return {"x": np.arange(n * 2, dtype=np.float32).reshape(n, 2), "i": np.arange(n)}


def _run(b: Batcher, n_batches: int) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    while len(out) < n_batches:
        for batch in b.epoch():
            out.append(batch["i"].copy())
            if len(out) == n_batches:
                break
    return out


def test_shuffle_epoch_visits_every_index_once():
    b = Batcher(_arrays(10), batch=3, seed=1)
    assert len(b) == 4
    seen = []
    for batch in b.epoch():
        assert batch["x"].shape[1:] == (2,)
        np.testing.assert_array_equal(batch["x"][:, 0], 2 * batch["i"])
        seen.append(batch["i"].copy())
    assert [len(s) for s in seen] == [3, 3, 3, 1]
    assert sorted(np.concatenate(seen).tolist()) == list(range(10))
    second = np.concatenate([bb["i"].copy() for bb in b.epoch()])
    assert sorted(second.tolist()) == list(range(10))
    assert not np.array_equal(second, np.concatenate(seen))
    assert b.epochs_done == 2


def test_drop_last_sequential_and_clamp():
    b = Batcher(_arrays(10), batch=3, seed=0, drop_last=True)
    assert [len(x["i"]) for x in b.epoch()] == [3, 3, 3]
    s = Batcher(_arrays(10), batch=4, seed=0, sampling="sequential")
    batches = [x["i"].tolist() for x in s.epoch()]
    # four streams 0-2, 3-5, 6-7, 8-9: row i of each batch continues row i of the last
    assert batches == [[0, 3, 6, 8], [1, 4, 7, 9], [2, 5]]
    one = Batcher(_arrays(10), batch=1, seed=0, sampling="sequential")
    assert [x["i"].tolist() for x in one.epoch()] == [[i] for i in range(10)]
    big = Batcher(_arrays(5), batch=100, seed=0)
    assert big.batch == 5 and len(big) == 1
    assert sorted(next(iter(big.epoch()))["i"].tolist()) == list(range(5))


def test_with_replacement_statistics():
    n, batch = 20, 8
    b = Batcher({"i": np.arange(n)}, batch=batch, seed=3, sampling="with_replacement")
    assert len(b) == 3  # ceil(20 / 8), all batches full
    counts = np.zeros(n)
    dup_batches = 0
    epochs = 1000
    for _ in range(epochs):
        for bb in b.epoch():
            assert bb["i"].shape == (batch,)
            counts += np.bincount(bb["i"], minlength=n)
            dup_batches += len(np.unique(bb["i"])) < batch
    expected = epochs * 3 * batch / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 50  # 19 degrees of freedom; p < 1e-4 above 45
    # P(no repeat among 8 draws from 20) = 0.12, so most batches repeat an index.
    assert dup_batches > 0.8 * epochs * 3


def test_same_seed_bit_identical_and_different_seed_differs():
    for sampling in ("shuffle", "with_replacement"):
        a = _run(Batcher(_arrays(50), 7, seed=11, sampling=sampling), 40)
        b = _run(Batcher(_arrays(50), 7, seed=11, sampling=sampling), 40)
        c = _run(Batcher(_arrays(50), 7, seed=12, sampling=sampling), 40)
        assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
        assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


@pytest.mark.parametrize("sampling", ["shuffle", "with_replacement", "sequential"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_resume_mid_epoch_is_exact(sampling, drop_last):
    kw = {"batch": 3, "seed": 5, "sampling": sampling, "drop_last": drop_last}
    reference = _run(Batcher(_arrays(10), **kw), 25)
    per_epoch = len(Batcher(_arrays(10), **kw))
    k = int(2.5 * per_epoch)  # 2.5 epochs, mid-epoch
    first = Batcher(_arrays(10), **kw)
    got = _run(first, k)
    snap = json.loads(json.dumps(first.state()))
    assert snap["position"] == k % per_epoch and snap["epoch"] == k // per_epoch
    resumed = Batcher(_arrays(10), **kw)
    resumed.set_state(snap)
    got += _run(resumed, 25 - k)
    assert len(got) == len(reference)
    for p, q in zip(got, reference, strict=True):
        np.testing.assert_array_equal(p, q)


def test_resume_at_epoch_boundary_and_state_checks():
    b = Batcher(_arrays(10), batch=5, seed=2)
    list(b.epoch())
    snap = b.state()
    assert snap["epoch"] == 1 and snap["position"] == 0
    ref = [x["i"].copy() for x in b.epoch()]
    r = Batcher(_arrays(10), batch=5, seed=999)
    r.set_state(snap)
    assert all(np.array_equal(p, x["i"]) for p, x in zip(ref, r.epoch(), strict=True))
    with pytest.raises(DataError, match="batch = 5"):
        Batcher(_arrays(10), batch=4, seed=2).set_state(snap)
    with pytest.raises(DataError, match="not a dslrun batcher state"):
        b.set_state({"x": 1})


def test_buffers_reused_unless_disabled():
    b = Batcher(_arrays(10), batch=2, seed=0)
    it = b.epoch()
    first = next(it)["i"]
    second = next(it)["i"]
    assert np.shares_memory(first, second)  # documented: valid only until the next batch
    fresh = Batcher(_arrays(10), batch=2, seed=0, reuse_buffers=False)
    batches = list(fresh.epoch())
    assert sorted(np.concatenate([x["i"] for x in batches]).tolist()) == list(range(10))
    seq = next(iter(Batcher(_arrays(10), batch=10, seed=0, sampling="sequential").epoch()))
    assert not seq["x"].flags.writeable  # plain order: a view of the data


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"batch": 0}, "batch size"),
        ({"batch": 2, "sampling": "shufle"}, "did you mean 'shuffle'"),
        ({"batch": 2, "seed": -1}, "seed"),
    ],
)
def test_batcher_errors(kwargs, pattern):
    with pytest.raises(DataError, match=pattern):
        Batcher(_arrays(4), **kwargs)
    with pytest.raises(DataError, match="different numbers of samples"):
        Batcher({"x": np.zeros(3), "y": np.zeros(4)}, 2, 0)


def test_dataset_is_plain_dataclass():
    ds = Dataset({"x": np.zeros((3, 2), np.float32)}, None, {})
    assert ds.field_info() == {"x": ("f32", (3, 2))} and ds.field_info("test") == {}


def test_a_spec_loads_its_data_set_once(monkeypatch):
    """Both lowerings (train, eval) and the Model share one load."""
    import dsl
    from dsl import compiler

    calls = []
    real = compiler.load_dataset
    monkeypatch.setattr(compiler, "load_dataset", lambda *a, **k: calls.append(a) or real(*a, **k))
    model = dsl.load("ridge_regression")
    assert model.dataset is not None and len(calls) == 1


def test_ensure_room_weighs_data_against_half_of_max_memory_or_the_machine(monkeypatch):
    # as the run's estimate: --max-memory, when given, instead of the memory available
    from runtime.train import memory
    from runtime.train.data import dataset

    monkeypatch.setattr(memory, "available_bytes", lambda: 1000 * 2**20)
    dataset.ensure_room(400 * 2**20, "x", "lower n")  # under half of 1000 MiB
    with pytest.raises(DataError, match=r"^the inputs need 600 MiB, more than half the "
                       r"1000 MiB of the memory available on this machine; lower n$"):
        dataset.ensure_room(600 * 2**20, "the inputs", "lower n")
    with dataset.data_memory_limit(100 * 2**20):
        dataset.ensure_room(50 * 2**20, "x", "lower n")
        with pytest.raises(DataError, match=r"^the inputs need 51 MiB, more than half the "
                           r"100 MiB of the limit given by --max-memory; lower n, or give a "
                           r"larger --max-memory$"):
            dataset.ensure_room(51 * 2**20, "the inputs", "lower n")
    with dataset.data_memory_limit(4000 * 2**20):  # a limit above the machine's lets it in
        dataset.ensure_room(1500 * 2**20, "x", "lower n")
    with pytest.raises(DataError):  # the limit ends with its block
        dataset.ensure_room(600 * 2**20, "x", "lower n")


BIG_RANDOM = """model big
data random(n = 1000, shape = [16384], classes = 3)
input x: f32[B, 16384]
input y: i64[B]
objective loss = cross_entropy(dense(x, 3), y)
optimizer sgd(lr = 0.1) minimize loss
train { batch = 10, steps = 1 }
"""


@pytest.mark.parametrize("command", ["check", "train"])
def test_max_memory_bounds_a_generated_data_set(cli, command):
    import tracemalloc
    from pathlib import Path

    Path("big.dl").write_text(BIG_RANDOM)  # 188 MiB of inputs
    tracemalloc.start()
    try:
        status, out, err = cli(command, "big.dl", "--max-memory", "100M")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 1 and err.count("error:") == 1
    assert err.startswith("big.dl:2:1: error: the 16,384,000 random inputs of data set "
                          "'random' (n = 1000, shape = [16384]) need 188 MiB, more than half "
                          "the 100 MiB of the limit given by --max-memory; lower n or shape")
    assert peak < 20 * 2**20  # refused before anything was drawn


def test_max_memory_of_the_api_bounds_the_data_set():
    import dsl
    from dsl.errors import DataErr

    with pytest.raises(DataErr, match="more than half the 100 MiB of the limit given by "
                       "--max-memory"):
        dsl.compile(BIG_RANDOM, max_memory=100 * 2**20)
