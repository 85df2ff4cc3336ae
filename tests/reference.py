"""A Python loop over one example at a time: the second route the driver tests take.

The cells' own float64 references are the catalogue's (``Entry.reference``, written
from each paper's equations apart from the cells' JAX code); this file drives a step
function over a batch by hand, with lengths and reverse, as the driver's docstring
defines them.
"""

import jax
import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def run(step, carry, xs, lengths=None, reverse=False):
    """Python loop over batch-major xs [B, T, I], one example at a time, by hand:
    the valid prefix of each example is (reversed and) stepped, padding emits zeros.
    ``carry`` is any pytree of [B, ...] arrays; returns (per-example final carries,
    ys [B, T, H])."""
    B, T = xs.shape[:2]
    ys, finals = [], []
    for b in range(B):
        L = T if lengths is None else int(lengths[b])
        c = jax.tree.map(lambda a: np.asarray(a, np.float64)[b], carry)
        out = [None] * T
        order = range(L - 1, -1, -1) if reverse else range(L)
        for t in order:
            c, y = step(c, xs[b, t])
            out[t] = y
        width = None
        for t in range(T):
            if out[t] is not None:
                width = np.shape(out[t])[-1]
        if width is None:  # nothing valid: the output width is the output of any step
            width = np.shape(step(c, xs[b, 0])[1])[-1]
        ys.append(np.stack([o if o is not None else np.zeros(width) for o in out]))
        finals.append(c)
    return finals, np.stack(ys)
