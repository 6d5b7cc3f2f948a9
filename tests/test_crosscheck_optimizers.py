"""dslrun against PyTorch in float64: every built-in optimizer of the prelude takes the same
20 full-batch steps as its `torch.optim` counterpart from the same initial parameters, and an
MLP's outputs and symbolic gradients equal torch autograd's.

The models are compiled from spec strings with `dsl.compile(..., dtype="float64")`; the data
are fixed random arrays given as input defaults (`overrides`), so a step is full-batch. The
losses are means over the batch on both sides (F.cross_entropy and
F.binary_cross_entropy_with_logits average by default), so the gradients are the same.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the cross-checks compare with PyTorch "
                            "(pip install -e '.[crosscheck]')")
F = torch.nn.functional

import dsl  # noqa: E402

STEPS = 20
RTOL = ATOL = 1e-6      # float64 on both sides: the observed differences are ~1e-15

rng = np.random.default_rng(0)
X = rng.standard_normal((16, 4))
Y = rng.integers(0, 3, 16)

TANH_MLP = """
model crosscheck
input x: f32[N, 4]
input y: i64[N]
param W1: [4, 8] = normal(std = 0.5)
param b1: [8] = normal(std = 0.1) as bias
param W2: [8, 3] = normal(std = 0.5)
param b2: [3] = normal(std = 0.1) as bias
logits = tanh(x @ W1 + b1) @ W2 + b2
objective loss = cross_entropy(logits, y)
optimizer RULE minimize loss
train { steps = 20 }
"""

LINEAR = """
model crosscheck_linear
input x: f32[N, 4]
input y: i64[N]
param W: [4, 3] = normal(std = 0.5)
param b: [3] = normal(std = 0.1) as bias
logits = x @ W + b
objective loss = cross_entropy(logits, y)
optimizer RULE minimize loss
train { steps = 20 }
"""


def _tanh_forward(p: dict, x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


def _linear_forward(p: dict, x: torch.Tensor) -> torch.Tensor:
    return x @ p["W"] + p["b"]


MODELS = {"tanh_mlp": (TANH_MLP, _tanh_forward), "linear": (LINEAR, _linear_forward)}

# name -> (the dslrun rule, the torch optimizer); each built-in at least once, with
# non-default options where the rule has them
OPTIMIZERS = {
    "gd": ("gd(lr = 0.1)", lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "sgd": ("sgd(lr = 0.1)", lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "sgd_momentum": ("sgd(lr = 0.1, momentum = 0.9)",
                     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
    "sgd_dampening": ("sgd(lr = 0.1, momentum = 0.9, dampening = 0.3)",
                      lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.3)),
    "sgd_nesterov": ("sgd(lr = 0.1, momentum = 0.9, nesterov = true)",
                     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True)),
    "momentum": ("momentum(lr = 0.1, momentum = 0.8)",
                 lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.8, dampening=0)),
    "nesterov": ("nesterov(lr = 0.1, momentum = 0.8)",
                 lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.8, nesterov=True)),
    "adagrad": ("adagrad(lr = 0.1)", lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10)),
    "adagrad_initial": ("adagrad(lr = 0.1, initial = 0.5)",
                        lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10,
                                                       initial_accumulator_value=0.5)),
    "rmsprop": ("rmsprop(lr = 0.01)",
                lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.99, eps=1e-8)),
    "rmsprop_alpha": ("rmsprop(lr = 0.02, alpha = 0.9, eps = 1e-6)",
                      lambda ps: torch.optim.RMSprop(ps, lr=0.02, alpha=0.9, eps=1e-6)),
    "adam": ("adam(lr = 0.01)",
             lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8)),
    "adam_betas": ("adam(lr = 0.02, beta1 = 0.8, beta2 = 0.99, eps = 1e-6)",
                   lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6)),
    "adamw": ("adamw(lr = 0.01, weight_decay = 0.1)",
              lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8,
                                           weight_decay=0.1)),
}


def _torch_params(params: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {n: torch.tensor(v, dtype=torch.float64, requires_grad=True)
            for n, v in params.items()}


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_optimizer_matches_torch(opt_name: str, model_name: str) -> None:
    text, forward = MODELS[model_name]
    rule, make_torch = OPTIMIZERS[opt_name]
    model = dsl.compile(text.replace("RULE", rule), dtype="float64",
                        overrides={"x": X, "y": Y})
    start = model.params
    assert all(v.dtype == np.float64 for v in start.values())

    tp = _torch_params(start)
    opt = make_torch(list(tp.values()))
    xt, yt = torch.from_numpy(X), torch.from_numpy(Y)
    torch_losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(forward(tp, xt), yt)
        loss.backward()
        opt.step()
        torch_losses.append(loss.item())

    result = model.fit(steps=STEPS)
    assert result.step == STEPS
    np.testing.assert_allclose(result.losses["loss"], torch_losses, rtol=RTOL, atol=ATOL)
    end = model.params
    moved = max(float(np.max(np.abs(end[n] - start[n]))) for n in end)
    assert moved > 1e-2, "the parameters must move for the comparison to mean anything"
    for n, v in end.items():
        np.testing.assert_allclose(v, tp[n].detach().numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"{opt_name}: parameter {n}")


# ---------------------------------------------------------------- gradient clipping

# name -> (where dslrun's options go, the rule, the train block's extra settings, the torch
# optimizer, torch's clipping between backward and step); small limits so that every step clips
CLIPPING = {
    "train_clip_norm": ("sgd(lr = 0.5, momentum = 0.9)", "clip_norm = 0.05",
                        lambda ps: torch.optim.SGD(ps, lr=0.5, momentum=0.9),
                        lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.05)),
    "optimizer_clip_norm": ("adam(lr = 0.05, clip_norm = 0.05)", "",
                            lambda ps: torch.optim.Adam(ps, lr=0.05),
                            lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.05)),
    "train_clip_value": ("sgd(lr = 0.5)", "clip_value = 0.01",
                         lambda ps: torch.optim.SGD(ps, lr=0.5),
                         lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.01)),
    "clip_then_weight_decay": ("sgd(lr = 0.5, weight_decay = 0.1, decay_biases = true)",
                               "clip_norm = 0.05",
                               lambda ps: torch.optim.SGD(ps, lr=0.5, weight_decay=0.1),
                               lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.05)),
    "both_clips": ("sgd(lr = 0.5)", "clip_value = 0.02, clip_norm = 0.03",
                   lambda ps: torch.optim.SGD(ps, lr=0.5),
                   lambda ps: (torch.nn.utils.clip_grad_value_(ps, 0.02),
                               torch.nn.utils.clip_grad_norm_(ps, 0.03))),
}


@pytest.mark.parametrize("name", sorted(CLIPPING))
def test_gradient_clipping_matches_torch_clip_grad(name: str) -> None:
    rule, settings, make_torch, clip = CLIPPING[name]
    text = TANH_MLP.replace("RULE", rule).replace(
        "train { steps = 20 }", "train { steps = 20" + (", " + settings if settings else "")
        + " }")
    model = dsl.compile(text, dtype="float64", overrides={"x": X, "y": Y})
    tp = _torch_params(model.params)
    ps = list(tp.values())
    opt = make_torch(ps)
    xt, yt = torch.from_numpy(X), torch.from_numpy(Y)
    norms = []
    for _ in range(STEPS):
        opt.zero_grad()
        F.cross_entropy(_tanh_forward(tp, xt), yt).backward()
        norms.append(float(torch.sqrt(sum((p.grad ** 2).sum() for p in ps))))
        clip(ps)
        opt.step()
    assert min(norms) > 0.05  # every step clipped: the comparison means something
    model.fit(steps=STEPS)
    for n, v in model.params.items():
        np.testing.assert_allclose(v, tp[n].detach().numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name}: parameter {n}")


# ---------------------------------------------------------------- forward and gradients

GRAD_MLP = """
model crosscheck_grads
input x: f32[N, 5]
input y: i64[N]
input t: f32[N, 3]
param W1: [5, 7] = normal(std = 0.6)
param b1: [7] = normal(std = 0.2) as bias
param W2: [7, 6] = normal(std = 0.6)
param b2: [6] = normal(std = 0.2) as bias
param W3: [6, 3] = normal(std = 0.6)
param b3: [3] = normal(std = 0.2) as bias
h1 = tanh(x @ W1 + b1)
h2 = relu(h1 @ W2 + b2)
h3 = sigmoid(h2) * softplus(h1 @ W2 - b2)
logits = h3 @ W3 + b3
objective ce = cross_entropy(logits, y) + 0.01 / 2 * l2(weights)
objective bce = bce_with_logits(logits, t)
objective sq = mse(softmax(logits, axis = -1), t)
output out_logits = logits
output g_ce_W1 = grad(ce, W1)
output g_ce_b1 = grad(ce, b1)
output g_ce_W2 = grad(ce, W2)
output g_ce_b2 = grad(ce, b2)
output g_ce_W3 = grad(ce, W3)
output g_ce_b3 = grad(ce, b3)
output g_ce_x = grad(ce, x)
output g_bce_W1 = grad(bce, W1)
output g_bce_b2 = grad(bce, b2)
output g_sq_W1 = grad(sq, W1)
output g_sq_W3 = grad(sq, W3)
output g_sq_x = grad(sq, x)
"""


def test_mlp_outputs_and_gradients_match_torch_autograd() -> None:
    r = np.random.default_rng(1)
    x = r.standard_normal((12, 5))
    y = r.integers(0, 3, 12)
    t = r.uniform(0, 1, (12, 3))
    model = dsl.compile(GRAD_MLP, dtype="float64")
    out = model(x=x, y=y, t=t)

    p = _torch_params(model.params)
    xt = torch.tensor(x, requires_grad=True)
    h1 = torch.tanh(xt @ p["W1"] + p["b1"])
    h2 = torch.relu(h1 @ p["W2"] + p["b2"])
    h3 = torch.sigmoid(h2) * F.softplus(h1 @ p["W2"] - p["b2"])
    logits = h3 @ p["W3"] + p["b3"]
    weights = ("W1", "W2", "W3")
    losses = {
        "ce": F.cross_entropy(logits, torch.from_numpy(y))
        + 0.01 / 2 * sum((p[w] ** 2).sum() for w in weights),
        "bce": F.binary_cross_entropy_with_logits(logits, torch.from_numpy(t)),
        "sq": F.mse_loss(torch.softmax(logits, dim=-1), torch.from_numpy(t)),
    }
    np.testing.assert_allclose(out["out_logits"], logits.detach().numpy(), rtol=1e-12,
                               atol=1e-12)
    wrt = {"W1": p["W1"], "b1": p["b1"], "W2": p["W2"], "b2": p["b2"], "W3": p["W3"],
           "b3": p["b3"], "x": xt}
    checked = 0
    for name, loss in losses.items():
        assert float(out[name]) == pytest.approx(loss.item(), rel=1e-12, abs=1e-14), name
        names = [k[len(f"g_{name}_"):] for k in out if k.startswith(f"g_{name}_")]
        grads = torch.autograd.grad(loss, [wrt[n] for n in names], retain_graph=True)
        for n, g in zip(names, grads):
            np.testing.assert_allclose(out[f"g_{name}_{n}"], g.numpy(), rtol=1e-10,
                                       atol=1e-12, err_msg=f"d{name}/d{n}")
            checked += 1
    assert checked == 12
