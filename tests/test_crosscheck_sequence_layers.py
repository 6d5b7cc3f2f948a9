"""The prelude's sequence layers against PyTorch in float64, weights copied across: the
recurrent cells (rnn_cell, lstm_cell, gru_cell) unrolled over T = 7 by a compile-time `for` and
by a run-time `loop` against torch.nn.RNN / LSTM / GRU, multi_head_attention against
torch.nn.MultiheadAttention (batch_first), transformer_encoder against
torch.nn.TransformerEncoderLayer (both norm placements, relu and gelu, dropout 0),
scaled_dot_attention against F.scaled_dot_product_attention and additive_attention against the
same formula written in torch. Each check compares the outputs and the gradients of a loss Σ y·w
(w fixed and random) with respect to the inputs and every parameter.

The weights go in the way a user's would: torch's tensors under the program's parameter names
in a checkpoint, loaded with `Model.init_from(strict = True)`, so the test also checks that the
names map one to one. The position encodings and the helpers need no torch and always run.
(tests/test_crosscheck_sequences.py checks the primitives under them: embedding, gelu,
masked_softmax.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dsl
from runtime.train.checkpoint import save_checkpoint

try:
    import torch
except ImportError:  # the cross-checks need it; the other tests here do not
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="the cross-checks compare with PyTorch "
                                 "(pip install -e '.[crosscheck]')")

RTOL, ATOL = 1e-10, 1e-12   # float64 on both sides: the observed differences are ~1e-14


def _check(model: dsl.Model, weights: dict[str, np.ndarray], data: dict[str, np.ndarray],
           expected: dict[str, np.ndarray], tmp_path: Path) -> None:
    """Load `weights` (program name -> array) into `model` through a checkpoint, run it on
    `data` and compare its outputs with `expected` (output name -> torch value)."""
    path = save_checkpoint(tmp_path / "torch.npz", weights, {})
    model.init_from(path, strict=True)
    out = model(**data)
    for k, want in expected.items():
        np.testing.assert_allclose(out[k], want, rtol=RTOL, atol=ATOL, err_msg=k)


def _grads_of(names: dict[str, str]) -> str:
    """`output g_<short> = grad(loss, <program name>)` for each short -> program name."""
    return "\n".join(f"output g_{k} = grad(loss, {n})" for k, n in names.items())


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def _expected(loss, outputs: dict, wrt: dict) -> dict[str, np.ndarray]:
    """The loss, `outputs` and the gradient of the loss for each of `wrt` (as g_<name>)."""
    grads = torch.autograd.grad(loss, list(wrt.values()), allow_unused=True)
    out = {"loss": loss.detach().numpy(), **{k: v.detach().numpy() for k, v in outputs.items()}}
    for k, g in zip(wrt, grads):
        out[f"g_{k}"] = g.numpy() if g is not None else np.zeros(wrt[k].shape)
    return out


# ---------------------------------------------------------------- recurrent cells

T, B, I, H = 7, 3, 4, 5

CELL_SPEC = """
model cell_crosscheck
input x: f32[N, {T}, {I}]
input h0: f32[N, {H}]
input c0: f32[N, {H}]
input wy: f32[N, {T}, {H}]
input wh: f32[N, {H}]
input wc: f32[N, {H}]
net rnn(x) {{
    h = h0
    c = c0
    {unroll}
    return ys, h, c
}}
ys, hT, cT = rnn(x)
objective loss = sum(ys * wy) + sum(hT * wh) + sum(cT * wc)
output out_ys = ys
output out_h = hT
output out_c = cT
output g_x = grad(loss, x)
output g_h0 = grad(loss, h0)
output g_c0 = grad(loss, c0)
{grads}
optimizer sgd(lr = 0.1) minimize loss
"""

# the time loop: a compile-time `for` collecting the states, or a run-time `loop` emitting them
UNROLL = {
    "for": "hs = []\n    for t in 0 .. {T} {{ {step}; hs = hs + [h] }}\n"
           "    ys = stack(hs, axis = 1)",
    "loop": "loop t in 0 .. {T} {{ {step}; emit h as hs }}\n"
            "    ys = swapaxes(hs, 0, 1)",
}

# name -> (the prelude def, one step, the torch module's class and options)
CELLS = {
    "rnn": ("rnn_cell", "h = rnn_cell(x[:, t], h)", "RNN", {}),
    "rnn_relu": ("rnn_cell", 'h = rnn_cell(x[:, t], h, nonlinearity = "relu")', "RNN",
                 {"nonlinearity": "relu"}),
    "lstm": ("lstm_cell", "h, c = lstm_cell(x[:, t], h, c)", "LSTM", {}),
    "gru": ("gru_cell", "h = gru_cell(x[:, t], h)", "GRU", {}),
}
CELL_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # torch: the same + "_l0"


@needs_torch
@pytest.mark.parametrize("unroll", sorted(UNROLL))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_recurrent_cell_matches_torch(cell: str, unroll: str, tmp_path: Path) -> None:
    fn, step, cls, options = CELLS[cell]
    r = np.random.default_rng(0)
    data = {"x": r.standard_normal((B, T, I)), "h0": r.standard_normal((B, H)),
            "c0": r.standard_normal((B, H)), "wy": r.standard_normal((B, T, H)),
            "wh": r.standard_normal((B, H)), "wc": r.standard_normal((B, H))}
    names = {n: f"rnn.{fn}1.{n}" for n in CELL_PARAMS}
    spec = CELL_SPEC.format(T=T, I=I, H=H, grads=_grads_of(names),
                            unroll=UNROLL[unroll].format(T=T, step=step))
    model = dsl.compile(spec, dtype="float64", overrides=data)
    assert sorted(model.params) == sorted(names.values())

    torch.manual_seed(0)
    module = getattr(torch.nn, cls)(I, H, batch_first=True, dtype=torch.float64, **options)
    weights = {n: getattr(module, f"{n}_l0") for n in CELL_PARAMS}
    t = {k: _t(v) for k, v in data.items()}
    if cls == "LSTM":
        ys, (hT, cT) = module(t["x"], (t["h0"][None], t["c0"][None]))
        cT = cT[0]
    else:
        ys, hT = module(t["x"], t["h0"][None])
        cT = t["c0"]  # carried through unchanged
    hT = hT[0]
    loss = (ys * t["wy"]).sum() + (hT * t["wh"]).sum() + (cT * t["wc"]).sum()
    expected = _expected(loss, {"out_ys": ys, "out_h": hT, "out_c": cT},
                         {"x": t["x"], "h0": t["h0"], "c0": t["c0"], **weights})
    _check(model, {names[n]: w.detach().numpy() for n, w in weights.items()}, data, expected,
           tmp_path)


# ---------------------------------------------------------------- attention

TQ, S, E, HEADS, FF = 6, 5, 8, 2, 16

ATTN_SPEC = """
model attention_crosscheck
input x: f32[N, {TQ}, {E}]
input memory: f32[N, {S}, {E}]
input mask: bool[{TQ}, {TQ}]
input wy: f32[N, {TQ}, {E}]
y = {expr}
objective loss = sum(y * wy)
output out = y
output g_x = grad(loss, x)
output g_memory = grad(loss, memory)
{grads}
optimizer sgd(lr = 0.1) minimize loss
"""


def _attention_data() -> dict[str, np.ndarray]:
    r = np.random.default_rng(1)
    mask = r.uniform(size=(TQ, TQ)) < 0.6
    mask[np.arange(TQ), r.integers(0, TQ, TQ)] = True   # every query sees some key
    return {"x": r.standard_normal((B, TQ, E)), "memory": r.standard_normal((B, S, E)),
            "mask": mask, "wy": r.standard_normal((B, TQ, E))}


def _attention_check(expr: str, module: torch.nn.Module, names: dict[str, str], forward,
                     tmp_path: Path) -> None:
    """Compile `y = expr`, copy `module`'s parameters (torch name -> program name) and compare
    y and the gradients with torch's `forward(module, x, memory, mask)`."""
    data = _attention_data()
    short = {tn.replace(".", "_"): n for tn, n in names.items()}
    spec = ATTN_SPEC.format(TQ=TQ, S=S, E=E, expr=expr, grads=_grads_of(short))
    model = dsl.compile(spec, dtype="float64", overrides=data)
    assert sorted(model.params) == sorted(names.values())

    tp = dict(module.named_parameters())
    x, memory, wy = _t(data["x"]), _t(data["memory"]), _t(data["wy"])
    y = forward(module, x, memory, torch.from_numpy(data["mask"]))
    expected = _expected((y * wy).sum(), {"out": y}, {
        "x": x, "memory": memory, **{tn.replace(".", "_"): tp[tn] for tn in names}})
    _check(model, {n: tp[tn].detach().numpy() for tn, n in names.items()}, data, expected,
           tmp_path)


def _randomize_vectors(module: torch.nn.Module) -> torch.nn.Module:
    """Biases and norm scales drawn at random (torch starts many at 0 or 1)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 1:
                p.normal_()
    return module


def _mha(prefix: str = "") -> dict[str, str]:
    return {f"{prefix}in_proj_weight": "multi_head_attention1.in_proj_weight",
            f"{prefix}in_proj_bias": "multi_head_attention1.in_proj_bias",
            f"{prefix}out_proj.weight": "multi_head_attention1.out_proj_weight",
            f"{prefix}out_proj.bias": "multi_head_attention1.out_proj_bias"}


def _causal() -> torch.Tensor:
    return torch.triu(torch.ones(TQ, TQ, dtype=torch.bool), 1)  # torch: true = masked


# variant -> (the call, torch's forward); torch's attn_mask is true where attention is *not*
# allowed, the prelude's mask where it is
MHA_VARIANTS = {
    "plain": (f"multi_head_attention(x, {HEADS})",
              lambda m, x, mem, mask: m(x, x, x, need_weights=False)[0]),
    "causal": (f"multi_head_attention(x, {HEADS}, causal = true)",
               lambda m, x, mem, mask: m(x, x, x, attn_mask=_causal(), need_weights=False)[0]),
    "mask": (f"multi_head_attention(x, {HEADS}, mask = mask)",
             lambda m, x, mem, mask: m(x, x, x, attn_mask=~mask, need_weights=False)[0]),
    "cross": (f"multi_head_attention(x, {HEADS}, memory = memory)",
              lambda m, x, mem, mask: m(x, mem, mem, need_weights=False)[0]),
}


@needs_torch
@pytest.mark.parametrize("variant", sorted(MHA_VARIANTS))
def test_multi_head_attention_matches_torch(variant: str, tmp_path: Path) -> None:
    expr, forward = MHA_VARIANTS[variant]
    torch.manual_seed(0)
    module = _randomize_vectors(torch.nn.MultiheadAttention(E, HEADS, batch_first=True,
                                                            dtype=torch.float64))
    _attention_check(expr, module, _mha(), forward, tmp_path)


@needs_torch
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_transformer_encoder_matches_torch(norm_first: bool, activation: str, causal: bool,
                                           tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _randomize_vectors(torch.nn.TransformerEncoderLayer(
        E, HEADS, FF, dropout=0.0, activation=activation, batch_first=True,
        norm_first=norm_first, dtype=torch.float64))
    module.train()  # dropout is 0; training mode keeps torch off its fused inference path
    p = "transformer_encoder1."
    names = {f"self_attn.{k}": p + v for k, v in _mha().items()}
    names.update({f"linear{k}.weight": f"{p}linear{k}.W" for k in (1, 2)})
    names.update({f"linear{k}.bias": f"{p}linear{k}.b" for k in (1, 2)})
    names.update({f"norm{k}.{w}": f"{p}norm{k}_{w}" for k in (1, 2) for w in ("weight", "bias")})
    expr = (f"transformer_encoder(x, {HEADS}, {FF}, norm_first = {str(norm_first).lower()}, "
            f'activation = "{activation}", causal = {str(causal).lower()})')
    if causal:
        forward = lambda m, x, mem, mask: m(x, src_mask=_causal(), is_causal=True)  # noqa: E731
    else:
        forward = lambda m, x, mem, mask: m(x)  # noqa: E731
    _attention_check(expr, module, names, forward, tmp_path)


SDPA_SPEC = """
model sdpa_crosscheck
input q: f32[2, 3, 6, 4]
input k: f32[2, 3, 5, 4]
input v: f32[2, 3, 5, 7]
input mask: bool[2, 1, 6, 5]
input wy: f32[2, 3, 6, 7]
y = scaled_dot_attention(q, k, v{options})
objective loss = sum(y * wy)
output out = y
output g_q = grad(loss, q)
output g_k = grad(loss, k)
output g_v = grad(loss, v)
"""


@needs_torch
@pytest.mark.parametrize("options", ["", "mask", "causal", "mask_causal"])
def test_scaled_dot_attention_matches_torch_on_4d_batches(options: str) -> None:
    r = np.random.default_rng(2)
    mask = r.uniform(size=(2, 1, 6, 5)) < 0.6
    mask[..., 0] = True
    data = {"q": r.standard_normal((2, 3, 6, 4)), "k": r.standard_normal((2, 3, 5, 4)),
            "v": r.standard_normal((2, 3, 5, 7)), "mask": mask,
            "wy": r.standard_normal((2, 3, 6, 7))}
    call = {"": "", "mask": ", mask = mask", "causal": ", causal = true",
            "mask_causal": ", mask = mask, causal = true"}[options]
    model = dsl.compile(SDPA_SPEC.format(options=call), dtype="float64")
    t = {k: _t(data[k]) for k in ("q", "k", "v", "wy")}
    keep = torch.ones(2, 1, 6, 5, dtype=torch.bool)   # torch's F: true = may attend
    if "mask" in options:
        keep = keep & torch.from_numpy(mask)
    if "causal" in options:
        keep = keep & torch.ones(6, 5, dtype=torch.bool).tril()   # key s ≤ query t
    y = torch.nn.functional.scaled_dot_product_attention(t["q"], t["k"], t["v"],
                                                         attn_mask=keep)
    expected = _expected((y * t["wy"]).sum(), {"out": y}, {n: t[n] for n in "qkv"})
    out = model(**data)
    for k, want in expected.items():
        np.testing.assert_allclose(out[k], want, rtol=RTOL, atol=ATOL, err_msg=k)


ADDITIVE_SPEC = """
model additive_crosscheck
input q: f32[N, {q_shape}]
input k: f32[N, 5, 4]
input v: f32[N, 5, 7]
input mask: bool[N, {tq}, 5]
input wy: f32[N, {y_shape}]
y = additive_attention(q, k, v, 6{options})
objective loss = sum(y * wy)
output out = y
output g_q = grad(loss, q)
output g_k = grad(loss, k)
output g_v = grad(loss, v)
output g_W_q = grad(loss, additive_attention1.W_q)
output g_W_k = grad(loss, additive_attention1.W_k)
output g_w = grad(loss, additive_attention1.w)
"""


@needs_torch
@pytest.mark.parametrize("queries", ["sequence", "single"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "mask"])
def test_additive_attention_matches_the_formula_in_torch(queries: str, masked: bool) -> None:
    r = np.random.default_rng(3)
    single = queries == "single"
    q_shape, y_shape, tq = ((3,), (7,), 1) if single else ((6, 3), (6, 7), 6)
    mask = r.uniform(size=(B, tq, 5)) < 0.6
    mask[..., 2] = True
    data = {"q": r.standard_normal((B, *q_shape)), "k": r.standard_normal((B, 5, 4)),
            "v": r.standard_normal((B, 5, 7)), "mask": mask,
            "wy": r.standard_normal((B, *y_shape))}
    spec = ADDITIVE_SPEC.format(q_shape=", ".join(map(str, q_shape)), tq=tq,
                                y_shape=", ".join(map(str, y_shape)),
                                options=", mask = mask" if masked else "")
    model = dsl.compile(spec, dtype="float64")
    p = {k.split(".")[-1]: _t(v) for k, v in model.params.items()}
    t = {k: _t(data[k]) for k in ("q", "k", "v", "wy")}
    q = t["q"][:, None, :] if single else t["q"]
    # e_ts = wᵀ tanh(q_t W_q + k_s W_k), softmax over s, Σ_s a_ts v_s
    scores = torch.tanh((q @ p["W_q"])[:, :, None, :] + (t["k"] @ p["W_k"])[:, None]) @ p["w"]
    if masked:
        scores = scores.masked_fill(~torch.from_numpy(mask), float("-inf"))
    y = torch.softmax(scores, dim=-1) @ t["v"]
    y = y[:, 0] if single else y
    expected = _expected((y * t["wy"]).sum(), {"out": y}, {
        "q": t["q"], "k": t["k"], "v": t["v"], "W_q": p["W_q"], "W_k": p["W_k"], "w": p["w"]})
    out = model(**data)
    for k, want in expected.items():
        np.testing.assert_allclose(out[k], want, rtol=RTOL, atol=ATOL, err_msg=k)


# ---------------------------------------------------------------- positions and helpers

POSITIONS = """
model positions
input x: f32[N, 10, 6]
output pe = sinusoidal_positions(10, 6) + 0 * x
output learned = x + learned_positions(10, 6)
objective loss = sum(learned)
"""


def test_sinusoidal_positions_are_vaswanis_encoding() -> None:
    model = dsl.compile(POSITIONS, dtype="float64")
    pe = model(x=np.zeros((1, 10, 6)))["pe"][0]
    pos, i = np.arange(10)[:, None], np.arange(3)[None, :]
    want = np.empty((10, 6))
    want[:, 0::2] = np.sin(pos / 10000 ** (2 * i / 6))   # PE(pos, 2i)
    want[:, 1::2] = np.cos(pos / 10000 ** (2 * i / 6))   # PE(pos, 2i + 1)
    np.testing.assert_allclose(pe, want, rtol=1e-13, atol=1e-13)


def test_learned_positions_are_one_parameter_added_to_every_sequence() -> None:
    model = dsl.compile(POSITIONS, dtype="float64")
    (name, weight), = model.params.items()
    assert name == "learned_positions1.weight" and weight.shape == (10, 6)
    assert 0.01 < weight.std() < 0.03                  # N(0, 0.02²), as BERT
    x = np.random.default_rng(4).standard_normal((3, 10, 6))
    np.testing.assert_allclose(model(x=x)["learned"], x + weight, rtol=1e-15)


HELPERS = """
model helpers
input x: f32[N, 4, 6]
input opt: f32[N, 4, 6]
def pick(x, other = None) {
    if other == None { return x }
    return other
}
output swapped = swapaxes(x)
output swapped02 = swapaxes(x, 0, -1)
output heads = split_heads(x, 3)
output merged = merge_heads(split_heads(x, 3))
output given = pick(x, other = opt)
output not_given = pick(x)
objective loss = sum(x)
"""


def test_swapaxes_heads_and_optional_arguments() -> None:
    x = np.random.default_rng(5).standard_normal((2, 4, 6))
    out = dsl.compile(HELPERS, dtype="float64")(x=x, opt=-x)
    np.testing.assert_array_equal(out["swapped"], np.swapaxes(x, -2, -1))
    np.testing.assert_array_equal(out["swapped02"], np.swapaxes(x, 0, 2))
    np.testing.assert_array_equal(out["heads"], x.reshape(2, 4, 3, 2).transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(out["merged"], x)
    np.testing.assert_array_equal(out["given"], -x)       # `other == None` is false: given
    np.testing.assert_array_equal(out["not_given"], x)


FULLY_MASKED = """
model fully_masked
input q: f32[2, 3, 4]
input mask: bool[3, 3]
y = scaled_dot_attention(q, q, q, mask = mask, causal = true)
objective loss = sum(y * y)
output out = y
output g_q = grad(loss, q)
"""


def test_a_query_with_every_key_masked_gets_zero_weights_not_nan() -> None:
    q = np.random.default_rng(6).standard_normal((2, 3, 4))
    mask = np.ones((3, 3), bool)
    mask[1] = False                        # query 1 may attend to nothing
    out = dsl.compile(FULLY_MASKED, dtype="float64")(q=q, mask=mask)
    assert np.all(np.isfinite(out["out"])) and np.all(np.isfinite(out["g_q"]))
    np.testing.assert_array_equal(out["out"][:, 1], 0.0)
    np.testing.assert_allclose(out["out"][:, 0], q[:, 0], rtol=1e-15)   # causal: itself only
