"""Reference implementations of the bench specs in PyTorch (eager) and JAX (jit).

Each model matches its spec in `specs/bench/`: the same layer sizes, batch, float32,
mean cross-entropy, and SGD with momentum 0.9 and lr 0.01 (PyTorch's rule, which is also the
prelude's `sgd`). The data is random like the spec's `random(n = 4096, ...)` data set, and
each epoch visits a fresh permutation of it, one gathered batch per step, like dslrun's
Batcher. A step is: gather the batch, forward, loss, backward, update, and read the loss as
a Python float (dslrun's loop does that too, for its divergence check).

Run as a script it prints one JSON object, like `dslrun bench`:

    python bench/torch_models.py mlp_small --steps 50 --warmup 10 --threads 2
    python bench/torch_models.py mlp_small --framework jax

Only the standard library is imported at module level, so `bench/run.py` can read `MODELS`
without importing torch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

N_SAMPLES = 4096  # the default; `--n` (bench/run.py passes the spec's `random(n = ...)`)
CLOCK = time.perf_counter  # `--cpu`: time.process_time (this process's CPU time)
LR, MOMENTUM = 0.01, 0.9

# name -> (batch, sample shape, classes, layer list). Layers:
#   ("dense", units, relu)  ("conv", out_channels, kernel, padding)  ("relu",)
#   ("maxpool", k)  ("flatten",)
#   on sequences [T, features]: ("lstm", hidden) (nn.LSTM, its last hidden state),
#   ("transformer", heads, ff) (nn.TransformerEncoderLayer, post-norm, ReLU, dropout 0),
#   ("mean_time",) (the mean over the T positions)
MODELS: dict[str, dict[str, Any]] = {
    "mlp_small": {"batch": 128, "shape": (64,), "classes": 10,
                  "layers": [("dense", 256, True), ("dense", 256, True), ("dense", 10, False)]},
    "mlp_large": {"batch": 256, "shape": (784,), "classes": 10,
                  "layers": [("dense", 1024, True), ("dense", 1024, True),
                             ("dense", 10, False)]},
    "lenet": {"batch": 64, "shape": (1, 28, 28), "classes": 10,
              "layers": [("conv", 6, 5, 2), ("relu",), ("maxpool", 2),
                         ("conv", 16, 5, 0), ("relu",), ("maxpool", 2), ("flatten",),
                         ("dense", 120, True), ("dense", 84, True), ("dense", 10, False)]},
    "lstm": {"batch": 64, "shape": (32, 32), "classes": 10,
             "layers": [("lstm", 128), ("dense", 10, False)]},
    "transformer": {"batch": 32, "shape": (64, 128), "classes": 10,
                    "layers": [("transformer", 4, 512), ("mean_time",), ("dense", 10, False)]},
}


def _data(cfg: dict[str, Any]) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(0))  # as dslrun's `random` data set, seed 0
    x = rng.standard_normal((N_SAMPLES, *cfg["shape"])).astype(np.float32)
    y = rng.integers(0, cfg["classes"], N_SAMPLES).astype(np.int64)
    return x, y


def _peak_rss() -> Any:
    """`runtime.train.profile.PeakRss`, the meter `dslrun bench` uses (imported on use)."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.append(root)
    from runtime.train.profile import PeakRss

    return PeakRss()


def _time_steps(step: Any, order: Any, batch: int, warmup: int, steps: int,
                rss: Any) -> list[float]:
    """Run warmup + steps steps over per-epoch permutations; the step times (ms) after warm-up.
    `rss` (a `PeakRss`) measures the peak resident memory increase over the timed steps, as
    `dslrun bench` does."""
    per_epoch = N_SAMPLES // batch
    times: list[float] = []
    k = 0
    if warmup == 0:
        rss.__enter__()
    prev = CLOCK()
    while k < warmup + steps:
        perm = order()
        for i in range(per_epoch):
            step(perm[i * batch:(i + 1) * batch])
            now = CLOCK()
            if k >= warmup:
                times.append((now - prev) * 1000)
            k += 1
            if k == warmup:
                rss.__enter__()
                now = CLOCK()
            prev = now
            if k >= warmup + steps:
                break
    rss.__exit__(None, None, None)
    return times


# ---------------------------------------------------------------- PyTorch eager
def torch_model(name: str) -> Any:
    import torch
    from torch import nn

    class LastState(nn.Module):
        """nn.LSTM over [B, T, features] (batch_first); its hidden state after the last step."""

        def __init__(self, features: int, hidden: int) -> None:
            super().__init__()
            self.lstm = nn.LSTM(features, hidden, batch_first=True)

        def forward(self, x: Any) -> Any:
            return self.lstm(x)[1][0][-1]

    class MeanTime(nn.Module):
        def forward(self, x: Any) -> Any:
            return x.mean(dim=1)

    cfg = MODELS[name]
    mods: list[Any] = []
    shape = cfg["shape"]
    feat = shape[0]
    for layer in cfg["layers"]:
        kind = layer[0]
        if kind == "dense":
            mods.append(nn.Linear(feat, layer[1]))
            feat = layer[1]
            if layer[2]:
                mods.append(nn.ReLU())
        elif kind == "conv":
            mods.append(nn.Conv2d(feat, layer[1], layer[2], padding=layer[3]))
            feat = layer[1]
        elif kind == "relu":
            mods.append(nn.ReLU())
        elif kind == "maxpool":
            mods.append(nn.MaxPool2d(layer[1]))
        elif kind == "flatten":
            mods.append(nn.Flatten())
            with torch.no_grad():  # the flattened width, from a dummy forward
                feat = nn.Sequential(*mods)(torch.zeros(1, *shape)).shape[1]
        elif kind == "lstm":
            mods.append(LastState(shape[-1], layer[1]))
            feat = layer[1]
        elif kind == "transformer":
            feat = shape[-1]
            mods.append(nn.TransformerEncoderLayer(feat, layer[1], layer[2], dropout=0.0,
                                                   batch_first=True))
        elif kind == "mean_time":
            mods.append(MeanTime())
    return nn.Sequential(*mods)


def bench_torch(name: str, steps: int, warmup: int, threads: int | None) -> dict[str, Any]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = MODELS[name]
    x_np, y_np = _data(cfg)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    model = torch_model(name)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    rng = np.random.Generator(np.random.PCG64(1))

    def order() -> Any:
        return torch.from_numpy(rng.permutation(N_SAMPLES))

    def step(idx: Any) -> float:
        xb, yb = x[idx], y[idx]
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    rss = _peak_rss()
    times = _time_steps(step, order, cfg["batch"], warmup, steps, rss)
    return {"framework": "torch", "model": name, "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "step_ms_median": round(statistics.median(times), 4), "steps": len(times),
            "rss_increase_bytes": rss.increase, "rss_method": rss.method}


# ---------------------------------------------------------------- JAX jit
def _uniform(rng: Any, shape: tuple[int, ...], fan_in: int) -> Any:
    """PyTorch's default init of a linear layer's weight and bias: U(-1/sqrt(fan_in), ...)
    (drawn with NumPy: JAX's generator compiles a kernel per shape, seconds per model)."""
    import jax.numpy as jnp
    import numpy as np

    bound = 1 / fan_in ** 0.5
    return jnp.asarray(rng.uniform(-bound, bound, shape).astype(np.float32))


def jax_model(name: str, seed: int = 0) -> tuple[list[Any], Any]:
    """The model as (parameters, forward(params, x) -> logits) in JAX. Parameters are a list
    with one tuple of arrays per layer that has some: dense (w [in, out], b), conv (w [O, C,
    k, k], b), lstm in PyTorch's layout (w_ih [4H, F], w_hh [4H, H], b_ih, b_hh; gates i, f,
    g, o), transformer (in_proj_w [3d, d], in_proj_b, out_w [d, d], out_b, linear1_w [ff, d],
    linear1_b, linear2_w [d, ff], linear2_b, norm1 scale and shift, norm2 scale and shift)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    cfg = MODELS[name]
    rng = np.random.default_rng(seed)
    params: list[Any] = []
    ops: list[tuple] = []
    shape = cfg["shape"]
    feat = shape[0]
    hw = shape[1:]
    for layer in cfg["layers"]:
        kind = layer[0]
        if kind == "dense":
            if hw:
                feat, hw = feat * int(np.prod(hw)), ()
            params.append((_uniform(rng, (feat, layer[1]), feat),
                           _uniform(rng, (layer[1],), feat)))
            ops.append(("dense", len(params) - 1, layer[2]))
            feat = layer[1]
        elif kind == "conv":
            k, pad = layer[2], layer[3]
            fan = feat * k * k
            params.append((_uniform(rng, (layer[1], feat, k, k), fan),
                           _uniform(rng, (layer[1],), fan)))
            ops.append(("conv", len(params) - 1, pad))
            feat = layer[1]
            hw = tuple(d + 2 * pad - k + 1 for d in hw)
        elif kind == "maxpool":
            ops.append(("maxpool", layer[1]))
            hw = tuple(d // layer[1] for d in hw)
        elif kind == "lstm":
            h, f = layer[1], shape[-1]
            params.append((_uniform(rng, (4 * h, f), h), _uniform(rng, (4 * h, h), h),
                           _uniform(rng, (4 * h,), h), _uniform(rng, (4 * h,), h)))
            ops.append(("lstm", len(params) - 1))
            feat, hw = h, ()
        elif kind == "transformer":
            d, ff = shape[-1], layer[2]
            # nn.MultiheadAttention: xavier_uniform in_proj (fan_in + fan_out = 4d), zero biases
            params.append((_uniform(rng, (3 * d, d), 4 * d // 6), jnp.zeros(3 * d),
                           _uniform(rng, (d, d), d), jnp.zeros(d),
                           _uniform(rng, (ff, d), d), _uniform(rng, (ff,), d),
                           _uniform(rng, (d, ff), ff), _uniform(rng, (d,), ff),
                           jnp.ones(d), jnp.zeros(d), jnp.ones(d), jnp.zeros(d)))
            ops.append(("transformer", len(params) - 1, layer[1]))
            feat, hw = d, ()
        else:
            ops.append((kind,))

    def layer_norm(x: Any, g: Any, b: Any) -> Any:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + 1e-5) * g + b

    def lstm(p: tuple, x: Any) -> Any:
        w_ih, w_hh, b_ih, b_hh = p
        hidden = w_hh.shape[1]

        def cell(carry: tuple, x_t: Any) -> tuple:
            h, c = carry
            z = x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh
            i, f, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), None

        zeros = jnp.zeros((x.shape[0], hidden), x.dtype)
        (h, _), _ = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(x, 0, 1))
        return h

    def encoder(p: tuple, x: Any, heads: int) -> Any:
        (w_in, b_in, w_out, b_out, w1, b1, w2, b2, g1, s1, g2, s2) = p
        bsz, t, d = x.shape
        q, k, v = jnp.split(x @ w_in.T + b_in, 3, axis=-1)

        def split_heads(a: Any) -> Any:
            return a.reshape(bsz, t, heads, d // heads).transpose(0, 2, 1, 3)

        q, k, v = split_heads(q), split_heads(k), split_heads(v)
        att = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / (d // heads) ** 0.5, axis=-1)
        a = (att @ v).transpose(0, 2, 1, 3).reshape(bsz, t, d) @ w_out.T + b_out
        x = layer_norm(x + a, g1, s1)
        return layer_norm(x + jax.nn.relu(x @ w1.T + b1) @ w2.T + b2, g2, s2)

    def forward(ps: list[Any], xb: Any) -> Any:
        h = xb
        for op in ops:
            if op[0] == "dense":
                w, b = ps[op[1]]
                h = h @ w + b
                if op[2]:
                    h = jax.nn.relu(h)
            elif op[0] == "conv":
                w, b = ps[op[1]]
                h = jax.lax.conv_general_dilated(h, w, (1, 1), [(op[2], op[2])] * 2)
                h = h + b[None, :, None, None]
            elif op[0] == "relu":
                h = jax.nn.relu(h)
            elif op[0] == "maxpool":
                k = op[1]
                h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, k, k),
                                          (1, 1, k, k), "VALID")
            elif op[0] == "flatten":
                h = h.reshape(h.shape[0], -1)
            elif op[0] == "lstm":
                h = lstm(ps[op[1]], h)
            elif op[0] == "transformer":
                h = encoder(ps[op[1]], h, op[2])
            elif op[0] == "mean_time":
                h = h.mean(axis=1)
        return h

    return params, forward


def limit_jax_threads(threads: int | None) -> None:
    """XLA's CPU thread pool sized by the machine, not by OMP/OPENBLAS variables: pin this
    process to `threads` cores, and with one thread turn XLA's multi-threaded Eigen off, so
    that JAX runs with the thread count of the other columns. Call before importing jax."""
    if not threads:
        return
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cores)
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()


def bench_jax(name: str, steps: int, warmup: int, threads: int | None = None
              ) -> dict[str, Any]:
    limit_jax_threads(threads)
    import jax
    import jax.numpy as jnp
    import numpy as np

    cfg = MODELS[name]
    x_np, y_np = _data(cfg)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    params, forward = jax_model(name)

    def loss_fn(ps: list[Any], xb: Any, yb: Any) -> Any:
        logp = jax.nn.log_softmax(forward(ps, xb))
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    @jax.jit
    def train_step(ps: list[Any], bufs: list[Any], idx: Any) -> tuple:
        loss, grads = jax.value_and_grad(loss_fn)(ps, x[idx], y[idx])
        bufs = jax.tree_util.tree_map(lambda b, g: MOMENTUM * b + g, bufs, grads)
        ps = jax.tree_util.tree_map(lambda p, b: p - LR * b, ps, bufs)
        return ps, bufs, loss

    bufs = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = {"p": params, "b": bufs}
    rng = np.random.Generator(np.random.PCG64(1))

    def order() -> Any:
        return rng.permutation(N_SAMPLES)

    def step(idx: Any) -> float:
        state["p"], state["b"], loss = train_step(state["p"], state["b"], jnp.asarray(idx))
        return float(loss)

    rss = _peak_rss()
    times = _time_steps(step, order, cfg["batch"], max(warmup, 1), steps, rss)
    return {"framework": "jax", "model": name, "jax": jax.__version__,
            "threads": threads or len(os.sched_getaffinity(0)),
            "step_ms_median": round(statistics.median(times), 4), "steps": len(times),
            "rss_increase_bytes": rss.increase, "rss_method": rss.method}


def main(argv: list[str] | None = None) -> int:
    global N_SAMPLES, CLOCK
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--framework", choices=("torch", "jax"), default="torch")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads; for JAX, the cores it may use")
    ap.add_argument("--n", type=int, default=N_SAMPLES, help="number of random samples")
    ap.add_argument("--batch", type=int, default=None, help="instead of the spec's batch")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--cpu", action="store_true",
                    help="time this process's CPU time instead of wall time (use with 1 thread)")
    args = ap.parse_args(argv)
    N_SAMPLES = args.n
    if args.batch:
        MODELS[args.model]["batch"] = args.batch
    if args.cpu:
        CLOCK = time.process_time
    if args.framework == "torch":
        data = bench_torch(args.model, args.steps, args.warmup, args.threads)
    else:
        data = bench_jax(args.model, args.steps, args.warmup, args.threads)
    print(json.dumps(data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
