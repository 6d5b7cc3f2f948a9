"""dslrun against PyTorch in float64 for the sequence layers: `embedding` (forward and the
table's gradient, against torch.nn.Embedding, for a small vocabulary, whose gradient is a
one-hot matmul, and a large one, a bincount), `gelu` (exact and tanh, values and input
gradients against F.gelu) and `masked_softmax` (against softmax of masked_fill(-inf)).

The table's gradient is read from one full-batch `gd(lr = 1.0)` step: W₁ = W₀ − ∇W.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the cross-checks compare with PyTorch "
                            "(pip install -e '.[crosscheck]')")
F = torch.nn.functional

import dsl  # noqa: E402

TOL = 1e-12  # float64 on both sides: the observed differences are ~1e-16

EMBEDDING = """
model crosscheck_embedding
input ids: i64[N, 3, 2]
input t: f32[N, 3, 2, 5]
h = embedding(ids, V, 5)
objective loss = mse(h, t)
output emb = h
optimizer gd(lr = 1.0) minimize loss
train { steps = 1 }
"""


@pytest.mark.parametrize("vocab", [7, 300])
def test_embedding_forward_and_table_gradient_match_torch(vocab: int) -> None:
    r = np.random.default_rng(vocab)
    ids = r.integers(0, min(vocab, 40), (8, 3, 2))  # repeated ids: rows accumulate
    t = r.standard_normal((8, 3, 2, 5))
    model = dsl.compile(EMBEDDING.replace("V", str(vocab)), dtype="float64",
                        overrides={"ids": ids, "t": t})
    w0 = model.params["embedding1.weight"].copy()
    assert w0.shape == (vocab, 5) and w0.dtype == np.float64

    emb = torch.nn.Embedding(vocab, 5, dtype=torch.float64)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(w0))
    h = emb(torch.from_numpy(ids))
    loss = F.mse_loss(h, torch.from_numpy(t))
    loss.backward()

    out = model(ids=ids, t=t)
    np.testing.assert_allclose(out["emb"], h.detach().numpy(), rtol=TOL, atol=TOL)
    assert float(out["loss"]) == pytest.approx(loss.item(), rel=TOL)
    model.fit(steps=1)
    grad = w0 - model.params["embedding1.weight"]
    np.testing.assert_allclose(grad, emb.weight.grad.numpy(), rtol=1e-10, atol=TOL)
    assert np.count_nonzero(np.abs(grad).sum(-1)) == len(np.unique(ids))


GELU = """
model crosscheck_gelu
input x: f32[N, 6]
input u: f32[N, 6]
output y = gelu(x, approximate = "APPROX")
output g = grad(sum(gelu(x, approximate = "APPROX") * u), x)
"""


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_values_and_gradients_match_torch(approximate: str) -> None:
    r = np.random.default_rng(1)
    x = np.concatenate([np.linspace(-8, 8, 6 * 20).reshape(20, 6),
                        r.standard_normal((10, 6)) * 2])
    u = r.standard_normal(x.shape)
    out = dsl.compile(GELU.replace("APPROX", approximate), dtype="float64")(x=x, u=u)
    xt = torch.tensor(x, requires_grad=True)
    y = F.gelu(xt, approximate=approximate)
    (g,) = torch.autograd.grad((y * torch.from_numpy(u)).sum(), xt)
    np.testing.assert_allclose(out["y"], y.detach().numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(out["g"], g.numpy(), rtol=1e-10, atol=TOL)


MASKED = """
model crosscheck_masked
input s: f32[N, 4, 6]
input keep: bool[N, 4, 6]
input u: f32[N, 4, 6]
output p = masked_softmax(s, keep)
output g = grad(sum(masked_softmax(s, keep) * u), s)
"""


def test_masked_softmax_matches_torch_masked_fill() -> None:
    r = np.random.default_rng(2)
    s = r.standard_normal((3, 4, 6)) * 2
    keep = r.random((3, 4, 6)) < 0.6
    keep[..., 0] = True  # torch gives NaN for a row with nothing kept (dslrun: zeros)
    u = r.standard_normal(s.shape)
    out = dsl.compile(MASKED, dtype="float64")(s=s, keep=keep, u=u)
    st = torch.tensor(s, requires_grad=True)
    p = torch.softmax(st.masked_fill(~torch.from_numpy(keep), float("-inf")), dim=-1)
    (g,) = torch.autograd.grad((p * torch.from_numpy(u)).sum(), st)
    np.testing.assert_allclose(out["p"], p.detach().numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(out["g"], g.numpy(), rtol=1e-10, atol=TOL)
