"""How fast NumPy can run the `lstm` bench step at all, next to PyTorch eager in the same run.

    python bench/lstm_numpy_bound.py [--repeat 7] [--steps 10] [--check]

The step of `specs/bench/lstm.dl` (batch 64, T = 32, 32 features, one LSTM layer of 128, dense
128 → 10 on the last hidden state, mean cross-entropy, SGD momentum 0.9, lr 0.01) written by
hand in NumPy as tightly as its kernels allow: the input projection of every step as one
product, every array preallocated and written with out=, the four gates activated by one
tanh over [B, 4H], the backward loop writing each step's gate gradients into one stacked
array, the weight gradients as two products after it. It is what a dslrun plan of this
step could at best become with NumPy kernels, so its time over PyTorch's is the floor of
dslrun's ratio on this workload (PyTorch runs the layer through oneDNN's fused LSTM kernels,
`aten::mkldnn_rnn_layer`). `--check` compares its loss and gradients with PyTorch's in
float64 first. One BLAS thread and one PyTorch thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import timeit

if __name__ == "__main__":  # one BLAS thread (read when NumPy loads); not when imported
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

B, T, F, H, C = 64, 32, 32, 128, 10
LR, MOMENTUM = 0.01, 0.9


class NumpyLstm:
    """The bench model's parameters, momentum buffers and preallocated step arrays."""

    def __init__(self, dtype: type = np.float32, seed: int = 0) -> None:
        r = np.random.default_rng(seed)
        k = H ** -0.5
        u = lambda *s: r.uniform(-k, k, s).astype(dtype)  # noqa: E731
        self.w_ih, self.w_hh, self.b_ih, self.b_hh = u(4 * H, F), u(4 * H, H), u(4 * H), u(4 * H)
        self.w_d, self.b_d = u(C, H), u(C)
        self.params = [self.w_ih, self.w_hh, self.b_ih, self.b_hh, self.w_d, self.b_d]
        self.bufs = [np.zeros_like(p) for p in self.params]
        # σ(x) = tanh(x/2)/2 + 1/2 on gates i, f, o; tanh on g: act = tanh(z s) s + b
        self.s = np.full(4 * H, 0.5, dtype)
        self.s[2 * H:3 * H] = 1.0
        self.b = np.where(self.s == 0.5, 0.5, 0.0).astype(dtype)
        self.k = (self.s == 0.5).astype(dtype)  # 1 on the sigmoid gates
        self.a = np.empty((T, B, 4 * H), dtype)  # gate activations
        self.c = np.empty((T + 1, B, H), dtype)
        self.h = np.empty((T + 1, B, H), dtype)
        self.tc = np.empty((T, B, H), dtype)  # tanh(c)
        self.dz = np.empty((T, B, 4 * H), dtype)
        self.tmp = np.empty((B, H), dtype)
        self.tmp4 = np.empty((B, 4 * H), dtype)
        self.dc = np.empty((B, H), dtype)
        self.dh = np.empty((B, H), dtype)

    def grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """The loss and the parameters' gradients for batch (x [B, T, F], y [B])."""
        a, c, h, tc, dz, tmp, tmp4, dc, dh = (self.a, self.c, self.h, self.tc, self.dz,
                                              self.tmp, self.tmp4, self.dc, self.dh)
        xt = x.transpose(1, 0, 2).reshape(T * B, F)
        xp = (xt @ self.w_ih.T).reshape(T, B, 4 * H)
        xp += self.b_ih + self.b_hh
        w_hh_t = np.ascontiguousarray(self.w_hh.T)
        h[0] = 0
        c[0] = 0
        for t in range(T):
            z = a[t]
            np.matmul(h[t], w_hh_t, out=z)
            z += xp[t]
            z *= self.s
            np.tanh(z, out=z)
            z *= self.s
            z += self.b
            i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
            np.multiply(f, c[t], out=c[t + 1])
            np.multiply(i, g, out=tmp)
            c[t + 1] += tmp
            np.tanh(c[t + 1], out=tc[t])
            np.multiply(o, tc[t], out=h[t + 1])
        logits = h[T] @ self.w_d.T + self.b_d
        m = logits.max(axis=1, keepdims=True)
        e = np.exp(logits - m)
        p = e / e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(e.sum(axis=1)) + m[:, 0] - logits[np.arange(B), y]))
        p[np.arange(B), y] -= 1
        p /= B
        g_wd, g_bd = p.T @ h[T], p.sum(axis=0)
        np.matmul(p, self.w_d, out=dh)
        dc[...] = 0
        for t in range(T - 1, -1, -1):
            act = a[t]
            i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
            d = dz[t]
            np.multiply(dh, tc[t], out=d[:, 3 * H:])  # dL/do
            np.multiply(tc[t], tc[t], out=tmp)
            np.subtract(1, tmp, out=tmp)
            tmp *= o
            tmp *= dh
            dc += tmp  # dL/dc
            np.multiply(dc, g, out=d[:, :H])
            np.multiply(dc, c[t], out=d[:, H:2 * H])
            np.multiply(dc, i, out=d[:, 2 * H:3 * H])
            dc *= f
            # the activations' derivatives at once: a - a² on i, f, o; 1 - a² on g
            np.multiply(act, act, out=tmp4)
            np.multiply(act, self.k, out=act)  # (the activations are read no more)
            act -= tmp4
            act += 1 - self.k
            d *= act
            np.matmul(d, self.w_hh, out=dh)
        dzs = dz.reshape(T * B, 4 * H)
        g_whh = dzs.T @ h[:T].reshape(T * B, H)
        g_wih = dzs.T @ xt
        g_b = dzs.sum(axis=0)
        return loss, [g_wih, g_whh, g_b, g_b.copy(), g_wd, g_bd]

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One SGD-momentum step (PyTorch's rule); returns the loss."""
        loss, grads = self.grads(x, y)
        for p, buf, g in zip(self.params, self.bufs, grads):
            buf *= MOMENTUM
            buf += g
            p -= LR * buf
        return loss


def torch_model(np_model: NumpyLstm, dtype: object) -> tuple[object, object]:
    """PyTorch's nn.LSTM and nn.Linear with the NumPy model's weights."""
    import torch

    lstm = torch.nn.LSTM(F, H, batch_first=True).to(dtype)
    lin = torch.nn.Linear(H, C).to(dtype)
    with torch.no_grad():
        for t, v in zip([lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0,
                         lin.weight, lin.bias], np_model.params):
            t.copy_(torch.from_numpy(v))
    return lstm, lin


def check() -> None:
    """Loss and gradients equal PyTorch's in float64 (to rounding)."""
    import torch

    r = np.random.default_rng(1)
    x, y = r.standard_normal((B, T, F)), r.integers(0, C, B)
    m = NumpyLstm(np.float64)
    loss, grads = m.grads(x, y)
    lstm, lin = torch_model(m, torch.float64)
    out = lin(lstm(torch.from_numpy(x))[1][0][-1])
    tl = torch.nn.functional.cross_entropy(out, torch.from_numpy(y))
    tl.backward()
    ref = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0, lin.weight,
           lin.bias]
    worst = max(float(np.max(np.abs(g - t.grad.numpy()))) for g, t in zip(grads, ref))
    assert abs(loss - tl.item()) < 1e-12 and worst < 1e-12, (loss, tl.item(), worst)
    print(f"check: loss and gradients equal PyTorch's in float64 (largest difference {worst:.1e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed run")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.check:
        check()
    r = np.random.default_rng(0)
    x = r.standard_normal((B, T, F)).astype(np.float32)
    y = r.integers(0, C, B)
    m = NumpyLstm()
    lstm, lin = torch_model(m, torch.float32)
    opt = torch.optim.SGD([*lstm.parameters(), *lin.parameters()], lr=LR, momentum=MOMENTUM)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step() -> float:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(lstm(tx)[1][0][-1]), ty)
        loss.backward()
        opt.step()
        return loss.item()

    steps = {"numpy (hand-written)": lambda: m.step(x, y), "torch eager": torch_step}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for f in steps.values():
        for _ in range(3):
            f()
    for _ in range(args.repeat):  # interleaved, so bursts of load hit both
        for k, f in steps.items():
            times[k].append(timeit.timeit(f, number=args.steps) / args.steps * 1000)
    ref = statistics.median(times["torch eager"])
    for k, v in times.items():
        print(f"{k:22s} {statistics.median(v):8.2f} ms   / torch {statistics.median(v) / ref:.2f}")


if __name__ == "__main__":
    main()
