"""Long Expressive Memory, LEM (Rusch, Mishra, Erichson and Mahoney, ICLR 2022): a
two-timescale ODE discretised with learned, input- and state-dependent time steps,
which act as gates.

Read against the authors' code (tk-rusch/LEM at 833da6b: ``src/*/network.py``
``LEMCell``, identical in every task; ``src/adding/adding_task.py`` and the other task
scripts' defaults; ``LEM_cuda/README.md`` and ``lem_cuda_kernel.cu``, the fused CUDA
form) and ``../shared/CELLS.md`` section 6. The paper's PDF was not read here; its
equations as a third party quotes them (MartinuzziFrancesco/RecurrentLayers.jl,
``src/cells/lem_cell.jl``, whose symbols ``W_1, W_2, ...`` we use) have the code's form.

Where ours differs, and what we follow:

- Layout. The code has ``inp2hid = Linear(I, 4H)`` with chunks ``(dt1, dt2, z, y)``,
  ``hid2hid = Linear(H, 3H)`` with chunks ``(dt1, dt2, y)`` and ``transform_z =
  Linear(H, H)``. We keep its weights as they are, in its chunk order, so trained
  weights port one-to-one (``w_x = inp2hid.weight^T``, ``w_h = hid2hid.weight^T``,
  ``w_y = transform_z.weight^T``). Its chunk names are not the paper's: ``dt1`` is the
  y-update's step (the paper's ``dtbar_n``: ``W_2, V_2, b_2``), ``dt2`` the z-update's
  (``dt_n``: ``W_1, V_1, b_1``); the input chunk ``"z"`` feeds the y-update (``V_y``,
  added to ``transform_z(z_n)``) and the chunks ``"y"`` feed the z-update (``V_z``,
  ``W_z``).
- Biases. Every block has two in the code (``inp2hid``'s plus ``hid2hid``'s or
  ``transform_z``'s); they only ever appear summed, so we keep one ``b [4H]``
  (``inp2hid.bias + [hid2hid.bias[:2H], transform_z.bias, hid2hid.bias[2H:]]``),
  initialised as that sum is: two ``U(+-1/sqrt(H))`` draws added (the CUDA extension
  has one bias per block, one draw).
- Default ``dt = 0.0242``: the authors' adding-problem script (its default ``T =
  10000``, 128 units; logs end at test MSE 2.4e-5), their setting for the longest
  sequences and the lab's training task: at most ``dt`` of the state is renewed a step,
  so at initialisation (gates near 1/2) a memory of some 80 steps. Their other
  settings: sMNIST 0.21, psMNIST 0.31 (128 units); the ``LEM`` module's own default is
  1.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells.base import (
    Array,
    Cell,
    Entry,
    check_input,
    check_positive_int,
    compute_dtype,
    initialize,
    resolve_batch_shape,
    scale_fields,
)

# The authors' adding-problem script default (src/adding/adding_task.py).
DT = 0.0242


class LEMParams(NamedTuple):
    w_x: Array  # [I, 4H], the code's inp2hid chunks (dt1, dt2, z, y)
    w_h: Array  # [H, 3H], the code's hid2hid chunks (dt1, dt2, y), reading y_{n-1}
    w_y: Array  # [H, H], the code's transform_z, reading the new z_n
    b: Array  # [4H], chunks (dt1, dt2, z, y): the code's two biases per block, summed


class LEMCarry(NamedTuple):
    y: Array  # [*batch, H]: the fast state, the cell's output
    z: Array  # [*batch, H]: the slow state


def lem(hidden_size: int, *, dt: float = DT, dtype=None, param_dtype=jnp.float32) -> Cell:
    """Long Expressive Memory: two states, each a leaky update whose per-unit time step
    is a sigmoid gate of the input and the fast state.

    Equations (one step, row-vector convention, ``x`` the input; blocks of
    ``k = x W_x + b`` and ``r = y W_h`` named by the code's chunks)::

        dt_z = dt * sigmoid(k_dt2 + r_dt2)                 the paper's dt_n
        dt_y = dt * sigmoid(k_dt1 + r_dt1)                 the paper's dtbar_n
        z' = (1 - dt_z) * z + dt_z * tanh(k_y + r_y)        (V_z x + W_z y + b_z)
        y' = (1 - dt_y) * y + dt_y * tanh(z' W_y + k_z)     (W_y z' + V_y x + b_y)
        y_out = y'

    ``y'`` reads the *new* ``z'``. With ``dt <= 1`` each update is a convex combination
    of the old state and a ``tanh``, so (*derived*) ``|z'| <= max(|z|, 1)`` and
    ``|y'| <= max(|y|, 1)`` per unit: states that start in ``[-1, 1]`` stay there.

    Initialisation (the authors' ``reset_parameters``): every weight
    ``U(-1/sqrt(H), 1/sqrt(H))``, the input weights too (the bound reads ``H``, not the
    fan-in); each bias the sum of two such draws (the code's two biases per block).
    Carry starts at zeros.

    Args:
      hidden_size: ``H``.
      dt: the largest time step, in ``(0, 1]`` (the gates scale it by a sigmoid).
      dtype: computation dtype; ``None`` promotes inputs and params.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell` named ``"lem"``. Params: ``LEMParams(w_x [I, 4H], w_h [H, 3H],
      w_y [H, H], b [4H])``. Carry: ``LEMCarry(y, z)``, each ``[*batch, H]``; zeros from
      ``initial_carry``. Output: the fast state ``y'`` (``output(carry) = carry.y``, what
      the authors' classifier reads). Any leading batch dims.

      Declares: gated, its gates ``{"dt_z", "dt_y"}``, the two learned time steps as
      the update uses them (each in ``(0, dt)``: ``1 - dt_z`` is the z-state's
      retention, as a forget gate's); recurrent scale ``g``: ``W_h -> g W_h`` and
      ``W_y -> g W_y``, every weight that reads a state (the gates' blocks included, as
      for the LSTM and GRU), biases and ``dt`` unchanged. No fused backward: the step
      reads its states in two matmuls, ``y W_h`` and then ``z' W_y`` on the new ``z'``,
      and :class:`~rnnjax.cells.base.FusedRecurrence` fuses exactly one,
      ``output(carry) @ W``; declaring ``W_y`` among its ``reads`` would stack an
      ``[H, H]`` gradient per step, more than JAX's own backward keeps.
    """
    H = check_positive_int("hidden_size", hidden_size)
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not 0.0 < float(dt) <= 1.0:
        raise ValueError(
            f"dt must be a number in (0, 1] (the largest time step; above 1 the update "
            f"is no longer a convex combination); got {dt!r}."
        )
    dt = float(dt)
    _dtype = dtype

    def init(key: Array, input_size: int) -> LEMParams:
        input_size = check_positive_int("input_size", input_size)
        bound = 1.0 / math.sqrt(H)

        def uniform(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, -bound, bound)

        k = jax.random.split(key, 5)
        wide = jnp.promote_types(param_dtype, jnp.float32)  # the two biases summed unrounded
        return LEMParams(
            w_x=initialize(uniform, k[0], (input_size, 4 * H), param_dtype),
            w_h=initialize(uniform, k[1], (H, 3 * H), param_dtype),
            w_y=initialize(uniform, k[2], (H, H), param_dtype),
            b=(uniform(k[3], (4 * H,), wide) + uniform(k[4], (4 * H,), wide)).astype(param_dtype),
        )

    def initial_carry(batch_shape=(), dtype=None) -> LEMCarry:
        cd = dtype or _dtype or param_dtype
        zeros = jnp.zeros(resolve_batch_shape(batch_shape) + (H,), cd)
        return LEMCarry(y=zeros, z=zeros)

    def project(params: LEMParams, xs: Array) -> tuple[Array, ...]:
        check_input(xs, params.w_x.shape[0], "xs")
        cd = compute_dtype(_dtype, xs, params.w_x)
        k = xs.astype(cd) @ params.w_x.astype(cd) + params.b.astype(cd)
        return tuple(jnp.split(k, 4, axis=-1))  # (dt1, dt2, z, y)

    def steps_and_target(params: LEMParams, carry: LEMCarry, xp):
        """The two time steps and the z-update's target, from ``y_{n-1}``."""
        k_dt1, k_dt2, _, k_y = xp
        cd = compute_dtype(_dtype, k_dt1, params.w_h)
        r_dt1, r_dt2, r_y = jnp.split(carry.y.astype(cd) @ params.w_h.astype(cd), 3, axis=-1)
        dt_y = dt * jax.nn.sigmoid(k_dt1 + r_dt1)
        dt_z = dt * jax.nn.sigmoid(k_dt2 + r_dt2)
        return dt_z, dt_y, jnp.tanh(k_y + r_y)

    def gates(params: LEMParams, carry: LEMCarry, xp) -> dict[str, Array]:
        dt_z, dt_y, _ = steps_and_target(params, carry, xp)
        return {"dt_z": dt_z, "dt_y": dt_y}

    def recur(params: LEMParams, carry: LEMCarry, xp) -> tuple[LEMCarry, Array]:
        dt_z, dt_y, target_z = steps_and_target(params, carry, xp)
        cd = dt_z.dtype
        y, z = carry.y.astype(cd), carry.z.astype(cd)
        z_new = (1.0 - dt_z) * z + dt_z * target_z
        y_new = (1.0 - dt_y) * y + dt_y * jnp.tanh(z_new @ params.w_y.astype(cd) + xp[2])
        new = LEMCarry(y=y_new.astype(carry.y.dtype), z=z_new.astype(carry.z.dtype))
        return new, new.y

    return Cell(
        name="lem",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=lambda carry: carry.y,
        gated=True,
        gates=gates,
        recurrent_scale=scale_fields("w_h", "w_y"),
    )


# ------------------------------------------------------------------ the catalogue


def reference(xp, params, carry, x, dt: float = DT):
    """One step of the paper's equations (as quoted; see the module docstring) in the
    array namespace ``xp``, the weights taken by role out of the code's chunk layout::

        dt_n    = dt sigmoid(W_1 y_{n-1} + V_1 x_n + b_1)
        dtbar_n = dt sigmoid(W_2 y_{n-1} + V_2 x_n + b_2)
        z_n = (1 - dt_n) z_{n-1} + dt_n tanh(W_z y_{n-1} + V_z x_n + b_z)
        y_n = (1 - dtbar_n) y_{n-1} + dtbar_n tanh(W_y z_n + V_y x_n + b_y)
    """
    w_x, w_h, w_y, b = params
    y, z = carry
    H = y.shape[-1]

    def block(a, j):
        return a[..., j * H : (j + 1) * H]

    # The code's chunks: inputs (dt1, dt2, z, y), hidden (dt1, dt2, y).
    V_2, V_1, V_y, V_z = (block(w_x, j) for j in range(4))
    b_2, b_1, b_y, b_z = (block(b, j) for j in range(4))
    W_2, W_1, W_z = (block(w_h, j) for j in range(3))
    sigmoid = lambda a: 1.0 / (1.0 + xp.exp(-a))  # noqa: E731
    dt_n = dt * sigmoid(y @ W_1 + x @ V_1 + b_1)
    dtbar_n = dt * sigmoid(y @ W_2 + x @ V_2 + b_2)
    z_n = (1.0 - dt_n) * z + dt_n * xp.tanh(y @ W_z + x @ V_z + b_z)
    y_n = (1.0 - dtbar_n) * y + dtbar_n * xp.tanh(z_n @ w_y + x @ V_y + b_y)
    return LEMCarry(y_n, z_n), y_n


ENTRY = Entry(
    name="lem",
    make=lem,
    reference=reference,
    # x W_x [I, 4H], y W_h [H, 3H], z' W_y [H, H].
    matmul_flops=lambda i, h: 2 * h * (4 * i + 4 * h),
    family="bounded",
    summary="LEM: two states with learned multiscale time steps (Rusch et al. 2022)",
)
