"""The backends ``benchmarks/run.py`` times: rnnjax and what a researcher would use instead.

Every backend computes the same function from the same weights:

    ys = cell run over x [B, T, I] from a zero state       (inference)
    L = 0.5 * mean((ys - y)^2), dL/d(every weight)           (training step)

The cells are the catalogue's (:mod:`rnnjax.cells`), by their canonical names. The
weights of a cell the catalogue maps to PyTorch (``Entry.torch``) are given in
PyTorch's layout (``weight_ih [G*H, I]``, ``weight_hh [G*H, H]``, ``bias_ih``,
``bias_hh [G*H]``; gate order (i, f, g, o) for the LSTM, (r, z, n) for the GRU); those
of any other cell (a user's, registered) in the cell's own params layout, keyed by
the params' field names (:func:`layout`). Each backend maps the weights into its own
parameters and its gradients back, so the correctness gate compares outputs, losses
and gradients in one layout. A backend whose library is missing, or which has no such
cell, raises :class:`Unavailable` with the reason, and the benchmark reports it as
skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

# PyTorch's weights of one layer and direction (``torch.nn.LSTM``'s ``weight_ih_l0``...).
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class Unavailable(Exception):
    """The backend cannot run here (library missing, no such cell, needs a GPU)."""


@dataclasses.dataclass
class Impl:
    """One backend, built for one cell, configuration and set of weights.

    ``infer()`` / ``train()`` run one forward / one training step and wait for it to
    finish; ``result()`` returns ``(ys, loss, grads)`` as NumPy with the grads in the
    weights' layout (:func:`layout`); ``memory`` maps a mode to the bytes XLA's compiled program
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


def _entry(cell: str):
    """The catalogue's entry for ``cell`` (imported here: ``report.py`` imports this
    module without JAX)."""
    from rnnjax import cells

    return cells.get(cell)


class Layout(NamedTuple):
    """How the benchmark lays out one cell's weights, and every backend's gradients.

    Attributes:
      torch: whether the layout is PyTorch's (:data:`NAMES`): for a cell the catalogue
        maps to PyTorch, so every peer and past runs use the same weights. Otherwise
        the cell's own params, one entry per leaf, named by its field (``"w_x"``; a
        nested field ``"a.b"``).
      names: the weights' names, in order.
      to_params: ``to_params(w) -> params``: the weights as the cell's params, in any
        array namespace (NumPy, ``jax.numpy``; differentiable).
      from_params: ``from_params(params) -> w``: params, or their gradients, in this
        layout, as NumPy.
    """

    torch: bool
    names: tuple[str, ...]
    to_params: Callable[[dict], Any]
    from_params: Callable[[Any], dict[str, np.ndarray]]


def layout(cell: str, input_size: int, hidden: int) -> Layout:
    """The benchmark's :class:`Layout` for the catalogue cell ``cell`` of these sizes."""
    entry = _entry(cell)
    if entry.torch is not None:
        mapping = entry.torch

        def from_torch_params(params) -> dict[str, np.ndarray]:
            w = mapping.to_torch(params)
            if set(w) != set(NAMES):
                raise ValueError(f"{cell}: Entry.torch.to_torch gave {sorted(w)}, not {NAMES}")
            return {k: np.asarray(w[k]) for k in NAMES}

        return Layout(True, NAMES, mapping.to_params, from_torch_params)

    import jax

    like = entry.make(hidden).init(jax.random.key(0), input_size)
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    names = tuple(jax.tree_util.keystr(path, simple=True, separator=".") for path, _ in paths)
    if len(set(names)) != len(names):
        raise ValueError(f"{cell}: the params' leaves need distinct names; got {names}")

    def to_params(w: dict):
        return jax.tree.unflatten(treedef, [w[k] for k in names])

    def from_params(params) -> dict[str, np.ndarray]:
        leaves, got = jax.tree.flatten(params)
        if got != treedef:
            raise ValueError(f"{cell}: expected params (or gradients) {treedef}; got {got}")
        return {k: np.asarray(v) for k, v in zip(names, leaves)}

    return Layout(False, names, to_params, from_params)


def weights(cell: str, input_size: int, hidden: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The weights every backend gets, float32, from ``seed``.

    A cell the catalogue maps to PyTorch: PyTorch's layout and default initialisation,
    U(-1/sqrt(H), 1/sqrt(H)), drawn in the order of :data:`NAMES` (the shapes from the
    mapping). Any other cell: ``cell.init`` in the cell's own layout, except that a
    leaf ``init`` made constant (a zero bias, a forget-gate bias of ones) gets
    U(-1/sqrt(H), 1/sqrt(H)) added, so the gate checks its gradient where it moves the
    outputs."""
    import jax

    lay = layout(cell, input_size, hidden)
    params = _entry(cell).make(hidden).init(jax.random.key(seed), input_size)
    rng, bound = np.random.default_rng(seed), 1.0 / np.sqrt(hidden)
    made = lay.from_params(params)
    if lay.torch:
        return {k: rng.uniform(-bound, bound, made[k].shape).astype(np.float32) for k in NAMES}
    w = {}
    for k in lay.names:
        v = np.asarray(made[k], np.float32)
        if v.size and np.all(v == v.flat[0]):
            v = (v + rng.uniform(-bound, bound, v.shape)).astype(np.float32)
        w[k] = v
    return w


def _zero_carry(entry, hidden: int, batch: int, zeros):
    """The cell's zero carry for ``batch`` examples, its leaves made by ``zeros(shape)``."""
    import jax

    return jax.tree.map(lambda a: zeros(a.shape), entry.make(hidden).initial_carry((batch,)))


def reference(
    cell: str, w: dict[str, np.ndarray], x: np.ndarray, hidden: int, dtype=np.float64
) -> np.ndarray:
    """The outputs in NumPy, one step at a time: the catalogue's reference
    (``Entry.reference``, the cell's equations written apart from its JAX code), in
    ``dtype`` (float64; float32 measures what float32 rounding alone does)."""
    import jax

    entry = _entry(cell)
    lay = layout(cell, x.shape[-1], hidden)
    params = lay.to_params({k: np.asarray(v, dtype) for k, v in w.items()})
    x = x.astype(dtype)
    batch, steps, _ = x.shape
    carry = _zero_carry(entry, hidden, batch, lambda s: np.zeros(s, dtype))
    ys = np.empty((batch, steps, hidden), dtype)
    for t in range(steps):
        carry, ys[:, t] = entry.reference(np, params, carry, x[:, t])
        # A reference's float64 constant (np.eye, a Python float in a NumPy op) would
        # promote a float32 run: its carry stays in dtype.
        carry = jax.tree.map(lambda a: np.asarray(a, dtype), carry)
    return ys


def reference_grads(
    cell: str, w: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, dtype=np.float64
):
    """The loss's gradients in the weights' layout: JAX's autodiff of the catalogue's
    reference step (``Entry.reference`` with ``jax.numpy``) under ``lax.scan``, in
    ``dtype`` (float64; float32 measures what float32 rounding alone does), for a
    cell PyTorch does not have or a run without PyTorch (whose float64 module is the
    usual source)."""
    import jax
    import jax.numpy as jnp

    entry = _entry(cell)
    dt = jnp.dtype(dtype)
    hidden = y.shape[-1]
    lay = layout(cell, x.shape[-1], hidden)
    with jax.enable_x64(True):
        w_dt = {k: jnp.asarray(v, dt) for k, v in w.items()}
        xs = jnp.asarray(x, dt).swapaxes(0, 1)
        target = jnp.asarray(y, dt)
        zeros = _zero_carry(entry, hidden, x.shape[0], lambda s: jnp.zeros(s, dt))

        def loss(w):
            params = lay.to_params(w)

            def body(carry, x_t):
                carry, y_t = entry.reference(jnp, params, carry, x_t)
                return jax.tree.map(lambda a: a.astype(dt), carry), y_t.astype(dt)

            _, ys = jax.lax.scan(body, zeros, xs)
            return 0.5 * jnp.mean((ys.swapaxes(0, 1) - target) ** 2)

        grads = jax.jit(jax.grad(loss))(w_dt)
        return {k: np.asarray(grads[k]) for k in lay.names}


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise Unavailable(f"{module} is not installed ({extra}): {err}") from None


# --------------------------------------------------------------------------- JAX


def _jax_impl(
    forward, params, x, y, to_layout, *, jit=None, value_and_grad=None, mesh=None
) -> Impl:
    """Jit-compiled inference and training step for a JAX ``forward(params, x)``, its
    gradients put in the weights' layout by ``to_layout``; with a ``mesh``, the batch
    split over its devices and the calls made under it (what
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
        return np.asarray(infer_fn(params, x)), float(value), to_layout(grads)

    return Impl(
        infer=lambda: jax.block_until_ready(infer_fn(params, x)),
        train=lambda: jax.block_until_ready(train_fn(params, x, y)),
        result=result,
        memory=memory,
        first_call_s=first,
    )


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
    hoist: bool | None = None,
    unroll: int | None = None,
    loop: str = "auto",
) -> Impl:
    """``rnnjax.scan`` over the catalogue's cell (batch-major input), with ``scan``'s
    plan options: the backward pass ``vjp`` names (``"fused"``: the cuDNN-style custom
    VJP), ``remat`` (``True``: rematerialised over chunks of sqrt(T) steps), the input
    projection's placement ``hoist`` (``True``: one matmul before the loop, ``False``:
    per step inside it), ``lax.scan``'s ``unroll`` (both loops of the fused backward);
    ``None`` or ``"auto"``: ``rnnjax.scan``'s own choice; ``loop="persistent"``: the
    Pallas time loop (:mod:`rnnjax.persistent`; on a GPU only: off one it runs in
    interpret mode, which is for tests). With ``devices``, the batch
    split over every device JAX sees (on a CPU, host devices forced with
    ``--host_devices``: XLA runs a small per-step matmul on one core, so a batch split
    is how a loop uses several).

    An option the cell cannot take (``vjp="fused"`` for a cell that declares no fused
    recurrence, say: ``rnnjax.plan`` refuses it) makes the variant :class:`Unavailable`."""
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

    hidden = y.shape[-1]
    core = _entry(cell).make(hidden)
    lay = layout(cell, x.shape[-1], hidden)
    params = jax.tree.map(jnp.asarray, lay.to_params(w))
    if loop == "persistent" and jax.default_backend() != "gpu":
        raise Unavailable("the persistent Pallas loop is compiled for GPUs only")
    options = {"vjp": vjp, "remat": remat, "hoist": hoist, "unroll": unroll, "loop": loop}
    chosen = {k: v for k, v in options.items() if v not in (None, "auto")}
    if chosen:
        try:
            rnnjax.plan(core, params, jnp.asarray(x), **options)
        except ValueError as err:  # its message names the option and the reason
            raise Unavailable(f"rnnjax.plan refuses it: {err}") from None

    def forward(p, x):
        return rnnjax.scan(core, p, x, **options)[1]

    return _jax_impl(forward, params, x, y, lay.from_params, mesh=mesh)


# Flax linen's cells, by the catalogue cell each computes: its variants, their gate
# names in PyTorch's order, where the cell keeps its bias ("hidden": one bias on the
# hidden side; "input": one on the input side; "gru": both of PyTorch's, with b_hn
# inside r * (.)), and the activation a SimpleCell takes.
class FlaxCells(NamedTuple):
    variants: tuple[str, ...]
    gates: tuple[str, ...]
    bias: str
    activation: str | None = None


FLAX_CELLS = {
    "lstm": FlaxCells(("OptimizedLSTMCell", "LSTMCell"), tuple("ifgo"), "hidden"),
    "gru": FlaxCells(("GRUCell",), ("r", "z", "n"), "gru"),
    "rnn_tanh": FlaxCells(("SimpleCell",), ("",), "input", "tanh"),
    "rnn_relu": FlaxCells(("SimpleCell",), ("",), "input", "relu"),
}
# Equinox's cells, by the catalogue cell each computes (Equinox has no Elman cell).
EQUINOX_CELLS = {"lstm": "LSTMCell", "gru": "GRUCell"}


def flax_impl(cell: str, w, x, y, variant: str) -> Impl:
    """Flax linen ``nn.RNN`` over one of its cells (``variant``), for the catalogue
    cells :data:`FLAX_CELLS` names."""
    import jax
    import jax.numpy as jnp

    spec = _flax_cells(cell)
    nn = _require("flax.linen", "pip install flax")
    hidden = w["weight_hh"].shape[1]
    options = {"activation_fn": getattr(nn, spec.activation)} if spec.activation else {}
    module = nn.RNN(getattr(nn, variant)(features=hidden, **options))
    init = module.init(jax.random.key(0), jnp.asarray(x[:1, :2]))["params"]
    gates = spec.gates
    wi, wh = _split(w["weight_ih"], len(gates)), _split(w["weight_hh"], len(gates))
    bi, bh = _split(w["bias_ih"], len(gates)), _split(w["bias_hh"], len(gates))
    p = jax.tree.map(np.asarray, jax.device_get(init))["cell"]
    for k, g in enumerate(gates):
        p[f"i{g}"]["kernel"] = wi[k].T
        p[f"h{g}"]["kernel"] = wh[k].T
        if spec.bias == "hidden":  # one bias, on the hidden side
            p[f"h{g}"]["bias"] = bi[k] + bh[k]
        elif spec.bias == "input":  # one bias, on the input side
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
        if spec.bias == "hidden":
            b = np.concatenate([g[f"h{c}"]["bias"] for c in gates])
            out.update(bias_ih=b, bias_hh=b)
        elif spec.bias == "input":
            out.update(bias_ih=g["i"]["bias"], bias_hh=g["i"]["bias"])
        else:
            out["bias_ih"] = np.concatenate([g[f"i{c}"]["bias"] for c in gates])
            out["bias_hh"] = np.concatenate([g["ir"]["bias"], g["iz"]["bias"], g["hn"]["bias"]])
        return out

    return _jax_impl(forward, params, x, y, to_torch)


def _flax_cells(cell: str) -> FlaxCells:
    if cell not in FLAX_CELLS:
        raise Unavailable(
            f"Flax linen has no cell for {cell} (it has cells for {', '.join(FLAX_CELLS)})"
        )
    return FLAX_CELLS[cell]


def equinox_impl(cell: str, w, x, y) -> Impl:
    """Equinox ``LSTMCell`` / ``GRUCell`` under ``lax.scan``, vmapped over the batch (as
    its documentation shows), with ``eqx.filter_jit`` and ``filter_value_and_grad``."""
    import jax
    import jax.numpy as jnp

    if cell not in EQUINOX_CELLS:
        raise Unavailable(
            f"Equinox has no {cell} cell (it has {', '.join(EQUINOX_CELLS.values())})"
        )
    eqx = _require("equinox", "pip install rnnjax[bench]")
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
    """The PyTorch module the catalogue maps ``cell`` to (``Entry.torch``: ``nn.LSTM``,
    ``nn.GRU``, ``nn.RNN`` with its options), batch_first: oneDNN on a CPU, cuDNN on a
    GPU (chosen when JAX runs on a GPU and torch sees CUDA)."""
    mapping = torch_mapping(cell)
    torch = _require("torch", "pip install rnnjax[torch]")
    import jax

    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    hidden, inputs = w["weight_hh"].shape[1], w["weight_ih"].shape[1]
    module = torch_module(torch, mapping, inputs, hidden).to(device)
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


def torch_mapping(cell: str):
    """The catalogue's PyTorch mapping of ``cell``; :class:`Unavailable` where it has none."""
    mapping = _entry(cell).torch
    if mapping is None:
        raise Unavailable(f"PyTorch has no {cell} cell (the catalogue maps none to it)")
    return mapping


def torch_module(torch, mapping, inputs: int, hidden: int):
    """One layer of ``torch.nn.<mapping.module>`` with the mapping's options."""
    cls = getattr(torch.nn, mapping.module)
    return cls(inputs, hidden, batch_first=True, **mapping.options)


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
    "rnnjax-unroll1",
    "rnnjax-persistent",
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
        try:
            variants = _flax_cells(cell).variants
        except Unavailable as why:  # no variant to name: the backend's own name
            return {"flax": why}
        makers = {f"flax/{v}": functools.partial(flax_impl, variant=v) for v in variants}
    else:
        make = {
            "rnnjax": rnnjax_impl,
            "equinox": equinox_impl,
            "torch": torch_impl,
            "cudnn": cudnn_impl,
            "rnnjax-autodiff": functools.partial(rnnjax_impl, vjp="autodiff"),
            "rnnjax-fused": functools.partial(rnnjax_impl, vjp="fused"),
            "rnnjax-remat": functools.partial(rnnjax_impl, remat=True),
            "rnnjax-hoisted": functools.partial(rnnjax_impl, hoist=True),
            "rnnjax-in-loop": functools.partial(rnnjax_impl, hoist=False),
            "rnnjax-devices": functools.partial(rnnjax_impl, devices=True),
            "rnnjax-unroll": functools.partial(rnnjax_impl, unroll=UNROLL),
            # unroll=1: the step-by-step loop, whatever the plan's default (8 on a GPU).
            "rnnjax-unroll1": functools.partial(rnnjax_impl, unroll=1),
            "rnnjax-persistent": functools.partial(rnnjax_impl, loop="persistent"),
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
            "rnnjax-unroll1": "rnnjax (unroll=1)",
            "rnnjax-persistent": "rnnjax (persistent Pallas loop)",
        }.get(backend, backend)
        makers = {name: make}
    out = {}
    for name, make in makers.items():
        try:
            out[name] = make(cell, w, x, y)
        except Exception as err:  # noqa: BLE001  (reported, never dropped; see above)
            out[name] = err
    return out
