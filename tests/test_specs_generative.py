"""The catalogue's generative specs: vae, hierarchical_vae, diffusion and gan. Each test checks
the spec's "shows" on a run of its default (or a shortened) training, runs its sampler, and the
cross-checks hold the formulas to an independent float64 computation: the VAE's ELBO terms
against NumPy for fixed weights and noise, DDPM's forward noising and posterior against NumPy,
and the GAN's alternating steps against a PyTorch loop with the same weights and noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import spec

import dsl
from runtime.train.evaluation import eval_seed

pytestmark = pytest.mark.usefixtures("one_blas_thread")

RING = np.array([[2 * np.cos(a), 2 * np.sin(a)] for a in np.arange(8) * np.pi / 4])
RING_SIGMA = 0.1  # the ring of 8 Gaussians of diffusion and gan


def _softplus(v: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, v)


def _mode_shares(samples: np.ndarray, centers: np.ndarray = RING,
                 sigma: float = RING_SIGMA) -> np.ndarray:
    """The fraction of the samples within 3σ of each center."""
    d = np.linalg.norm(samples[:, None, :] - centers[None], axis=-1)
    return (d < 3 * sigma).mean(axis=0)


# ---------------------------------------------------------------- vae

def _vae_numpy(p: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per image: −log p(x | z) at z = μ + σ ε (Bernoulli pixels) and KL(q(z|x) ‖ N(0, I)) by
    the univariate form of Eq. 15.16 summed over coordinates, in float64."""
    h = np.maximum(x @ p["encoder.dense1.W"] + p["encoder.dense1.b"], 0)
    mu = h @ p["encoder.dense2.W"] + p["encoder.dense2.b"]
    logvar = h @ p["encoder.dense3.W"] + p["encoder.dense3.b"]
    sigma = np.exp(0.5 * logvar)
    z = mu + sigma * eps
    hd = np.maximum(z @ p["decoder.dense2.W"] + p["decoder.dense2.b"], 0)
    logits = hd @ p["decoder.dense1.W"] + p["decoder.dense1.b"]
    rec = np.sum(x * _softplus(-logits) + (1 - x) * _softplus(logits), axis=1)
    kl = np.sum(np.log(1 / sigma) + (sigma ** 2 + mu ** 2) / 2 - 0.5, axis=1)
    return rec, kl


def test_vae_elbo_terms_match_numpy_for_fixed_weights_and_noise() -> None:
    m = dsl.load(spec("vae"), dtype="float64")
    m.fit(steps=30, final_eval=False)  # biases away from their zero start
    p = m.params
    assert p["encoder.dense3.W"].shape == (256, 8) and p["decoder.dense1.W"].shape == (256, 64)
    x = m.dataset.test["x"][:16].astype(np.float64)
    eps = np.random.default_rng(0).standard_normal((16, 8))
    out = m.run("elbo_terms", x=x, eps=eps)
    rec, kl = _vae_numpy(p, x, eps)
    np.testing.assert_allclose(out["rec"], rec, rtol=1e-12)
    np.testing.assert_allclose(out["kl"], kl, rtol=1e-12)
    # the objective itself: the evaluation generator's first draw is its ε
    eps_eval = np.random.Generator(np.random.PCG64(eval_seed(0))).standard_normal((16, 8))
    rec, kl = _vae_numpy(p, x, eps_eval)
    values = m(x=x)
    assert float(values["loss"]) == pytest.approx(np.mean(rec + kl), rel=1e-12)
    assert float(values["kl_term"]) == pytest.approx(np.mean(kl), rel=1e-12)


def test_vae_elbo_falls_and_reconstructions_beat_the_mean_image() -> None:
    m = dsl.load(spec("vae"))
    before = m.evaluate("test")["loss"]
    assert before > 40  # untrained: about 64 log 2
    m.fit(final_eval=False)
    test = m.evaluate("test")
    assert test["loss"] < 0.45 * before  # ≈ 18.1 against ≈ 45.4
    assert test["reconstruction"] < 0.4 * test["mean_image"]  # ≈ 8.7 against ≈ 24.7
    assert 2 < test["kl_term"] < test["loss"]
    out = m.run("sample", n=32, rows=4)
    images, grid = out["images"], out["grid"]
    assert images.shape == (32, 8, 8) and grid.shape == (32, 64)
    assert np.all(np.isfinite(images)) and 0 <= images.min() and images.max() <= 1
    np.testing.assert_array_equal(grid, images.reshape(4, 8, 8, 8).transpose(0, 2, 1, 3)
                                  .reshape(32, 64))
    assert images.std() > 0.2  # digits, not the grey of an unused decoder
    np.testing.assert_array_equal(m.run("sample", n=32, rows=4)["images"], images)  # seeded


# ---------------------------------------------------------------- hierarchical_vae

def test_hierarchical_vae_trains_and_samples() -> None:
    m = dsl.load(spec("hierarchical_vae"))
    before = m.evaluate("test")["loss"]
    m.fit(final_eval=False)
    test = m.evaluate("test")
    assert test["loss"] < 0.45 * before  # ≈ 18.1 against ≈ 46.1
    assert test["kl_top"] > 0.5 and test["kl_bottom"] > 2  # both levels are used
    out = m.run("sample")
    assert out["images"].shape == (64, 8, 8) and out["grid"].shape == (64, 64)
    assert np.all(np.isfinite(out["images"])) and out["images"].std() > 0.2


def test_hierarchical_vae_as_printed_leaves_the_top_level_unused() -> None:
    m = dsl.load(spec("hierarchical_vae"), overrides={"AS_PRINTED": "true"})
    m.fit(final_eval=False)
    assert m.evaluate("test")["kl_top"] < 0.05


# ---------------------------------------------------------------- diffusion

def _ddpm_schedule(T: int = 100, beta_1: float = 1e-3, beta_T: float = 0.2
                   ) -> tuple[np.ndarray, np.ndarray]:
    """β_t and β̄_t for t = 0 .. T (β_0 = 0, β̄_0 = 1)."""
    beta = np.concatenate([[0.0], np.linspace(beta_1, beta_T, T)])
    return beta, np.cumprod(1 - beta)


def test_diffusion_forward_noising_and_posterior_match_numpy() -> None:
    m = dsl.load(spec("diffusion"), dtype="float64")
    beta, bbar = _ddpm_schedule()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 2))
    t = rng.integers(1, 101, 200)
    t[:3] = [1, 2, 100]
    out = m.run("forward_process", x=x, t=t)
    z, eps = out["z"], out["eps"]
    assert z.shape == eps.shape == (200, 2) and abs(eps.std() - 1) < 0.15
    a = bbar[t][:, None]
    np.testing.assert_allclose(z, np.sqrt(a) * x + np.sqrt(1 - a) * eps, rtol=1e-12,
                               atol=1e-14)  # Eq. 15.22

    post = m.run("reverse_posterior", x=x, z=z, t=t)
    # q(z_{t-1} | z_t, x) by Bayes' rule from q(z_{t-1} | x) = N(√β̄_{t-1} x, 1 − β̄_{t-1})
    # (15.22) and q(z_t | z_{t-1}) = N(√(1 − β_t) z_{t-1}, β_t) (15.21)
    b, prev = beta[t][:, None], bbar[t - 1][:, None]
    first = t == 1  # z_0 = x: q(z_0 | z_1, x) is the point mass at x
    prior_var = np.where(first[:, None], 1.0, 1 - prev)
    var = np.where(first[:, None], 0.0, 1 / (1 / prior_var + (1 - b) / b))
    mean = np.where(first[:, None], x,
                    var * (np.sqrt(prev) * x / prior_var + np.sqrt(1 - b) * z / b))
    np.testing.assert_allclose(post["var"], var[:, 0], rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(post["mean"], mean, rtol=1e-10, atol=1e-12)
    # the sampler's form: μ̂ at x̂ = (z − √(1 − β̄_t) ε) / √β̄_t is DDPM's
    # (z − β_t / √(1 − β̄_t) ε) / √(1 − β_t) (Ho et al. 2020, Algorithm 2)
    x_hat = (z - np.sqrt(1 - a) * eps) / np.sqrt(a)
    at_x_hat = m.run("reverse_posterior", x=x_hat, z=z, t=t)["mean"]
    np.testing.assert_allclose(at_x_hat, (z - b / np.sqrt(1 - a) * eps) / np.sqrt(1 - b),
                               rtol=1e-9, atol=1e-11)


def _size(g) -> int:
    return sum(1 + sum(_size(r) for r in n.regions) for n in g.nodes.values())


def test_diffusion_sampler_is_compiled_once_whatever_T() -> None:
    sizes = {_size(dsl.load(spec("diffusion"), overrides={"T": T}).procedure_graph(
        "sample", n=n).graph) for T in (10, 100) for n in (5, 1000)}
    assert len(sizes) == 1


def _checked_shares(out: dict) -> np.ndarray:
    """The mode shares of a sampler's 1000 2-D `samples`, checked against the `share` and
    `near` it printed."""
    samples = out["samples"]
    assert samples.shape == (1000, 2) and np.all(np.isfinite(samples))
    share = _mode_shares(samples)
    np.testing.assert_allclose(out["share"], share, atol=1e-12)
    assert float(out["near"]) == pytest.approx(share.sum())
    return share


def test_diffusion_samples_land_near_the_modes_of_the_mixture() -> None:
    m = dsl.load(spec("diffusion"))
    result = m.fit(final_eval=False)
    assert result.loss_final < 0.4 * result.loss_first
    out = m.run("sample")
    share = _checked_shares(out)
    assert share.sum() >= 0.9  # ≈ 0.96
    assert np.all((share >= 0.5 / 8) & (share <= 2 / 8)), share  # each mode has its share


def test_diffusion_digits_variant_samples_images() -> None:
    m = dsl.load(spec("diffusion"), overrides={"DIGITS": "true"})
    result = m.fit(steps=30, final_eval=False)
    assert result.loss_final < result.loss_first
    images = m.run("sample", n=6)["images"]
    assert images.shape == (6, 8, 8) and np.all(np.isfinite(images))
    assert 0 <= images.min() and images.max() <= 1


# ---------------------------------------------------------------- gan

def test_gan_covers_the_modes_of_the_ring() -> None:
    m = dsl.load(spec("gan"))
    assert [ph.name for ph in m.program.phases] == ["g_loss", "d_loss"]
    m.fit(final_eval=False)
    out = m.run("sample")
    share = _checked_shares(out)
    assert float(out["modes"]) == np.sum(share >= 0.02)
    assert np.sum(share >= 0.02) >= 7  # 8 with the default seed


class _Recorder:
    """A generator that keeps a copy of every normal draw (the GAN's noise mini-batches)."""

    def __init__(self, rng) -> None:
        self.rng = rng
        self.normals: list[np.ndarray] = []

    def standard_normal(self, shape):
        v = self.rng.standard_normal(shape)
        self.normals.append(np.array(v))
        return v

    def __getattr__(self, name):
        return getattr(self.rng, name)


def test_gan_alternating_steps_match_torch() -> None:
    torch = pytest.importorskip("torch", reason="the cross-check compares with PyTorch "
                                "(pip install -e '.[crosscheck]')")
    F = torch.nn.functional
    x = RING[np.arange(64) % 8] + RING_SIGMA * np.random.default_rng(2).standard_normal((64, 2))
    m = dsl.load(spec("gan"), dtype="float64", data={"x": x})
    start = m.params
    recorder = _Recorder(m.trainer.rng)
    m.trainer.machine.rng = recorder  # the plans are made at the first step, with this one
    steps = 3
    result = m.fit(steps=steps, batch=64, final_eval=False)
    noise = recorder.normals
    assert [v.shape for v in noise] == [(64, 8)] * (2 * steps)  # g, then d, each step

    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in start.items()}

    def mlp(prefix: str, h, act):
        h = act(h @ p[f"{prefix}.dense1.W"] + p[f"{prefix}.dense1.b"])
        h = act(h @ p[f"{prefix}.dense2.W"] + p[f"{prefix}.dense2.b"])
        return h @ p[f"{prefix}.dense3.W"] + p[f"{prefix}.dense3.b"]

    def G(z):
        return mlp("G", z, torch.relu)

    def D(v):
        return mlp("D", v, lambda h: F.leaky_relu(h, 0.2))[:, 0]

    def bce(logits, target: float):
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

    names = {net: [k for k in p if k.startswith(f"{net}.")] for net in ("G", "D")}
    assert len(names["G"]) == len(names["D"]) == 6 and len(p) == 12
    opt = {net: torch.optim.Adam([p[k] for k in names[net]], lr=1e-3, betas=(0.5, 0.999),
                                 eps=1e-8) for net in ("G", "D")}
    xt = torch.from_numpy(x)
    g_losses, d_losses = [], []
    for s in range(steps):
        z_g, z_d = (torch.from_numpy(v) for v in noise[2 * s: 2 * s + 2])
        opt["G"].zero_grad()  # the generator's step first (B §16.4) ...
        g_loss = bce(D(G(z_g)), 1.0)
        g_loss.backward()
        opt["G"].step()
        opt["D"].zero_grad()  # ... then the discriminator's, on a fresh noise batch
        d_loss = bce(D(xt), 1.0) + bce(D(G(z_d).detach()), 0.0)
        d_loss.backward()
        opt["D"].step()
        g_losses.append(g_loss.item())
        d_losses.append(d_loss.item())

    np.testing.assert_allclose(result.losses["g_loss"], g_losses, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(result.losses["d_loss"], d_losses, rtol=1e-10, atol=1e-10)
    end = m.params
    assert max(np.abs(end[k] - start[k]).max() for k in end) > 1e-3  # the steps moved them
    for k, v in end.items():
        np.testing.assert_allclose(v, p[k].detach().numpy(), rtol=1e-10, atol=1e-10,
                                   err_msg=k)


# ---------------------------------------------------------------- the command line

@pytest.mark.parametrize("name, names", [
    ("vae", ["images", "grid"]),
    ("hierarchical_vae", ["images", "grid"]),
    ("diffusion", ["samples", "share", "near"]),
    ("gan", ["samples", "share", "near", "modes"]),
])
def test_dslrun_sample_writes_the_samples(dslrun, tmp_path: Path, name: str,
                                          names: list[str]) -> None:
    trained = dslrun("train", spec(name), "--steps", "3", "--out", tmp_path / "run", "--quiet")
    assert trained.returncode == 0, trained.stderr
    proc = dslrun("sample", spec(name), "--checkpoint", tmp_path / "run", "--set", "n=16",
                  "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    for k in names:
        assert f"  {k}" in proc.stdout
    with np.load(tmp_path / "out" / "sample.npz") as f:
        assert sorted(f.files) == sorted(names)
        assert f[names[0]].shape[0] == 16 and all(np.all(np.isfinite(f[k])) for k in names)
