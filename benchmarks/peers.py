"""The backends ``benchmarks/run.py`` times: rnnjax and what a researcher would use instead.

Every backend computes the same function from the same weights, given in PyTorch's
layout (``weight_ih [G*H, I]``, ``weight_hh [G*H, H]``, ``bias_ih``, ``bias_hh [G*H]``;
gate order (i, f, g, o) for the LSTM, (r, z, n) for the GRU):

    ys = cell run over x [B, T, I] from a zero state       (inference)
    L = 0.5 * mean((ys - y)^2), dL/d(every weight)           (training step)

Each backend maps the weights into its own parameters and its gradients back, so the
correctness gate compares outputs, losses and gradients in one layout. A backend whose
library is missing, or which has no such cell, raises :class:`Unavailable` with the
reason, and the benchmark reports it as skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import os
import time
from collections.abc import Callable

import numpy as np

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class Unavailable(Exception):
    """The backend cannot run here (library missing, no such cell, needs a GPU)."""


@dataclasses.dataclass
class Impl:
    """One backend, built for one cell, configuration and set of weights.

    ``infer()`` / ``train()`` run one forward / one training step and wait for it to
    finish; ``result()`` returns ``(ys, loss, grads)`` as NumPy with the grads in the
    PyTorch layout; ``memory`` maps a mode to the bytes XLA's compiled program
    allocates (temporaries + arguments + outputs), where the backend is XLA's.
    ``first_call_s`` holds, per mode, the seconds of the very first call (tracing and
    compiling included), whichever of the gate or the timing made it.
    """

    infer: Callable[[], None]
    train: Callable[[], None]
    result: Callable[[], tuple[np.ndarray, float, dict[str, np.ndarray]]]
    memory: Callable[[str], int | None] = lambda mode: None
    first_call_s: dict[str, float] = dataclasses.field(default_factory=dict)


def _first_timed(first: dict, mode: str, fn, block=None):
    """``fn`` that records the duration of its first call in ``first[mode]``
    (``block(out)`` waits for the result; JAX's ``block_until_ready`` by default)."""

    def call(*args):
        if mode in first:
            return fn(*args)
        t0 = time.perf_counter()
        out = fn(*args)
        (block or _jax_block)(out)
        first[mode] = time.perf_counter() - t0
        return out

    return call


def _jax_block(out):
    import jax

    jax.block_until_ready(out)


def weights(cell: str, input_size: int, hidden: int, seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch's default initialisation, U(-1/sqrt(H), 1/sqrt(H)), from ``seed``."""
    g, bound = GATES[cell], 1.0 / np.sqrt(hidden)
    rng = np.random.default_rng(seed)
    shapes = {
        "weight_ih": (g * hidden, input_size),
        "weight_hh": (g * hidden, hidden),
        "bias_ih": (g * hidden,),
        "bias_hh": (g * hidden,),
    }
    return {k: rng.uniform(-bound, bound, s).astype(np.float32) for k, s in shapes.items()}


def reference_step(xp, cell: str, w: dict, carry: tuple, x_t):
    """One step of ``cell`` in PyTorch's layout and gate order, in the array namespace
    ``xp`` (NumPy for the outputs, ``jax.numpy`` for gradients): the gate's yardstick,
    written here apart from every library timed."""
    h, c = carry
    sig = lambda a: 1.0 / (1.0 + xp.exp(-a))  # noqa: E731
    a = x_t @ w["weight_ih"].T + w["bias_ih"]
    b = h @ w["weight_hh"].T + w["bias_hh"]
    if cell == "lstm":
        i, f, g, o = xp.split(a + b, 4, axis=-1)
        c = sig(f) * c + sig(i) * xp.tanh(g)
        h = sig(o) * xp.tanh(c)
    elif cell == "gru":
        (ar, az, an), (br, bz, bn) = xp.split(a, 3, -1), xp.split(b, 3, -1)
        r, z = sig(ar + br), sig(az + bz)
        n = xp.tanh(an + r * bn)
        h = (1 - z) * n + z * h
    else:
        h = xp.tanh(a + b)
    return h, c


def reference(cell: str, w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The outputs in float64 NumPy, one step at a time."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    x = x.astype(np.float64)
    batch, steps, _ = x.shape
    hidden = w["weight_hh"].shape[1]
    carry = (np.zeros((batch, hidden)), np.zeros((batch, hidden)))
    ys = np.empty((batch, steps, hidden))
    for t in range(steps):
        carry = reference_step(np, cell, w, carry, x[:, t])
        ys[:, t] = carry[0]
    return ys


def reference_grads(cell: str, w: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
    """The loss's gradients in float64: JAX's autodiff of :func:`reference_step` under
    ``lax.scan``, for runs without PyTorch (whose float64 module is the usual source)."""
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        w64 = {k: jnp.asarray(v, jnp.float64) for k, v in w.items()}
        xs = jnp.asarray(x, jnp.float64).swapaxes(0, 1)
        target = jnp.asarray(y, jnp.float64)
        zeros = jnp.zeros((x.shape[0], w["weight_hh"].shape[1]), jnp.float64)

        def loss(w):
            def body(carry, x_t):
                carry = reference_step(jnp, cell, w, carry, x_t)
                return carry, carry[0]

            _, ys = jax.lax.scan(body, (zeros, zeros), xs)
            return 0.5 * jnp.mean((ys.swapaxes(0, 1) - target) ** 2)

        grads = jax.jit(jax.grad(loss))(w64)
        return {k: np.asarray(grads[k]) for k in NAMES}


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise Unavailable(f"{module} is not installed ({extra}): {err}") from None


# --------------------------------------------------------------------------- JAX


def _jax_impl(forward, params, x, y, to_torch, *, jit=None, value_and_grad=None, mesh=None) -> Impl:
    """Jit-compiled inference and training step for a JAX ``forward(params, x)``; with
    a ``mesh``, the batch split over its devices and the calls made under it (what
    ``rnnjax.distributed.parallel_step`` does)."""
    import jax
    import jax.numpy as jnp

    jit = jit or jax.jit
    value_and_grad = value_and_grad or jax.value_and_grad
    x, y = jnp.asarray(x), jnp.asarray(y)
    if mesh is not None:
        from rnnjax import distributed

        params = distributed.replicate(params, mesh)
        x, y = distributed.shard(x, mesh, 0), distributed.shard(y, mesh, 0)
    under = (lambda: jax.set_mesh(mesh)) if mesh is not None else contextlib.nullcontext

    def loss(p, x, y):
        return 0.5 * jnp.mean((forward(p, x) - y) ** 2)

    first = {}
    infer_jit, train_jit = jit(forward), jit(value_and_grad(loss))

    def placed(fn):
        def call(*args):
            with under():
                return fn(*args)

        return call

    infer_fn = _first_timed(first, "infer", placed(infer_jit))
    train_fn = _first_timed(first, "train", placed(train_jit))
    compiled = {}

    def memory(mode):
        if mode not in compiled:
            fn = infer_jit if mode == "infer" else train_jit
            args = (params, x) if mode == "infer" else (params, x, y)
            try:
                with under():
                    m = fn.lower(*args).compile().memory_analysis()
                compiled[mode] = int(
                    m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
                )
            except Exception:  # noqa: BLE001  (filter_jit, or a backend without analysis)
                compiled[mode] = None
        return compiled[mode]

    def result():
        value, grads = train_fn(params, x, y)
        return np.asarray(infer_fn(params, x)), float(value), to_torch(grads)

    return Impl(
        infer=lambda: jax.block_until_ready(infer_fn(params, x)),
        train=lambda: jax.block_until_ready(train_fn(params, x, y)),
        result=result,
        memory=memory,
        first_call_s=first,
    )


@contextlib.contextmanager
def _env(name: str, value: str | None):
    """``os.environ[name] = value`` inside the block (nothing if ``value`` is None)."""
    if value is None:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _split(a: np.ndarray, g: int) -> list[np.ndarray]:
    return np.split(np.asarray(a), g, axis=0)


def rnnjax_impl(
    cell: str,
    w,
    x,
    y,
    vjp: str = "auto",
    remat=None,
    devices=False,
    hoist: str | None = None,
    unroll: int = 1,
) -> Impl:
    """``rnnjax.scan`` over ``rnnjax.lstm`` / ``gru`` / ``elman`` (batch-major input),
    with the backward pass ``vjp`` names (``"fused"``: the cuDNN-style custom VJP),
    ``remat`` (``True``: rematerialised over chunks of sqrt(T) steps), the input
    projection's placement ``hoist`` forces (``"1"``: one matmul before the loop, ``"0"``:
    per step inside it; ``None``: ``rnnjax.scan``'s choice), ``lax.scan``'s ``unroll``
    (both loops of the fused backward) and, with
    ``devices``, the batch split over every device JAX sees (on a CPU, host devices
    forced with ``--host_devices``: XLA runs a small per-step matmul on one core, so a
    batch split is how a loop uses several)."""
    import jax
    import jax.numpy as jnp

    import rnnjax
    from rnnjax import distributed

    mesh = None
    if devices:
        n = len(jax.devices())
        if n < 2:
            raise Unavailable(
                "one device: force host devices with --host_devices N (CPU), or run "
                "where JAX sees several"
            )
        if x.shape[0] % n:
            raise Unavailable(f"batch {x.shape[0]} does not split over {n} devices")
        mesh = distributed.data_mesh()

    hidden = w["weight_hh"].shape[1]
    if cell == "gru":
        core = rnnjax.gru(hidden)
        params = rnnjax.GRUParams(
            jnp.asarray(w["weight_ih"].T),
            jnp.asarray(w["weight_hh"].T),
            jnp.asarray(w["bias_ih"]),
            jnp.asarray(w["bias_hh"]),
        )
    else:
        core = rnnjax.lstm(hidden) if cell == "lstm" else rnnjax.elman(hidden)
        kind = rnnjax.LSTMParams if cell == "lstm" else rnnjax.ElmanParams
        params = kind(
            jnp.asarray(w["weight_ih"].T),
            jnp.asarray(w["weight_hh"].T),
            jnp.asarray(w["bias_ih"] + w["bias_hh"]),
        )

    def forward(p, x):
        # Runs only while jit traces: RNNJAX_HOIST, read then, is set for the trace.
        with _env("RNNJAX_HOIST", hoist):
            return rnnjax.scan(core, p, x, vjp=vjp, remat=remat, unroll=unroll)[1]

    def to_torch(g):
        out = {"weight_ih": np.asarray(g.w_x).T, "weight_hh": np.asarray(g.w_h).T}
        if cell == "gru":
            out.update(bias_ih=np.asarray(g.b_x), bias_hh=np.asarray(g.b_h))
        else:
            out.update(bias_ih=np.asarray(g.b), bias_hh=np.asarray(g.b))
        return out

    return _jax_impl(forward, params, x, y, to_torch, mesh=mesh)


FLAX_CELLS = {
    "lstm": ("OptimizedLSTMCell", "LSTMCell"),
    "gru": ("GRUCell",),
    "rnn": ("SimpleCell",),
}
_FLAX_GATES = {"lstm": "ifgo", "gru": ("r", "z", "n"), "rnn": ("",)}


def flax_impl(cell: str, w, x, y, variant: str) -> Impl:
    """Flax linen ``nn.RNN`` over one of its cells (``variant``)."""
    import jax
    import jax.numpy as jnp

    nn = _require("flax.linen", "pip install flax")
    hidden = w["weight_hh"].shape[1]
    module = nn.RNN(getattr(nn, variant)(features=hidden))
    init = module.init(jax.random.key(0), jnp.asarray(x[:1, :2]))["params"]
    gates = _FLAX_GATES[cell]
    wi, wh = _split(w["weight_ih"], len(gates)), _split(w["weight_hh"], len(gates))
    bi, bh = _split(w["bias_ih"], len(gates)), _split(w["bias_hh"], len(gates))
    p = jax.tree.map(np.asarray, jax.device_get(init))["cell"]
    for k, g in enumerate(gates):
        p[f"i{g}"]["kernel"] = wi[k].T
        p[f"h{g}"]["kernel"] = wh[k].T
        if cell == "lstm":  # one bias, on the hidden side
            p[f"h{g}"]["bias"] = bi[k] + bh[k]
        elif cell == "rnn":  # one bias, on the input side
            p[f"i{g}"]["bias"] = bi[k] + bh[k]
        elif g == "n":  # b_hn sits inside r * (.), as in PyTorch
            p["in"]["bias"], p["hn"]["bias"] = bi[k], bh[k]
        else:
            p[f"i{g}"]["bias"] = bi[k] + bh[k]
    shapes = jax.tree.map(np.shape, init["cell"])
    if jax.tree.map(np.shape, p) != shapes:
        raise AssertionError(f"Flax {variant} parameters moved: expected {shapes}")
    params = {"cell": jax.tree.map(jnp.asarray, p)}

    def forward(params, x):
        return module.apply({"params": params}, x)

    def to_torch(grads):
        g = jax.tree.map(np.asarray, grads)["cell"]
        out = {
            "weight_ih": np.concatenate([g[f"i{c}"]["kernel"].T for c in gates]),
            "weight_hh": np.concatenate([g[f"h{c}"]["kernel"].T for c in gates]),
        }
        if cell == "lstm":
            b = np.concatenate([g[f"h{c}"]["bias"] for c in gates])
            out.update(bias_ih=b, bias_hh=b)
        elif cell == "rnn":
            out.update(bias_ih=g["i"]["bias"], bias_hh=g["i"]["bias"])
        else:
            out["bias_ih"] = np.concatenate([g[f"i{c}"]["bias"] for c in gates])
            out["bias_hh"] = np.concatenate([g["ir"]["bias"], g["iz"]["bias"], g["hn"]["bias"]])
        return out

    return _jax_impl(forward, params, x, y, to_torch)


def equinox_impl(cell: str, w, x, y) -> Impl:
    """Equinox ``LSTMCell`` / ``GRUCell`` under ``lax.scan``, vmapped over the batch (as
    its documentation shows), with ``eqx.filter_jit`` and ``filter_value_and_grad``."""
    import jax
    import jax.numpy as jnp

    eqx = _require("equinox", "pip install rnnjax[bench]")
    if cell == "rnn":
        raise Unavailable("Equinox has no Elman (simple RNN) cell")
    hidden, inputs = w["weight_hh"].shape[1], w["weight_ih"].shape[1]
    key = jax.random.key(0)
    if cell == "lstm":
        module = eqx.nn.LSTMCell(inputs, hidden, key=key)
        module = eqx.tree_at(
            lambda m: (m.weight_ih, m.weight_hh, m.bias),
            module,
            tuple(map(jnp.asarray, (w["weight_ih"], w["weight_hh"], w["bias_ih"] + w["bias_hh"]))),
        )
    else:
        module = eqx.nn.GRUCell(inputs, hidden, key=key)
        bias = w["bias_ih"] + np.concatenate([w["bias_hh"][: 2 * hidden], np.zeros(hidden)])
        module = eqx.tree_at(
            lambda m: (m.weight_ih, m.weight_hh, m.bias, m.bias_n),
            module,
            tuple(
                map(
                    jnp.asarray,
                    (w["weight_ih"], w["weight_hh"], bias.astype(np.float32),
                     w["bias_hh"][2 * hidden :]),
                )
            ),
        )  # fmt: skip

    def one_sequence(m, xs):
        zeros = jnp.zeros(hidden, xs.dtype)
        init = (zeros, zeros) if cell == "lstm" else zeros

        def step(state, x_t):
            state = m(x_t, state)
            return state, state[0] if cell == "lstm" else state

        return jax.lax.scan(step, init, xs)[1]

    def forward(m, x):
        return jax.vmap(one_sequence, in_axes=(None, 0))(m, x)

    def to_torch(g):
        out = {"weight_ih": np.asarray(g.weight_ih), "weight_hh": np.asarray(g.weight_hh)}
        b = np.asarray(g.bias)
        if cell == "lstm":
            out.update(bias_ih=b, bias_hh=b)
        else:
            out.update(bias_ih=b, bias_hh=np.concatenate([b[: 2 * hidden], np.asarray(g.bias_n)]))
        return out

    return _jax_impl(
        forward,
        module,
        x,
        y,
        to_torch,
        jit=eqx.filter_jit,
        value_and_grad=eqx.filter_value_and_grad,
    )


def cudnn_impl(cell: str, w, x, y) -> Impl:
    """``jax.experimental.rnn``: JAX's binding of the cuDNN LSTM (GPU only)."""
    import jax

    if cell != "lstm":
        raise Unavailable("jax.experimental.rnn has only the LSTM")
    if jax.default_backend() != "gpu":
        raise Unavailable("jax.experimental.rnn calls cuDNN: it needs an NVIDIA GPU")
    import jax.numpy as jnp
    from jax.experimental import rnn

    hidden, inputs = w["weight_hh"].shape[1], w["weight_ih"].shape[1]
    batch, steps = x.shape[0], x.shape[1]
    # cuDNN's flat weight vector: W_ih, W_hh, then b_ih, b_hh (one layer, one direction).
    flat = jnp.asarray(np.concatenate([w[k].reshape(-1) for k in NAMES]))
    expected = rnn.get_num_params_in_lstm(inputs, hidden, 1, False)
    if flat.size != expected:
        raise AssertionError(f"cuDNN LSTM expects {expected} weights, packed {flat.size}")
    lengths = jnp.full((batch,), steps, jnp.int32)
    zeros = jnp.zeros((1, batch, hidden), jnp.float32)

    def forward(p, x):
        # precision=None: cuDNN follows jax_default_matmul_precision, which
        # ``benchmarks/run.py --precision`` sets (float32 "highest" turns TF32 off).
        ys, _, _ = rnn.lstm(x, zeros, zeros, p, lengths, inputs, hidden, 1, 0.0, False)
        return ys

    def to_torch(g):
        w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(g, inputs, hidden, 1, False)
        return {
            "weight_ih": np.asarray(w_ih[0]),
            "weight_hh": np.asarray(w_hh[0]),
            "bias_ih": np.asarray(b_ih[0]),
            "bias_hh": np.asarray(b_hh[0]),
        }

    return _jax_impl(forward, flat, x, y, to_torch)


# ------------------------------------------------------------------------- PyTorch


def torch_impl(cell: str, w, x, y) -> Impl:
    """``torch.nn.LSTM`` / ``GRU`` / ``RNN`` (batch_first): oneDNN on a CPU, cuDNN on a
    GPU (chosen when JAX runs on a GPU and torch sees CUDA)."""
    torch = _require("torch", "pip install rnnjax[torch]")
    import jax

    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    hidden, inputs = w["weight_hh"].shape[1], w["weight_ih"].shape[1]
    module = cls(inputs, hidden, batch_first=True).to(device)
    with torch.no_grad():
        for k in NAMES:
            getattr(module, f"{k}_l0").copy_(torch.from_numpy(w[k]))
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    yt = torch.from_numpy(np.ascontiguousarray(y)).to(device)
    sync = torch.cuda.synchronize if gpu else (lambda: None)

    def infer():
        with torch.inference_mode():
            module(xt)
        sync()

    first = {}

    def step_once():
        module.zero_grad(set_to_none=True)
        ys, _ = module(xt)
        loss = 0.5 * ((ys - yt) ** 2).mean()
        loss.backward()
        return ys, loss

    step = _first_timed(first, "train", step_once, block=lambda out: sync())

    def train():
        step()
        sync()

    def result():
        ys, loss = step()
        grads = {k: getattr(module, f"{k}_l0").grad.cpu().numpy() for k in NAMES}
        return ys.detach().cpu().numpy(), float(loss.detach()), grads

    return Impl(infer=infer, train=train, result=result, first_call_s=first)


def torch_info() -> dict:
    try:
        import torch
    except ImportError:
        return {"torch": None}
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
    }


BACKENDS = ("rnnjax", "flax", "equinox", "torch", "cudnn")
# Timed only when named in --backends: rnnjax's other code paths, to measure them
# against its default in the same run. They are rnnjax, not peers: the targets and the
# "best peer" leave them out (:func:`is_ours`).
VARIANTS = (
    "rnnjax-autodiff",
    "rnnjax-fused",
    "rnnjax-remat",
    "rnnjax-hoisted",
    "rnnjax-in-loop",
    "rnnjax-devices",
    "rnnjax-unroll",
)
UNROLL = 8  # the rnnjax-unroll variant's: for a GPU, where each loop step costs launches


def is_ours(name: str) -> bool:
    """Whether a backend name is rnnjax itself or one of its variants."""
    return name == "rnnjax" or name.startswith("rnnjax ")


def build(backend: str, cell: str, w, x, y) -> dict[str, Impl | Exception]:
    """Every variant of ``backend`` for ``cell``: ``{name: Impl}``, or in place of an
    Impl the exception building it raised: :class:`Unavailable` (the run reports it as
    skipped) or any other (a broken backend: the run reports it as failing the gate)."""
    if backend == "flax":
        makers = {f"flax/{v}": functools.partial(flax_impl, variant=v) for v in FLAX_CELLS[cell]}
    else:
        make = {
            "rnnjax": rnnjax_impl,
            "equinox": equinox_impl,
            "torch": torch_impl,
            "cudnn": cudnn_impl,
            "rnnjax-autodiff": functools.partial(rnnjax_impl, vjp="autodiff"),
            "rnnjax-fused": functools.partial(rnnjax_impl, vjp="fused"),
            "rnnjax-remat": functools.partial(rnnjax_impl, remat=True),
            "rnnjax-hoisted": functools.partial(rnnjax_impl, hoist="1"),
            "rnnjax-in-loop": functools.partial(rnnjax_impl, hoist="0"),
            "rnnjax-devices": functools.partial(rnnjax_impl, devices=True),
            "rnnjax-unroll": functools.partial(rnnjax_impl, unroll=UNROLL),
        }[backend]
        name = {
            "cudnn": "jax.experimental.rnn (cuDNN)",
            "rnnjax-autodiff": "rnnjax (vjp=autodiff)",
            "rnnjax-fused": "rnnjax (vjp=fused)",
            "rnnjax-remat": "rnnjax (remat=True)",
            "rnnjax-hoisted": "rnnjax (projection before the loop)",
            "rnnjax-in-loop": "rnnjax (projection in the loop)",
            "rnnjax-devices": "rnnjax (batch over devices)",
            "rnnjax-unroll": f"rnnjax (unroll={UNROLL})",
        }.get(backend, backend)
        makers = {name: make}
    out = {}
    for name, make in makers.items():
        try:
            out[name] = make(cell, w, x, y)
        except Exception as err:  # noqa: BLE001  (reported, never dropped; see above)
            out[name] = err
    return out
