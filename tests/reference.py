"""Float64 NumPy transcriptions of the cell equations in the docstrings.

Written from the equations, not from rnnjax's code: the second route every cell test
compares against.
"""

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


ACT = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0), "identity": lambda z: z}


def f64(tree):
    return [np.asarray(a, np.float64) for a in tree]


def elman_step(params, h, x, activation="tanh"):
    w_x, w_h, b = f64(params)
    h_new = ACT[activation](x @ w_x + h @ w_h + b)
    return h_new, h_new


def lstm_step(params, carry, x):
    w_x, w_h, b = f64(params)
    h, c = carry
    H = h.shape[-1]
    z = x @ w_x + h @ w_h + b
    i, f, g, o = (z[..., k * H : (k + 1) * H] for k in range(4))
    c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h_new = sigmoid(o) * np.tanh(c_new)
    return (h_new, c_new), h_new


def gru_step(params, h, x, reset_after=True):
    w_x, w_h, b_x, b_h = f64(params)
    H = h.shape[-1]
    blk = lambda a, k: a[..., k * H : (k + 1) * H]  # noqa: E731
    xr, xz, xn = (blk(x @ w_x + b_x, k) for k in range(3))
    r = sigmoid(xr + h @ blk(w_h, 0) + blk(b_h, 0))
    z = sigmoid(xz + h @ blk(w_h, 1) + blk(b_h, 1))
    if reset_after:
        n = np.tanh(xn + r * (h @ blk(w_h, 2) + blk(b_h, 2)))
    else:
        n = np.tanh(xn + (r * h) @ blk(w_h, 2) + blk(b_h, 2))
    h_new = (1.0 - z) * n + z * h
    return h_new, h_new


def run(step, carry, xs, lengths=None, reverse=False):
    """Python loop over batch-major xs [B, T, I], one example at a time, by hand:
    the valid prefix of each example is (reversed and) stepped, padding emits zeros."""
    B, T = xs.shape[:2]
    ys, finals = [], []
    for b in range(B):
        L = T if lengths is None else int(lengths[b])
        c = _index(carry, b)
        out = [None] * T
        order = range(L - 1, -1, -1) if reverse else range(L)
        for t in order:
            c, y = step(c, xs[b, t])
            out[t] = y
        width = np.shape(_first(c))[-1]
        ys.append(np.stack([o if o is not None else np.zeros(width) for o in out]))
        finals.append(c)
    return finals, np.stack(ys)


def _index(carry, b):
    if isinstance(carry, tuple):
        return tuple(np.asarray(c, np.float64)[b] for c in carry)
    return np.asarray(carry, np.float64)[b]


def _first(c):
    return c[0] if isinstance(c, tuple) else c
