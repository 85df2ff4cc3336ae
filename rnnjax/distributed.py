"""Many devices on JAX's own runtime: a mesh, shardings, and a train step placed on them.

No communication code lives here. A ``jax.sharding.Mesh`` with one axis, ``"data"``,
spans the devices; :func:`parallel_step` jit-compiles an unchanged train step with
input and output shardings and XLA inserts the collectives (the all-reduce of the
gradients when the batch is split). Two layouts:

* ``"data"``: every device holds the whole train state (replicated) and a slice of
  the batch. The global batch is the user's number; the result is the one-device
  result up to the order of floating-point sums.
* ``"sharded"``: the batch split as in ``"data"``, and every state leaf split along
  one of its dimensions (the largest the device count divides; leaves with none stay
  replicated), so each device stores about ``1/N`` of the parameters and optimizer
  state (ZeRO/FSDP style). XLA gathers the parameters where the step needs them. The
  numbers are those of ``"data"``; the price is the gathers, the gain memory.
* ``"seeds"``: for states with a leading seed axis (``rnnjax.train.vmap_seeds``),
  each device holds whole seeds: their state and their batches. Nothing is
  communicated (but for the per-step metrics when the devices span processes);
  ``S`` seeds on ``S`` devices run side by side.

Across processes (:func:`initialize`) the mesh spans every process's devices; each
process feeds the same host batch and keeps the part its devices hold, and
:func:`to_host` gathers a result whichever process holds it.

The same code runs on host CPUs (``XLA_FLAGS=--xla_force_host_platform_device_count=N``
makes ``N`` of them, how the tests prove it), GPUs and TPUs.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
LAYOUTS = ("data", "sharded", "seeds")


def data_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``"data"`` over ``devices``: a list, a count (the first
    ``n`` of ``jax.devices()``), or ``None`` for all of them."""
    available = jax.devices()
    if devices is None:
        chosen = available
    elif isinstance(devices, (bool, float)) or isinstance(devices, (str, bytes)):
        raise ValueError(f"devices must be a count, a list of devices or None; got {devices!r}.")
    elif isinstance(devices, numbers.Integral):
        devices = int(devices)
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices must lie in [1, {len(available)}] (the devices JAX sees: "
                f"{available[0].platform} x {len(available)}); got {devices}."
            )
        chosen = available[:devices]
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("devices must not be empty.")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"devices must be distinct; got {chosen}.")
    return Mesh(np.array(chosen), (DATA,))


def _spec(axis: int) -> P:
    return P(*([None] * axis), DATA)


def spans_processes(mesh: Mesh) -> bool:
    """Whether ``mesh`` holds devices of more than one process."""
    return len({d.process_index for d in mesh.devices.flat}) > 1


def _to_numpy_if_global(tree: Any, mesh: Mesh) -> Any:
    # A process can place a host value onto devices of other processes (each keeps its
    # part) but not a value committed to one of its own devices: go through NumPy.
    if not spans_processes(mesh):
        return tree
    return jax.tree.map(
        lambda x: np.asarray(x) if isinstance(x, jax.Array) and x.is_fully_addressable else x,
        tree,
    )


def shard(tree: Any, mesh: Mesh, axis: int, *, name: str = "value") -> Any:
    """Place ``tree`` with dimension ``axis`` (counted from 0) of every leaf split over
    the mesh; ``name`` names ``tree`` in errors.

    Raises:
      ValueError: a negative ``axis``, or a leaf with no dimension ``axis`` or one whose
        size is not divisible by the number of devices (naming the leaf, its shape and
        the device count).
    """
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or axis < 0:
        raise ValueError(f"the axis to split {name} along must be an int >= 0; got {axis!r}.")
    n = mesh.size
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = np.shape(leaf)
        if len(shape) <= axis or shape[axis] % n:
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} has shape {shape}: dimension "
                f"{axis} must exist and be divisible by the {n} devices of the mesh."
            )
    return jax.device_put(_to_numpy_if_global(tree, mesh), NamedSharding(mesh, _spec(axis)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a full copy of ``tree`` on every device of the mesh."""
    return jax.device_put(_to_numpy_if_global(tree, mesh), NamedSharding(mesh, P()))


def _largest_divisible_axis(shape: tuple[int, ...], n: int) -> int | None:
    axes = [a for a, size in enumerate(shape) if size % n == 0 and size >= n]
    return max(axes, key=lambda a: (shape[a], -a)) if axes else None


def state_shardings(state: Any, mesh: Mesh, layout: str = "data") -> Any:
    """The sharding of every leaf of ``state`` in ``layout`` (a tree like ``state``)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}.")
    if layout == "seeds":
        for path, leaf in jax.tree_util.tree_leaves_with_path(state):
            shape = np.shape(leaf)
            if not shape or shape[0] % mesh.size:
                raise ValueError(
                    f"{jax.tree_util.keystr(path) or 'value'} has shape {shape}: dimension "
                    f"0 (seeds) must exist and be divisible by the {mesh.size} devices."
                )
        return jax.tree.map(lambda _: NamedSharding(mesh, _spec(0)), state)
    if layout == "data":
        return jax.tree.map(lambda _: NamedSharding(mesh, P()), state)

    def one(leaf):
        axis = _largest_divisible_axis(np.shape(leaf), mesh.size)
        return NamedSharding(mesh, P() if axis is None else _spec(axis))

    return jax.tree.map(one, state)


def parallel_step(
    train_step: Callable[[Any, Any], tuple[Any, Any]],
    mesh: Mesh,
    layout: str = "data",
    *,
    batch_axis: int = 0,
) -> Callable[[Any, Any], tuple[Any, Any]]:
    """``train_step(state, batch) -> (state, metrics)`` jit-compiled onto ``mesh``.

    Args:
      train_step: the pure step (from :func:`rnnjax.train.make_train_step`, possibly
        under :func:`~rnnjax.train.vmap_seeds`); not yet jitted.
      mesh: from :func:`data_mesh`.
      layout: ``"data"`` (batch split along ``batch_axis``, state replicated),
        ``"sharded"`` (batch split, every state leaf split along its largest divisible
        dimension) or ``"seeds"`` (state and batch split along their leading seed axis).
      batch_axis: the batch dimension of every batch leaf for ``"data"`` and
        ``"sharded"`` (1 when the batch has a leading seed axis).

    Returns:
      ``step(state, batch)``; it places its inputs (a host batch is split as it is
      copied) and returns the state with the layout's sharding, ready for the next step.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}.")
    if layout == "seeds":
        batch_axis = 0
    batch_sh = NamedSharding(mesh, _spec(batch_axis))
    # Metrics are a few numbers per step: whole on every device, so every process can
    # read them, except in the seeds layout on one process (nothing communicated).
    seeds_local = layout == "seeds" and not spans_processes(mesh)
    metrics_sh = NamedSharding(mesh, _spec(0) if seeds_local else P())
    compiled = {}

    def step(state, batch):
        treedef = jax.tree.structure(state)
        if treedef not in compiled:
            state_sh = state_shardings(state, mesh, layout)
            jitted = jax.jit(
                train_step,
                in_shardings=(state_sh, batch_sh),
                out_shardings=(state_sh, metrics_sh),
            )
            compiled[treedef] = (jitted, jax.tree.leaves(state_sh))
        jitted, leaf_sh = compiled[treedef]
        # The state comes back from the last step already placed: move it only when it
        # is not (the first step, or a state restored on another device count).
        placed = zip(jax.tree.leaves(state), leaf_sh)
        if any(getattr(x, "sharding", None) != sh for x, sh in placed):
            state = place_state(state, mesh, layout)
        batch = shard(batch, mesh, batch_axis, name=f"batch (split along batch_axis={batch_axis})")
        if layout == "seeds":
            return jitted(state, batch)
        # Under the mesh, rnnjax.scan runs its loop device by device on the batch
        # slices (shard_map), so the weights' gradient is summed once, not per step.
        with jax.set_mesh(mesh):
            return jitted(state, batch)

    return step


def place_state(state: Any, mesh: Mesh, layout: str = "data") -> Any:
    """Put a train state where :func:`parallel_step` expects it (e.g. after init or a
    restore onto another number of devices)."""
    return jax.device_put(_to_numpy_if_global(state, mesh), state_shardings(state, mesh, layout))


def to_host(tree: Any) -> Any:
    """Every leaf as a NumPy array holding its global value, wherever it lives.

    A leaf spread over other processes' devices is gathered (a collective: every
    process must call this in the same order, as they do running the same script).
    """
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


def is_primary() -> bool:
    """Whether this is process 0, the one that writes logs, reports and plots."""
    return jax.process_index() == 0


def initialize(env: Mapping[str, str] | None = None) -> bool:
    """Join a multi-process run with ``jax.distributed.initialize``, from the environment.

    * ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and
      ``JAX_PROCESS_ID``: passed as they are (any launcher, or by hand).
    * else a SLURM job step with more than one task, or an Open MPI launch: JAX's own
      cluster detection fills in everything.
    * else nothing happens: one process.

    Call it before any other JAX call. Returns whether a multi-process run was joined.
    """
    env = os.environ if env is None else env
    address = env.get("JAX_COORDINATOR_ADDRESS")
    if address:
        missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in env]
        if missing:
            raise ValueError(
                f"JAX_COORDINATOR_ADDRESS is set ({address!r}) but {missing} are not; "
                "set all three, or none."
            )
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
        return True
    if int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1"))) > 1 or (
        "OMPI_COMM_WORLD_SIZE" in env and int(env["OMPI_COMM_WORLD_SIZE"]) > 1
    ):
        jax.distributed.initialize()
        return True
    return False
