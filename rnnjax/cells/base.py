"""The cell contract shared by every recurrent family.

Shapes: ``I`` input features, ``H`` hidden units, ``G`` gates, ``*batch`` any number of
leading batch dimensions (possibly none), ``T`` time steps.

A cell is a :class:`Cell`: a ``NamedTuple`` of pure functions, in the style of optax's
``GradientTransformation``. Nothing here owns state; parameters and carries are
``NamedTuple`` pytrees that flow through ``jit``, ``grad``, ``vmap`` and ``lax.scan``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.checks import check_positive_int  # noqa: F401  (the cells import it from here)

Array = jax.Array
PyTree = Any
# jax.nn.initializers signature: init(key, shape, dtype) -> Array.
Initializer = Callable[[Array, tuple[int, ...], Any], Array]


class Cell(NamedTuple):
    """A recurrent cell as pure functions: a small required core and optional
    capabilities the cell declares (the driver never infers them from field names).

    The required core (a user's own cell needs no more; it runs everywhere by the
    plain paths):

    Attributes:
      name: the family name, e.g. ``"lstm"``.
      hidden_size: ``H``; the output ``y`` of a step has shape ``[*batch, H]``.
      init: ``init(key, input_size) -> params``, a NamedTuple pytree of arrays.
      initial_carry: ``initial_carry(batch_shape=(), dtype=None) -> carry`` of zeros.
      project: ``project(params, xs) -> xp``, the input part of the step for any number
        of leading dimensions (e.g. ``[T, *batch, I]``): one big matmul, run once
        before the time loop or per step inside it, as the driver's plan decides.
      recur: ``recur(params, carry, xp_t) -> (carry, y)``, the recurrent part of one
        step, reading one time slice of ``project``'s output.
      output: ``output(carry) -> y``, the output a carry stands for (``h``); the
        driver uses it when a diagnostic perturbs the carry.

    Declared capabilities (each optional; without it the driver takes the plain path):

    Attributes:
      gated: whether the cell is gated (multiplicative gates on its state). The
        driver's plan reads it (on a CPU a gated cell's projection runs inside the
        loop, where that measured faster), and the study's clipping section takes the
        ungated cells.
      gates: ``gates(params, carry, xp_t) -> dict`` of gate activations ``[*batch, H]``
        for one step (e.g. ``"forget"``), for :func:`rnnjax.diagnostics.gate_stats`;
        ``recur`` is built on it, so diagnostics read the very same values.
      fused: a :class:`FusedRecurrence`, the step split at its one recurrent matmul, for
        the fused backward (:mod:`rnnjax.fused`).
      recurrent_scale: ``recurrent_scale(params, g) -> params`` with the recurrence
        scaled by ``g`` (``W_h -> g W_h`` for the classic cells): what "recurrent scale
        g" means for this cell in the study's sweep.
      linear: a :class:`LinearRecurrence`, when the recurrence is linear in the state,
        ``h_t = a_t * h_{t-1} + b_t`` elementwise: the driver may then run it as a
        parallel prefix scan (``jax.lax.associative_scan``).
      prepare: ``prepare(params) -> weights``, for a cell whose step reads weights
        derived from its trainable params (expRNN's ``W_h = expm(A)``): the driver
        calls it once per call, before the loop, inside whatever is differentiated,
        and passes ``weights`` to ``project``, ``recur``, ``gates``, ``fused`` and
        ``linear`` (so the backward maps ``dL/dW_h``, summed over the steps, back
        through ``prepare`` once, not once a step). ``init`` returns the trainable
        params; ``None`` (every other cell): the step reads the params themselves.

    ``step(params, carry, x) == recur(w, carry, project(w, x))`` with
    ``w = prepared(params)`` is derived here once, never written per cell.
    """

    name: str
    hidden_size: int
    init: Callable[..., PyTree]
    initial_carry: Callable[..., PyTree]
    project: Callable[..., PyTree]
    recur: Callable[..., tuple[PyTree, Array]]
    output: Callable[[PyTree], Array]
    gated: bool = False
    gates: Callable[..., dict] | None = None
    fused: FusedRecurrence | None = None
    recurrent_scale: Callable[[PyTree, Any], PyTree] | None = None
    linear: LinearRecurrence | None = None
    prepare: Callable[[PyTree], PyTree] | None = None

    def prepared(self, params: PyTree) -> PyTree:
        """What the step reads: ``prepare(params)``, or ``params`` for a cell without
        ``prepare``."""
        return params if self.prepare is None else self.prepare(params)

    def step(self, params: PyTree, carry: PyTree, x: Array) -> tuple[PyTree, Array]:
        """One full time step from the trainable params:
        ``recur(w, carry, project(w, x))`` with ``w = prepared(params)`` (a cell with
        ``prepare`` derives its weights at every call: a driver loop prepares once and
        calls ``recur``)."""
        weights = self.prepared(params)
        return self.recur(weights, carry, self.project(weights, x))


class FusedRecurrence(NamedTuple):
    """A cell's step split at its one recurrent matmul, declared for the fused backward.

    ``z_t = output(carry) @ params.<weight>`` is the only place the step reads that
    weight; :mod:`rnnjax.fused` computes ``z_t`` itself, keeps only ``dh W^T`` in the
    backward loop and forms ``dW`` as one matmul after it (as cuDNN does).

    Attributes:
      recur_z: ``recur_z(params, carry, xp_t, z_t) -> (carry, y)``: ``recur`` given
        ``z_t``. It may read only the params fields named in ``reads``.
      weight: the params field holding the recurrent weight ``[H, K]`` (``"w_h"``).
      reads: the other params fields ``recur_z`` reads (the GRU's ``b_h``); their
        gradients are summed over the steps.
      vjp: ``recur_z``'s step written out forward and backward (:class:`StepVJP`), or
        ``None``: then each backward step differentiates ``recur_z`` again.
    """

    recur_z: Callable[..., tuple[PyTree, Array]]
    weight: str = "w_h"
    reads: tuple[str, ...] = ()
    vjp: StepVJP | None = None


class LinearRecurrence(NamedTuple):
    """A recurrence linear in the state, declared for the parallel (associative) scan.

    The scan state after step ``t`` is ``s_t = a_t * s_{t-1} + b_t``, elementwise for
    every leaf, and the step's output is ``output(carry_t)``. The scan state is the
    carry itself, or what ``to_state`` makes of it (the LRU's complex state from the
    carry's real and imaginary parts).

    Attributes:
      coefficients: ``coefficients(params, xp) -> (a, b)``: for the projected inputs of
        every step at once (``xp`` from ``project``, leading axes ``[T, *batch]``), the
        pytrees ``a`` and ``b`` with the scan state's structure, each leaf ``[T,
        *batch, ...]`` (real or complex). ``recur`` must equal this update; tests hold
        the two against each other.
      to_state: ``to_state(carry) -> state`` (``None``: the carry is the state).
      from_state: ``from_state(state) -> carry``, the inverse of ``to_state``.
      log_coefficients: ``log_coefficients(params, xp) -> (log_a, log_b)`` for a
        recurrence whose ``a`` and ``b`` are positive (minGRU, minLSTM): the scan then
        runs in log space, ``log s_t = logaddexp(log a_t + log s_{t-1}, log b_t)``, as
        the paper does for numerical stability (the initial state's term, of any sign,
        is added as ``exp(sum log a) * s_0``). ``None``: the scan runs on ``a`` and
        ``b`` themselves.
    """

    coefficients: Callable[..., tuple[PyTree, PyTree]]
    to_state: Callable[[PyTree], PyTree] | None = None
    from_state: Callable[[PyTree], PyTree] | None = None
    log_coefficients: Callable[..., tuple[PyTree, PyTree]] | None = None


class StepVJP(NamedTuple):
    """``recur_z`` with its backward written out, as cuDNN does for its cells.

    Attributes:
      fwd: ``fwd(params, carry, xp_t, z_t) -> ((carry', y), saved)``: ``recur_z``'s
        result and what ``bwd`` reads (e.g. the gate activations), a pytree of arrays.
      bwd: ``bwd(params, carry, saved, y, d_carry', d_y) -> (d_carry, d_z_t, extra)``:
        the cotangents of ``recur_z``'s inputs that the backward loop needs at each
        step; ``y`` is the step's output, which the driver keeps anyway (zeros at a
        padded step, where the cotangents are zeros too). ``d_carry`` leaves out the
        path through ``z_t`` (the driver adds ``d_z_t W_h^T``); ``extra`` is whatever
        else ``finish`` needs (or ``None``).
      finish: ``finish(params, xs, d_z, extra) -> (d_params, d_xs)``, after the loop,
        over every step at once (``xs [T, *batch, I]``, ``d_z`` and ``extra`` stacked
        the same way): the gradients of every parameter but the recurrent weight (zero
        there; the driver forms it) and of ``xs``, through ``project`` and
        ``recur_z``.

    Tested against ``jax.vjp(recur_z, ...)``.
    """

    fwd: Callable[..., tuple[tuple[PyTree, Array], PyTree]]
    bwd: Callable[..., tuple[PyTree, Array, PyTree]]
    finish: Callable[..., tuple[PyTree, Array]]


class TorchMapping(NamedTuple):
    """How a catalogue cell maps onto one layer of a PyTorch module, weight for weight.

    Attributes:
      module: the ``torch.nn`` class name (``"LSTM"``, ``"GRU"``, ``"RNN"``).
      options: the module's constructor options that make it this cell
        (``{"nonlinearity": "relu"}``); a module matches when its attributes equal them.
      to_params: ``to_params(w) -> params``: PyTorch's weights for one layer and
        direction (``w`` a dict of NumPy arrays named ``weight_ih``, ``weight_hh``,
        ``bias_ih``, ``bias_hh``) as the cell's params.
      to_torch: ``to_torch(params) -> w``, the inverse, for params or their gradients
        (a bias PyTorch splits in two that the cell keeps summed gets the same
        gradient in both halves).
    """

    module: str
    options: dict[str, Any]
    to_params: Callable[[dict], PyTree]
    to_torch: Callable[[PyTree], dict]


class Entry(NamedTuple):
    """One cell family in the catalogue.

    Attributes:
      name: the canonical name, e.g. ``"lstm"``; equals ``make(H).name``.
      make: ``make(hidden_size, **options) -> Cell``.
      reference: ``reference(xp, params, carry, x) -> (carry, y)``: one step written
        from the paper's equations in the array namespace ``xp`` (NumPy in float64 for
        outputs; ``jax.numpy`` in float64 for reference gradients), apart from the
        cell's JAX code. ``params`` and ``carry`` have the cell's pytree structure.
      matmul_flops: ``matmul_flops(input_size, hidden_size)``: the multiply-adds of one
        step's matmuls, times two, per example (``2 G H (I + H)`` for a cell of ``G``
        gates), forward only; the benchmark's FLOP rates read it.
      torch: a :class:`TorchMapping` where PyTorch has the cell, else ``None``.
      family: the mechanism it stands for in the study's tables (``"classic"``,
        ``"gated"``, ...).
      summary: one line for ``--help`` texts and reports.
    """

    name: str
    make: Callable[..., Cell]
    reference: Callable[..., tuple[PyTree, Any]]
    matmul_flops: Callable[[int, int], int]
    torch: TorchMapping | None = None
    family: str = ""
    summary: str = ""


def summed_bias_mapping(module: str, options: dict, params_class) -> TorchMapping:
    """The :class:`TorchMapping` of a cell whose params are ``(w_x, w_h, b)`` with
    ``w_x = weight_ih^T``, ``w_h = weight_hh^T`` and one bias ``b = bias_ih + bias_hh``
    (the Elman RNN and the LSTM: PyTorch's two biases only ever appear summed)."""
    return TorchMapping(
        module=module,
        options=options,
        to_params=lambda w: params_class(
            w["weight_ih"].T, w["weight_hh"].T, w["bias_ih"] + w["bias_hh"]
        ),
        to_torch=lambda p: {
            "weight_ih": p.w_x.T,
            "weight_hh": p.w_h.T,
            "bias_ih": p.b,
            "bias_hh": p.b,
        },
    )


def sum_over_batch(a: Array) -> Array:
    """``a [..., F]`` summed over every leading dimension: ``[F]``."""
    return a.reshape(-1, a.shape[-1]).sum(axis=0)


def dense_backward(xs: Array, w: Array, d_out: Array) -> tuple[Array, Array]:
    """``(d_w, d_xs)`` of ``xs @ w`` given ``d_out``, each as one 2-D matmul over every
    leading dimension (batched over them, XLA:CPU transposed the whole cotangent)."""
    d2 = d_out.reshape(-1, d_out.shape[-1])
    d_xs = (d2 @ w.T.astype(d2.dtype)).reshape(xs.shape).astype(xs.dtype)
    return dense_weight_grad(xs, d_out, w.dtype), d_xs


def additive_finish(params, xs: Array, d_z: Array, extra):
    """``StepVJP.finish`` for a cell whose ``recur_z`` adds ``z`` to the projection
    ``xs @ w_x + b`` (the LSTM, the Elman RNN): both get the same cotangent ``d_z``.
    ``params`` has fields ``w_x``, ``w_h``, ``b``."""
    d_w_x, d_xs = dense_backward(xs, params.w_x, d_z)
    d_b = sum_over_batch(d_z).astype(params.b.dtype)
    return params._replace(w_x=d_w_x, w_h=jnp.zeros_like(params.w_h), b=d_b), d_xs


def scale_fields(*names: str) -> Callable:
    """A :attr:`Cell.recurrent_scale`: ``(params, g) -> params`` with each weight named
    in ``names`` multiplied by ``g`` (in its own dtype), the other fields as they were."""

    def scale(params, g):
        return params._replace(
            **{n: jnp.asarray(g, getattr(params, n).dtype) * getattr(params, n) for n in names}
        )

    return scale


# The classic cells' recurrent scale: ``W_h -> g W_h``.
scale_w_h = scale_fields("w_h")


def dense_weight_grad(xs: Array, d_out: Array, dtype) -> Array:
    """``d_w`` of ``xs @ w`` given ``d_out``: ``xs^T d_out`` over every leading dimension,
    as one 2-D matmul, in ``dtype``."""
    x2 = xs.reshape(-1, xs.shape[-1]).astype(d_out.dtype)
    return (x2.T @ d_out.reshape(-1, d_out.shape[-1])).astype(dtype)


def gate_init(
    init_fn: Initializer, key: Array, rows: int, hidden_size: int, num_gates: int, dtype
) -> Array:
    """Initialise a ``[rows, G*H]`` kernel one ``[rows, H]`` gate block at a time.

    Per-gate initialisation keeps each gate's block orthogonal (or lecun-scaled) on its
    own, as Flax's per-gate ``Dense`` layers do, rather than one ``[rows, G*H]`` matrix.
    """
    keys = jax.random.split(key, num_gates)
    blocks = [initialize(init_fn, k, (rows, hidden_size), dtype) for k in keys]
    return jnp.concatenate(blocks, axis=-1)


def initialize(init_fn: Initializer, key: Array, shape: tuple[int, ...], dtype) -> Array:
    """``init_fn(key, shape, dtype)``, computed in float32 for sub-32-bit float dtypes:
    the orthogonal initialiser's QR has no bfloat16 kernel on CPU."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
        return init_fn(key, shape, jnp.float32).astype(dtype)
    return init_fn(key, shape, dtype)


def check_input(x: Array, input_size: int, arg: str = "x") -> None:
    """Raise a clear ``ValueError`` if ``x`` is not ``[..., input_size]`` floats."""
    shape = jnp.shape(x)
    if len(shape) < 1:
        raise ValueError(f"{arg} must have shape [*batch, {input_size}]; got a scalar.")
    if shape[-1] != input_size:
        raise ValueError(
            f"{arg} must have feature size {input_size} (shape [..., {input_size}]) "
            f"to match the cell's params; got shape {tuple(shape)}."
        )
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(
            f"{arg} must be a floating-point array; got dtype {jnp.result_type(x)} "
            "(embed or one-hot integer tokens first)."
        )


def check_carry(carry: PyTree, expected: PyTree, arg: str = "carry") -> None:
    """Raise a clear ``ValueError`` unless ``carry`` has ``expected``'s structure and shapes."""
    if jax.tree.structure(carry) != jax.tree.structure(expected):
        raise ValueError(
            f"{arg} does not match the cell: expected a pytree like "
            f"{_describe(expected)}; got {_describe(carry)}."
        )
    for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(expected)):
        if jnp.shape(got) != jnp.shape(want):
            raise ValueError(
                f"{arg} does not match the cell and input: expected shapes "
                f"{_describe(expected)}; got {_describe(carry)}."
            )
    # The cells cast their new state to the carry's dtype: an integer carry would
    # silently round every state (and output) to integers.
    dtypes = jax.tree.map(lambda a: str(jnp.result_type(a)), carry)
    if not all(jnp.issubdtype(jnp.result_type(a), jnp.inexact) for a in jax.tree.leaves(carry)):
        want = jax.tree.map(lambda a: str(jnp.result_type(a)), expected)
        raise ValueError(
            f"{arg} must be floating point, like the cell's state (expected dtypes "
            f"{want}); got {dtypes}."
        )


def check_params(cell, params: PyTree, expected: PyTree, *, shapes: bool) -> None:
    """Raise a clear ``ValueError`` unless ``params`` has the structure (and, with
    ``shapes``, the leaf shapes) of ``expected``, what ``cell.init`` makes."""
    if jax.tree.structure(params) != jax.tree.structure(expected):
        raise ValueError(
            f"params do not match the {cell.name} cell: expected a pytree like "
            f"{_describe(expected)}; got {_describe(params)}."
        )
    if shapes and any(
        jnp.shape(g) != jnp.shape(w)
        for g, w in zip(jax.tree.leaves(params), jax.tree.leaves(expected))
    ):
        raise ValueError(
            f"params do not match the {cell.name} cell (hidden size {cell.hidden_size}) "
            f"and the input size: expected shapes {_describe(expected)}; got "
            f"{_describe(params)}."
        )


def _describe(tree: PyTree) -> str:
    shapes = jax.tree.map(lambda a: tuple(jnp.shape(a)), tree)
    return repr(shapes)


def resolve_batch_shape(batch_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(batch_shape, int):
        return (batch_shape,)
    return tuple(batch_shape)


def compute_dtype(dtype, *arrays):
    """The dtype a cell computes in: ``dtype`` if given, else the promotion of ``arrays``."""
    if dtype is not None:
        return jnp.dtype(dtype)
    return jnp.result_type(*arrays)
